"""DeepFool (L2, multi-class) with SuperDeepFool's projection rounds: a second, independent
method for the free minimal distance, to check `GreedyProjectedPGD` against."""

from __future__ import annotations

import time

import torch
from torch import nn

from simulator.attacks.greedy_pgd import AttackResult, as_batch, refine_by_bisection


# Classes DeepFool linearises per step (the most likely ones): the DeepFool paper's ImageNet setting
# and foolbox's default.
DEEPFOOL_CANDIDATES = 10


class DeepFoolL2:
    r"""Minimal free L2 perturbation by iterative linearisation, to check `GreedyProjectedPGD`.

    Multi-class DeepFool after Moosavi-Dezfooli, Fawzi and Frossard, "DeepFool: a simple and
    accurate method to fool deep neural networks" (CVPR 2016, arXiv 1511.04599): at the current
    point, linearise every class margin z_c - z_y and jump (times 1 + overshoot) to the nearest
    linearised boundary, until the label flips; then the same bisection as the PGD finds the
    boundary on the segment [x, x + delta]. For a linear classifier that is exact in one step.

    DeepFool stops at *a* boundary point, often not the nearest one when the boundary curves.
    So, after SuperDeepFool (Abdollahpoorrostam, Abroshan and Moosavi-Dezfooli, "Revisiting
    DeepFool: generalization and improvement", 2023), each of `projection_rounds` rounds
    restarts DeepFool from the foot of x on the boundary's tangent plane at the point found
    (x + (delta.nu) nu, nu the boundary's unit normal there) and keeps the shorter result. At
    a local minimum of the distance delta is parallel to nu and the rounds change nothing.
    Rounds converge within about three on the benchmark scenes; ten is a safe default.

    Parameters
    ----------
    model : nn.Module
        (N, n) -> logits (N, C).
    overshoot : float
        Relative overshoot of each step, to land across the linearised boundary (0.02, the paper's).
    max_iter : int
        Linearisation steps per DeepFool run before a sample is given up.
    refine_steps : int
        Bisection iterations on each found segment (20: relative error below 1e-6).
    projection_rounds : int
        Restarts from the foot of x on the boundary's tangent plane (0 = plain DeepFool).
    candidates : int or None
        Classes linearised at each step: the `candidates` most likely ones at x (the label among
        them), as the DeepFool paper did on ImageNet and foolbox does by default (10). One input
        gradient per class and step is what DeepFool costs: 1000 ImageNet classes would be 100x
        that. With at most `candidates` classes (every synthetic scene, the 10-class data sets)
        all are used and nothing changes. None: always all classes.
    """

    def __init__(self, model: nn.Module, overshoot: float = 0.02, max_iter: int = 50, refine_steps: int = 20,
                 projection_rounds: int = 10, candidates: int | None = DEEPFOOL_CANDIDATES):
        self.model = model
        self.candidates = candidates
        self.overshoot = float(overshoot)
        self.max_iter = int(max_iter)
        self.refine_steps = int(refine_steps)
        self.projection_rounds = int(projection_rounds)

    def __repr__(self) -> str:
        settings = {name: getattr(self, name) for name in ("overshoot", "max_iter", "refine_steps", "projection_rounds",
                                                           "candidates")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    def _run(self, x: torch.Tensor, label: torch.Tensor, start: torch.Tensor, cost: dict,
             classes: torch.Tensor | None = None):
        """DeepFool from x + start until the label flips. Returns (delta (N, n), success (N,), steps (N,)).
        classes: (N, c) the candidate classes per point (None: all)."""
        delta = start.clone()
        steps = torch.full((len(x),), self.max_iter, dtype=torch.long, device=x.device)
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for iteration in range(self.max_iter + 1):
            point = (x[active] + delta[active]).requires_grad_(iteration < self.max_iter)
            with torch.enable_grad():
                logits = self.model(point)
            cost["forward"] += len(active)
            flipped = logits.argmax(-1) != label[active]
            success[active[flipped]] = True
            steps[active[flipped]] = iteration
            if iteration == self.max_iter or flipped.all():
                break
            own = label[active][:, None]
            if classes is not None:  # only the candidates: their columns, and the label's position among them
                logits, own = logits.gather(1, classes[active]), (classes[active] == own).int().argmax(1, keepdim=True)
            margins = logits - logits.gather(1, own)  # z_c - z_y (m, C), < 0 for c != y
            # One input gradient per class: a loop over classes, never over points.
            gradients = torch.stack([torch.autograd.grad(margins[:, c].sum(), point, retain_graph=True)[0]
                                     for c in range(margins.shape[1])], dim=1)  # (m, C, n)
            cost["gradient"] += margins.numel()
            margins, gradients, moving = margins.detach()[~flipped], gradients[~flipped], active[~flipped]
            norms = gradients.norm(dim=2)
            distances = (margins.abs() / norms).scatter(1, own[~flipped], torch.inf)  # own class: no target
            nearest = distances.argmin(1)
            rows = torch.arange(len(moving), device=x.device)
            w, f, w_norm = gradients[rows, nearest], margins[rows, nearest], norms[rows, nearest]
            # Zero gradients towards every rival (a flat region) leave no direction: give the sample up.
            stuck = ~torch.isfinite(distances[rows, nearest])
            steps[moving[stuck]] = iteration
            # Just past the nearest point of the linearised boundary f + w.r = 0.
            step = (1 + self.overshoot) * (f.abs() / w_norm**2)[:, None] * w
            delta[moving[~stuck]] += step[~stuck]
            active = moving[~stuck]
        return delta, success, steps

    def _boundary_normal(self, point: torch.Tensor, label: torch.Tensor, rival: torch.Tensor) -> torch.Tensor:
        """Unit normal (N, n) of the boundary between `label` and `rival` at points near it."""
        point = point.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(point)
            margin = logits.gather(1, rival[:, None]) - logits.gather(1, label[:, None])
            (gradient,) = torch.autograd.grad(margin.sum(), point)
        return gradient / gradient.norm(dim=1, keepdim=True).clamp_min(torch.finfo(point.dtype).tiny)

    def __call__(self, x) -> AttackResult:
        """Attack points x (N, n); `steps` counts DeepFool iterations of the first run."""
        start = time.perf_counter()
        x = as_batch(self.model, x)
        with torch.no_grad():
            logits = self.model(x)
        label = logits.argmax(-1)
        classes = None
        if self.candidates is not None and logits.shape[1] > self.candidates:
            classes = logits.topk(self.candidates, dim=1).indices  # the label first
        cost = {"gradient": 0, "forward": len(x)}
        delta, success, steps = self._run(x, label, torch.zeros_like(x), cost, classes)
        delta, distance, adversarial_label, forwards = refine_by_bisection(self.model, x, delta, label, success,
                                                                           self.refine_steps)
        cost["forward"] += forwards
        for _ in range(self.projection_rounds):
            hit = success.nonzero()[:, 0]
            if len(hit) == 0:
                break
            normal = self._boundary_normal(x[hit] + delta[hit], label[hit], adversarial_label[hit])
            cost["gradient"] += len(hit)
            foot = (delta[hit] * normal).sum(1, keepdim=True) * normal
            retry, found, _ = self._run(x[hit], label[hit], foot, cost, None if classes is None else classes[hit])
            retry, retry_distance, retry_label, forwards = refine_by_bisection(
                self.model, x[hit], retry, label[hit], found, self.refine_steps)
            cost["forward"] += forwards
            better = found & (retry_distance < distance[hit])
            delta[hit[better]], distance[hit[better]] = retry[better], retry_distance[better]
            adversarial_label[hit[better]] = retry_label[better]
        return AttackResult(delta, distance, success, steps, label, adversarial_label, cost["gradient"],
                            cost["forward"], time.perf_counter() - start, "free", None)
