"""Minimal adversarial perturbations, free or confined to a subspace (DESIGN.md section 4, items 3-4).

The dimpled-manifold paper (Shamir et al., arXiv 2106.10151) compares the L2 norms of PGD
perturbations that are unconstrained, projected onto the data manifold, and projected off it;
the critique reproduced the same on/off gap with a random subspace of the same dimension. This
module runs all of them on flattened inputs of any dimension:

    project_onto, project_off            B B^T v and v - B B^T v, batched (reused for real images)
    random_subspace_bases                a fresh Haar-random k-dim subspace per point, seeded
    coordinate_subset_bases              k random input coordinates per point (the critique's control)
    GreedyProjectedPGD                   the attack; one class, torchattacks style
    DeepFoolL2                           an independent minimal-distance method for `free`

Everything works on whatever device the inputs and the model are on, and never clamps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MODES = ("free", "on", "off", "random_on", "random_off", "coordinate_on", "coordinate_off")
LOSSES = ("margin", "ce")

# A projected gradient this much smaller than the full gradient means the subspace holds no
# descent direction (e.g. a tangent space orthogonal to the gradient): float32 round-off of an
# exact zero sits around 1e-7 relative, so anything below counts as "cannot move here".
NO_MOVE_RTOL = 1e-6

# Salts so that the random-subspace and coordinate-subset streams never share draws.
_RANDOM_SUBSPACE, _COORDINATE_SUBSET = 1, 2


# --------------------------------------------------------------------------- projections


def project_onto(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """B B^T v for orthonormal bases. v (N, n); basis (N, n, k) or (n, k) shared -> (N, n)."""
    if basis.dim() == 2:
        return (v @ basis) @ basis.T
    coefficients = torch.einsum("bnk,bn->bk", basis, v)
    return torch.einsum("bnk,bk->bn", basis, coefficients)


def project_off(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """v - B B^T v: the component orthogonal to span(B). Shapes as in `project_onto`."""
    return v - project_onto(v, basis)


def _point_rng(seed: int, salt: int, index: int) -> np.random.Generator:
    # Point i's stream depends on (seed, i) only, so it is the same however many points are drawn.
    return np.random.default_rng([int(seed), salt, int(index)])


def random_subspace_bases(n_points: int, ambient_dim: int, dim: int, seed: int,
                          device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                          first_index: int = 0, chunk: int = 256) -> torch.Tensor:
    """Orthonormal bases (n_points, n, k) of independent Haar-random k-dim subspaces of R^n.

    Point i (counting from `first_index`) gets QR of its own seeded Gaussian (n, k) matrix, with
    signs fixed so that diag(R) > 0 (then span and basis are Haar-distributed and do not depend
    on LAPACK's sign choice). QR runs in float64 in chunks, then the bases are cast to `dtype`.
    """
    if not 1 <= dim <= ambient_dim:
        raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
    out = torch.empty(n_points, ambient_dim, dim, dtype=dtype, device=device)
    for start in range(0, n_points, chunk):
        stop = min(start + chunk, n_points)
        gaussian = np.stack([_point_rng(seed, _RANDOM_SUBSPACE, first_index + i).standard_normal((ambient_dim, dim))
                             for i in range(start, stop)])
        q, r = torch.linalg.qr(torch.from_numpy(gaussian))
        signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(q.dtype)
        out[start:stop] = (q * signs[:, None, :]).to(device=out.device, dtype=dtype)
    return out


def coordinate_subset_bases(n_points: int, ambient_dim: int, dim: int, seed: int,
                            device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                            first_index: int = 0) -> torch.Tensor:
    """One-hot bases (n_points, n, k): k distinct random input coordinates per point, seeded per point."""
    if not 1 <= dim <= ambient_dim:
        raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
    coordinates = np.stack([_point_rng(seed, _COORDINATE_SUBSET, first_index + i).choice(ambient_dim, dim, replace=False)
                            for i in range(n_points)]).reshape(n_points, dim)
    out = torch.zeros(n_points, ambient_dim, dim, dtype=dtype, device=device)
    out.scatter_(1, torch.as_tensor(coordinates, device=out.device)[:, None, :], 1.0)
    return out


def mode_bases(mode: str, x: torch.Tensor, tangent_bases=None, dim: int | None = None,
               seed: int = 0) -> torch.Tensor | None:
    """The basis (N, n, k) whose span (`*_on`, `on`) or complement (`*_off`, `off`) a mode uses;
    None for `free`. `tangent_bases` (N, n, k) or (n, k) for on/off; `dim` (or the tangent bases'
    k) and `seed` for the random and coordinate modes."""
    n_points, ambient_dim = x.shape
    if mode == "free":
        return None
    if tangent_bases is not None:
        tangent_bases = torch.as_tensor(tangent_bases, dtype=x.dtype, device=x.device)
        if tangent_bases.dim() == 2:
            tangent_bases = tangent_bases.expand(n_points, *tangent_bases.shape)
        if tangent_bases.dim() != 3 or tangent_bases.shape[:2] != (n_points, ambient_dim):
            raise ValueError(f"tangent_bases: expected ({n_points}, {ambient_dim}, k) or ({ambient_dim}, k), "
                             f"got {tuple(tangent_bases.shape)}")
    if mode in ("on", "off"):
        if tangent_bases is None:
            raise ValueError(f"mode {mode!r} needs tangent_bases (N, n, k)")
        return tangent_bases
    dim = dim if dim is not None else (None if tangent_bases is None else tangent_bases.shape[-1])
    if dim is None:
        raise ValueError(f"mode {mode!r} needs a subspace dimension: pass dim= or tangent_bases")
    make = random_subspace_bases if mode.startswith("random") else coordinate_subset_bases
    return make(n_points, ambient_dim, dim, seed, device=x.device, dtype=x.dtype)


PROJECTIONS = {"free": None, "on": project_onto, "random_on": project_onto, "coordinate_on": project_onto,
               "off": project_off, "random_off": project_off, "coordinate_off": project_off}


# --------------------------------------------------------------------------- results


@dataclass
class AttackResult:
    """Per-sample outcome of an attack on N points in R^n.

    delta: (N, n) final perturbation (refined when bisection was on); distance: (N,) its L2 norm,
    NaN where no adversarial example was found; success, steps, original_label, adversarial_label:
    (N,); basis: (N, n, k) the subspace basis the mode used (its complement for `*_off` modes),
    None for `free`. gradient_evaluations counts per-sample input gradients (one per sample per
    backward pass), forward_evaluations per-sample forward passes.
    """

    delta: torch.Tensor
    distance: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    original_label: torch.Tensor
    adversarial_label: torch.Tensor
    gradient_evaluations: int
    forward_evaluations: int
    seconds: float
    mode: str
    basis: torch.Tensor | None = None

    def summary(self) -> dict:
        """Medians and means over the successful samples, success rate, cost."""
        success = self.success.cpu().numpy()
        found = self.distance.double().cpu().numpy()[success]
        steps = self.steps.cpu().numpy()[success]
        nothing = not success.any()  # keep NaN (not a numpy warning) when no sample flipped
        return {
            "mode": self.mode,
            "n_points": int(success.size),
            "success_rate": float(success.mean()) if success.size else math.nan,
            "median_distance": math.nan if nothing else float(np.median(found)),
            "mean_distance": math.nan if nothing else float(found.mean()),
            "median_steps": math.nan if nothing else float(np.median(steps)),
            "gradient_evaluations": self.gradient_evaluations,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- shared pieces


def _as_batch(model: nn.Module, x) -> torch.Tensor:
    """x as a (N, n) float tensor; numpy input goes to the model's device and dtype."""
    if not isinstance(x, torch.Tensor):
        parameter = next(model.parameters())
        x = torch.as_tensor(np.asarray(x), dtype=parameter.dtype, device=parameter.device)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"x: expected a float tensor (N, n) of flattened inputs, got {tuple(x.shape)} {x.dtype}")
    return x.detach()


@torch.no_grad()
def _bisect(model: nn.Module, x: torch.Tensor, direction: torch.Tensor, label: torch.Tensor, n_iter: int,
            low: torch.Tensor | None = None, high: torch.Tensor | None = None):
    """Bracket the label change on the rays x + t direction, t in [low, high] (default [0, 1]).

    Requires label(x + high direction) != label and keeps that invariant at the upper end, so
    the returned t still gives an adversarial point. Returns (t (N,), labels there (N,)).
    """
    low = torch.zeros(len(x), dtype=x.dtype, device=x.device) if low is None else low
    high = torch.ones(len(x), dtype=x.dtype, device=x.device) if high is None else high
    for _ in range(n_iter):
        middle = (low + high) / 2
        crossed = model(x + middle[:, None] * direction).argmax(-1) != label
        high = torch.where(crossed, middle, high)
        low = torch.where(crossed, low, middle)
    return high, model(x + high[:, None] * direction).argmax(-1)


def _finish(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, label: torch.Tensor, success: torch.Tensor,
            refine_steps: int):
    """Refine successful perturbations by bisection; NaN distances for the failures.

    Returns (delta (N, n), distance (N,), adversarial label (N,), forward evaluations used).
    """
    adversarial_label = label.clone()
    hit = success.nonzero()[:, 0]
    forwards = 0
    if len(hit):
        scale, adversarial_label[hit] = _bisect(model, x[hit], delta[hit], label[hit], refine_steps)
        delta[hit] *= scale[:, None]
        forwards = len(hit) * (refine_steps + 1)
    distance = torch.where(success, delta.norm(dim=1), torch.full_like(delta[:, 0], torch.nan))
    return delta, distance, adversarial_label, forwards


# --------------------------------------------------------------------------- the attack


class GreedyProjectedPGD:
    r"""Greedy projected L2 PGD: walk down the margin inside a subspace until the label flips.

    L2 PGD after Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks"
    (ICLR 2018, arXiv 1706.06083), with the on/off-manifold projections of Shamir, Melamed and
    BenShmuel, "The Dimpled Manifold Model of Adversarial Examples in Machine Learning"
    (arXiv 2106.10151), and the random-subspace control of its critique (a random k-dim
    subspace gives the same on/off gap, so compare against it before crediting the manifold).

    Per sample: y = label predicted at x; g = gradient of the loss; P g with the mode's
    projector (before normalising, so the step length is exactly `step_size`); step
    x <- x - step_size P g / ||P g||. The perturbation is a sum of vectors in range(P), so it
    stays in the subspace by construction. A sample stops the moment its label differs from
    y; only the still-active samples are evaluated at the next step. A sample whose projected
    gradient vanishes (||P g|| < 1e-6 ||g||) cannot move in its subspace: it is reported as
    "no adversarial found" (success False, distance NaN), as is one still unflipped after
    `max_steps`. Optionally the final distance is refined by bisection on [x, x + delta].

    The greedy path ends at *a* boundary point, not always the nearest: where the boundary
    curves, the chord is a little longer than the minimal distance (0.2-1% in median on the
    benchmark scenes). Each of `normal_rounds` rounds spends one more gradient, at the point
    found, and turns the ray direction towards the (projected) boundary normal there, keeping
    the turned ray when its label change comes sooner. At a local minimum of the distance the
    perturbation is parallel to that normal and nothing changes; the rays stay in the subspace.

    Parameters
    ----------
    model : nn.Module
        Maps (N, n) -> logits (N, C), sample by sample (eval mode: no batch statistics).
    mode : {"free", "on", "off", "random_on", "random_off", "coordinate_on", "coordinate_off"}
        `on`/`off`: the tangent space / its orthogonal complement (bases passed to the call);
        `random_*`: a fresh Haar-random k-dim subspace per point / its complement;
        `coordinate_*`: k random input coordinates per point / the others.
    step_size : float
        L2 length of one step; without refinement, distances overshoot by less than this.
    max_steps : int
        Steps before a sample is given up (its reach is max_steps * step_size).
    refine_steps : int
        Bisection iterations on the final segment (0 = off); each halves the overshoot.
    loss : {"margin", "ce"}
        "margin" descends f = z_y - max_{j != y} z_j (DESIGN.md's margin; its gradient stays
        informative far from the boundary); "ce" ascends the cross-entropy of y.
    dim : int or None
        k for the random and coordinate modes; None takes it from the tangent bases' shape.
    seed : int
        Seed of the random and coordinate subspaces (point i's subspace depends on (seed, i)).
    normal_rounds : int
        Rounds that move the found point towards the nearest boundary point (0 = the plain
        greedy walk; they need refine_steps > 0 to locate the boundary). Two bring the median
        to DeepFool's within 1e-4 relative on the benchmark scenes, for ~2% more gradients.
    """

    def __init__(self, model: nn.Module, mode: str = "free", step_size: float = 0.01, max_steps: int = 1000,
                 refine_steps: int = 10, loss: str = "margin", dim: int | None = None, seed: int = 0,
                 normal_rounds: int = 2):
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss: must be one of {LOSSES}, got {loss!r}")
        if not step_size > 0:
            raise ValueError(f"step_size: must be positive, got {step_size}")
        if int(max_steps) < 1 or int(refine_steps) < 0 or int(normal_rounds) < 0:
            raise ValueError(f"max_steps must be >= 1, refine_steps and normal_rounds >= 0; got "
                             f"{max_steps}, {refine_steps}, {normal_rounds}")
        if dim is not None and int(dim) < 1:
            raise ValueError(f"dim: must be a positive integer or None, got {dim}")
        self.model = model
        self.mode = mode
        self.step_size = float(step_size)
        self.max_steps = int(max_steps)
        self.refine_steps = int(refine_steps)
        self.loss = loss
        self.dim = None if dim is None else int(dim)
        self.seed = int(seed)
        self.normal_rounds = int(normal_rounds)

    def __repr__(self) -> str:
        settings = {name: getattr(self, name) for name in
                    ("mode", "step_size", "max_steps", "refine_steps", "loss", "dim", "seed", "normal_rounds")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    def subspace_bases(self, x: torch.Tensor, tangent_bases=None) -> torch.Tensor | None:
        """The basis (N, n, k) whose span (`*_on`) or complement (`*_off`, `off`) the mode uses."""
        return mode_bases(self.mode, x, tangent_bases, self.dim, self.seed)

    def _objective(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Per-sample quantity to *decrease* (N,)."""
        if self.loss == "ce":
            return -nn.functional.cross_entropy(logits, label, reduction="none")
        own = logits.gather(1, label[:, None])[:, 0]
        rival = logits.scatter(1, label[:, None], -torch.inf).amax(1)
        return own - rival

    def _align_with_normal(self, x, delta, distance, label, adversarial_label, success, basis, project):
        """One normal round (see the class docstring); updates delta, distance, labels in place.

        The ray direction u is turned towards the boundary normal nu at the point found,
        u' = normalize(u + eta (nu - u)), with eta = 1, 1/2, 1/4 tried in turn (eta = 1 can
        overshoot where the boundary curves); a direction is kept when the label has already
        changed at the current distance along it, and then its crossing is bisected.
        Returns (gradient evaluations, forward evaluations) spent.
        """
        hit = success.nonzero()[:, 0]
        if len(hit) == 0:
            return 0, 0
        point = (x[hit] + delta[hit]).requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(self._objective(self.model(point), label[hit]).sum(), point)
        gradient_evaluations, forwards = len(hit), 0
        projected = gradient if project is None else project(gradient, basis[hit])
        norm = projected.norm(dim=1, keepdim=True)
        usable = norm[:, 0] > NO_MOVE_RTOL * gradient.norm(dim=1)
        normal = -projected[usable] / norm[usable]  # downhill: towards the other side
        hit = hit[usable]
        current = distance[hit]
        ray = delta[hit] / current[:, None]
        for eta in (1.0, 0.5, 0.25):
            if len(hit) == 0:
                break
            turned = ray + eta * (normal - ray)
            turned = turned / turned.norm(dim=1, keepdim=True)
            with torch.no_grad():
                crossed = self.model(x[hit] + current[:, None] * turned).argmax(-1) != label[hit]
            forwards += len(hit)
            chosen = crossed.nonzero()[:, 0]
            if len(chosen) == 0:  # no turned ray crosses sooner; some models reject empty batches
                continue
            # Bisect from 0: improvements are small, so resolve to ~1e-6 of the distance.
            t, new_label = _bisect(self.model, x[hit[chosen]], turned[chosen], label[hit[chosen]],
                                   2 * self.refine_steps, high=current[chosen])
            forwards += len(chosen) * (2 * self.refine_steps + 1)
            better = t < current[chosen]
            done, t, new_label = hit[chosen[better]], t[better], new_label[better]
            delta[done] = t[:, None] * turned[chosen[better]]
            distance[done] = t
            adversarial_label[done] = new_label
            keep = torch.ones(len(hit), dtype=torch.bool, device=x.device)
            keep[chosen[better]] = False
            hit, normal, current, ray = hit[keep], normal[keep], current[keep], ray[keep]
        return gradient_evaluations, forwards

    def __call__(self, x, tangent_bases=None) -> AttackResult:
        """Attack points x (N, n); `tangent_bases` (N, n, k) or (n, k) for on/off (and to give k)."""
        start = time.perf_counter()
        x = _as_batch(self.model, x)
        basis = self.subspace_bases(x, tangent_bases)
        project = PROJECTIONS[self.mode]
        n_points = len(x)
        with torch.no_grad():
            label = self.model(x).argmax(-1)
        delta = torch.zeros_like(x)
        steps = torch.full((n_points,), self.max_steps, dtype=torch.long, device=x.device)
        success = torch.zeros(n_points, dtype=torch.bool, device=x.device)
        active = torch.arange(n_points, device=x.device)
        gradient_evaluations = forward_evaluations = 0

        for step in range(self.max_steps + 1):
            point = (x[active] + delta[active]).requires_grad_(step < self.max_steps)
            with torch.enable_grad():
                logits = self.model(point)
            forward_evaluations += len(active)
            flipped = logits.argmax(-1) != label[active]
            success[active[flipped]] = True
            steps[active[flipped]] = step
            moving = active[~flipped]
            if step == self.max_steps or len(moving) == 0:
                break
            objective = self._objective(logits, label[active])
            (gradient,) = torch.autograd.grad(objective[~flipped].sum(), point)
            gradient_evaluations += len(active)
            gradient = gradient[~flipped]
            projected = gradient if project is None else project(gradient, basis[moving])
            norm = projected.norm(dim=1)
            # No descent direction inside the subspace: stop instead of reporting a wrong distance.
            stuck = norm <= NO_MOVE_RTOL * gradient.norm(dim=1)
            steps[moving[stuck]] = step
            keep = ~stuck
            moving = moving[keep]
            delta[moving] -= self.step_size * projected[keep] / norm[keep, None]
            active = moving

        delta, distance, adversarial_label, refine_forwards = _finish(self.model, x, delta.detach(), label, success,
                                                                      self.refine_steps)
        forward_evaluations += refine_forwards
        for _ in range(self.normal_rounds if self.refine_steps else 0):
            gradients, forwards = self._align_with_normal(x, delta, distance, label, adversarial_label, success,
                                                          basis, project)
            gradient_evaluations += gradients
            forward_evaluations += forwards
        return AttackResult(delta, distance, success, steps, label, adversarial_label, gradient_evaluations,
                            forward_evaluations, time.perf_counter() - start, self.mode, basis)


# --------------------------------------------------------------------------- bounded attack


def bounded_budget(epsilon: float | None, steps: int, step_size: float | None, data_radius: float) -> dict:
    """The budget of a `BoundedProjectedPGD` with the scene defaults filled in (input units):
    epsilon defaults to 0.1 x the data radius, the step to 2.5 x epsilon / steps (Madry et al.'s
    rule of thumb: the walk can reach the sphere and still move along it)."""
    epsilon = epsilon or 0.1 * data_radius
    return {"epsilon": epsilon, "steps": steps, "step_size": step_size or 2.5 * epsilon / steps}


class BoundedProjectedPGD:
    r"""L2 PGD inside a ball of radius `epsilon`, confined to a mode's subspace.

    The fixed-budget attack of Madry et al. (arXiv 1706.06083), used for adversarial training
    and for the features-not-bugs relabelling (Ilyas et al., arXiv 1905.02175). Untargeted, it
    ascends the cross-entropy of `label`; targeted, it descends the cross-entropy of `target`.
    Each step moves `step_size` along the normalised projected gradient, then scales the
    perturbation back into the ball. It never stops early: unlike `GreedyProjectedPGD`, which
    looks for the *nearest* label change, the aim here is the worst (or most target-like)
    point within the budget. No random start, so results are deterministic.

    The model's parameter gradients are left untouched (only input gradients are taken), so
    the attack can run inside a training step.
    """

    def __init__(self, model: nn.Module, epsilon: float, steps: int = 10, step_size: float | None = None,
                 mode: str = "free", dim: int | None = None, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        if not epsilon > 0 or int(steps) < 1:
            raise ValueError(f"epsilon must be positive and steps >= 1; got {epsilon}, {steps}")
        self.model, self.mode, self.dim, self.seed = model, mode, dim, int(seed)
        self.epsilon, self.steps = float(epsilon), int(steps)
        self.step_size = float(bounded_budget(epsilon, steps, step_size, 0.0)["step_size"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, epsilon={self.epsilon:g}, steps={self.steps}, "
                f"step_size={self.step_size:g})")

    def __call__(self, x, label=None, target=None, tangent_bases=None) -> torch.Tensor:
        """The perturbation delta (N, n), ||delta|| <= epsilon, in the mode's subspace.

        Give `label` (untargeted: push away from it) or `target` (targeted: pull towards it).
        """
        if (label is None) == (target is None):
            raise ValueError("give exactly one of label= (untargeted) or target= (targeted)")
        x = _as_batch(self.model, x)
        basis = mode_bases(self.mode, x, tangent_bases, self.dim, self.seed)
        project = PROJECTIONS[self.mode]
        classes = torch.as_tensor(label if target is None else target, device=x.device).long()
        direction = 1.0 if target is None else -1.0  # ascend CE of the label / descend CE of the target
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            point = (x + delta).requires_grad_(True)
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(self.model(point), classes, reduction="sum")
                (gradient,) = torch.autograd.grad(loss, point)
            if project is not None:
                gradient = project(gradient, basis)
            norm = gradient.norm(dim=1, keepdim=True)
            delta = delta + direction * self.step_size * gradient / norm.clamp_min(1e-30)
            delta = delta * (self.epsilon / delta.norm(dim=1, keepdim=True).clamp_min(self.epsilon))
        return delta.detach()


# --------------------------------------------------------------------------- second method


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
    """

    def __init__(self, model: nn.Module, overshoot: float = 0.02, max_iter: int = 50, refine_steps: int = 20,
                 projection_rounds: int = 10):
        self.model = model
        self.overshoot = float(overshoot)
        self.max_iter = int(max_iter)
        self.refine_steps = int(refine_steps)
        self.projection_rounds = int(projection_rounds)

    def __repr__(self) -> str:
        settings = {name: getattr(self, name) for name in ("overshoot", "max_iter", "refine_steps", "projection_rounds")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    def _run(self, x: torch.Tensor, label: torch.Tensor, start: torch.Tensor, cost: dict):
        """DeepFool from x + start until the label flips. Returns (delta (N, n), success (N,), steps (N,))."""
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
            margins = logits - logits.gather(1, label[active][:, None])  # z_c - z_y (m, C), < 0 for c != y
            # One input gradient per class: a loop over classes, never over points.
            gradients = torch.stack([torch.autograd.grad(margins[:, c].sum(), point, retain_graph=True)[0]
                                     for c in range(margins.shape[1])], dim=1)  # (m, C, n)
            cost["gradient"] += margins.numel()
            margins, gradients, moving = margins.detach()[~flipped], gradients[~flipped], active[~flipped]
            norms = gradients.norm(dim=2)
            distances = (margins.abs() / norms).scatter(1, label[moving][:, None], torch.inf)  # own class: no target
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
        x = _as_batch(self.model, x)
        with torch.no_grad():
            label = self.model(x).argmax(-1)
        cost = {"gradient": 0, "forward": len(x)}
        delta, success, steps = self._run(x, label, torch.zeros_like(x), cost)
        delta, distance, adversarial_label, forwards = _finish(self.model, x, delta, label, success, self.refine_steps)
        cost["forward"] += forwards
        for _ in range(self.projection_rounds):
            hit = success.nonzero()[:, 0]
            if len(hit) == 0:
                break
            normal = self._boundary_normal(x[hit] + delta[hit], label[hit], adversarial_label[hit])
            cost["gradient"] += len(hit)
            foot = (delta[hit] * normal).sum(1, keepdim=True) * normal
            retry, found, _ = self._run(x[hit], label[hit], foot, cost)
            retry, retry_distance, retry_label, forwards = _finish(self.model, x[hit], retry, label[hit], found,
                                                                   self.refine_steps)
            cost["forward"] += forwards
            better = found & (retry_distance < distance[hit])
            delta[hit[better]], distance[hit[better]] = retry[better], retry_distance[better]
            adversarial_label[hit[better]] = retry_label[better]
        return AttackResult(delta, distance, success, steps, label, adversarial_label, cost["gradient"],
                            cost["forward"], time.perf_counter() - start, "free", None)
