"""Fixed-budget L2 PGD inside a subspace: the attack of adversarial training and relabelling."""

from __future__ import annotations

import torch
from torch import nn

from simulator.attacks.greedy_pgd import as_batch
from simulator.attacks.subspaces import PROJECTIONS, check_mode, mode_subspace


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
        check_mode(mode)
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
        x = as_batch(self.model, x)
        basis = mode_subspace(self.mode, x, tangent_bases, self.dim, self.seed)
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
