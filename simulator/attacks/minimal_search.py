"""Minimal adversarial distances as brackets: a verified upper bound and a certified lower bound
per point and subspace (DESIGN.md section 8).

For a point x, a mode's subspace S and the classifier, the quantity every ratio and MS rests on is

    d*(x, S) = min { ||delta|| : delta in S, label(x + delta) != label(x) }.

`MinimalDistanceSearch` returns [lower, upper] with lower <= d* <= upper:

- upper: the norm of a perturbation in S that a forward pass confirmed adversarial, the best of
  1. the greedy projected PGD walk (`GreedyProjectedPGD`, with its normal rounds);
  2. rays: for subspaces of dimension d <= 3 an exhaustive set of directions spread over the
     sphere of S, otherwise `starts` seeded random directions in S (turned downhill), each
     marched from the lower bound to the current upper bound and bisected at its first change;
  3. a boundary walk (`walk_to_nearest`) from the best rays and the PGD point, which moves each
     found point along the boundary until the perturbation is parallel to the boundary normal.
  None ("not found") when no ray and no walk changes the label within `reach`.
- lower: `certified_radius`: a radius within which no x + delta, delta in S, changes the label
  (linear-relaxation bounds of the network composed with the subspace map; 0 for models the
  bound does not handle, which the result says).

A point whose bracket is already tight after the PGD walk, (upper - lower) <= tolerance x upper,
skips the ray search; the others get up to `SEARCH_PASSES` passes, each marching between the
bounds as they stand, while a pass still shortens them. Every decision is per point, so a point's
bracket does not depend on which other points are searched with it. A point with no upper bound is "none within reach" when lower >= reach
(certified) and "unknown" otherwise: the two are never mixed up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from simulator.attacks.certify import certified_radius, network_layers
from simulator.attacks.greedy_pgd import GreedyProjectedPGD, as_batch
from simulator.attacks.ray_search import (
    first_crossing,
    margin,
    predicted_labels,
    sphere_directions,
    walk_to_nearest,
)
from simulator.attacks.operators import Subspace
from simulator.attacks.subspaces import PROJECTIONS, gaussian_directions, subspace_dim, subspace_frame

# Status of each point's bracket.
BRACKETED, NONE_WITHIN_REACH, UNKNOWN = "bracketed", "none within reach", "unknown"
# Exhaustive direction search: only for subspaces this small (the sphere is covered densely).
EXHAUSTIVE_MAX_DIM = 3
# Rays kept from a march for the boundary walk, per point (besides the PGD's point).
WALKED_RAYS = 4
# Ray-search passes at most (each on the points still open, while the previous one helped).
SEARCH_PASSES = 3
# Relative nudges tried when a point found adversarial in one batch is not in the final check
# (a forward pass can differ in the last bits with the batch's composition).
NUDGES = (1e-6, 1e-5, 1e-4, 1e-3)


@dataclass(frozen=True)
class SearchBudget:
    """How hard the search looks beyond the PGD walk (`measure.attacks.search` in a scene).

    directions: probes on the sphere for subspaces of dimension <= 3 (dimension 1 has two);
    starts: seeded random rays for larger subspaces (0: the PGD walk and its boundary walk only);
    march_steps: probes per ray between the lower and the upper bound (a one-dimensional
    subspace, with two rays, gets directions / 2 times as many, for the same cost);
    walk_rounds: boundary-walk rounds at most; bisect_steps: bisection halvings of each bracket;
    tolerance: relative bracket width at which a point counts as settled;
    certify: compute certified lower bounds (else every lower bound is 0).
    """

    directions: int = 256
    starts: int = 8
    march_steps: int = 16
    walk_rounds: int = 20
    bisect_steps: int = 24
    tolerance: float = 0.02
    certify: bool = True


@dataclass
class DistanceBrackets:
    """Per-point brackets of one mode at N points.

    lower (N,) certified; upper (N,) verified adversarial, NaN where none was found; delta (N, n)
    the perturbation achieving `upper` (zeros where none); label / adversarial_label (N,);
    basis: the mode's subspace operator (its span for `*_on`, its complement for `*_off`; None
    for free);
    certificate: None when lower bounds were computed, else why they are all 0.
    """

    mode: str
    reach: float
    lower: np.ndarray
    upper: np.ndarray
    delta: torch.Tensor
    label: torch.Tensor
    adversarial_label: torch.Tensor
    subspace_dim: int
    search: str  # "exhaustive" (d <= 3) or "random starts"
    gradient_evaluations: int
    forward_evaluations: int
    seconds: float
    basis: Subspace | None = None
    certificate: str | None = None
    greedy_upper: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the PGD walk's alone

    @property
    def status(self) -> np.ndarray:
        found = np.isfinite(self.upper)
        certified_none = ~found & (self.lower >= self.reach)
        return np.where(found, BRACKETED, np.where(certified_none, NONE_WITHIN_REACH, UNKNOWN))

    def summary(self, tolerance: float) -> dict:
        """Per-mode figures over *all* N points: each point's true distance lies in
        [lower, upper], with upper = +inf where none was found, so medians and means of the two
        ends bracket the median and mean of the true distances (None = unbounded). The gap
        figures are over the found points; `share_settled` counts found points whose bracket is
        within `tolerance` and points certified to have no boundary within reach."""
        found = np.isfinite(self.upper)
        upper = np.where(found, self.upper, np.inf)
        gap = self.relative_gap[found]
        status = self.status
        with np.errstate(invalid="ignore"):
            greedy = np.where(np.isnan(self.greedy_upper), np.inf, self.greedy_upper)
        return {
            "mode": self.mode,
            "n_points": int(len(upper)),
            "search": self.search,
            "success_rate": float(found.mean()),
            "share_none_within_reach": float(np.mean(status == NONE_WITHIN_REACH)),
            "share_unknown": float(np.mean(status == UNKNOWN)),
            "median_distance_counting_failures": _finite(np.median(upper)),
            "median_lower_bound": float(np.median(self.lower)),
            "mean_distance": _finite(upper.mean()),
            "mean_lower_bound": float(self.lower.mean()),
            "median_relative_gap": float(np.median(gap)) if gap.size else None,
            "share_settled": float(np.mean((found & (self.relative_gap <= tolerance)) | (status == NONE_WITHIN_REACH))),
            "median_greedy_distance": _finite(np.median(greedy)),
            "reach": self.reach,
            "certificate": self.certificate,
            "gradient_evaluations": self.gradient_evaluations,
            "forward_evaluations": self.forward_evaluations,
            "seconds": self.seconds,
        }

    @property
    def relative_gap(self) -> np.ndarray:
        """(upper - lower) / upper at found points, NaN elsewhere."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(self.upper), (self.upper - self.lower) / self.upper, np.nan)


class MinimalDistanceSearch:
    """Bracket d*(x, S) for every point: see the module docstring.

    `pgd`: the configured `GreedyProjectedPGD` of the mode (its mode, dim and seed define the
    subspaces); `reach`: the largest distance searched (the PGD's max_steps x step_size).
    """

    def __init__(self, pgd: GreedyProjectedPGD, budget: SearchBudget = SearchBudget(), reach: float | None = None):
        self.pgd = pgd
        self.budget = budget
        self.reach = float(reach if reach is not None else pgd.max_steps * pgd.step_size)

    @property
    def mode(self) -> str:
        return self.pgd.mode

    def __call__(self, x, tangent_bases=None) -> DistanceBrackets:
        start = time.perf_counter()
        model, budget = self.pgd.model, self.budget
        x = as_batch(model, x)
        greedy = self.pgd(x, tangent_bases)
        basis, label = greedy.basis, greedy.original_label
        n_points, ambient_dim = x.shape
        k = None if basis is None else basis.dim
        dim = ambient_dim if basis is None else subspace_dim(self.mode, k, ambient_dim)
        project = _row_projection(self.mode, basis)
        gradients, forwards = greedy.gradient_evaluations, greedy.forward_evaluations

        lower, certificate = self._lower_bounds(x, basis, label)
        delta = torch.where(greedy.success[:, None], greedy.delta, torch.zeros_like(x))
        upper = torch.where(greedy.success, greedy.distance, torch.full_like(greedy.distance, math.inf))
        lower_t = torch.as_tensor(lower, dtype=x.dtype, device=x.device)
        search = "exhaustive" if dim <= EXHAUSTIVE_MAX_DIM and ambient_dim <= 4096 else "random starts"
        # Each pass marches [lower, upper] again for the points still open: when a pass has
        # shortened the upper end, the next one probes a shorter interval just as densely, so
        # it resolves narrower features (a thin sliver of the other class that the first
        # march, out to the reach, stepped over).
        searching = torch.ones(n_points, dtype=torch.bool, device=x.device)
        for _ in range(SEARCH_PASSES):
            # A point goes on while its bracket is open and its last pass shortened it; the
            # decision is per point, so a point's result does not depend on the other points.
            settled = torch.isfinite(upper) & (upper - lower_t <= budget.tolerance * upper)
            work = (searching & ~settled).nonzero()[:, 0]
            if len(work) == 0 or not (search == "exhaustive" or budget.starts > 0 or budget.walk_rounds > 0):
                break
            before = upper[work].clone()
            rays = self._rays(x, work, basis, label, search, dim, project)
            used = self._search_rays(x, work, rays, label, lower_t, upper, delta, project, search == "exhaustive")
            gradients += used[0]
            forwards += used[1]
            searching = torch.zeros_like(searching)
            searching[work[upper[work] < before]] = True

        upper, delta, adversarial_label, checks = _verified(model, x, label, upper, delta)
        forwards += checks
        upper_np = upper.double().cpu().numpy()
        return DistanceBrackets(
            self.mode, self.reach, np.minimum(lower, np.where(np.isfinite(upper_np), upper_np, np.inf)),
            np.where(np.isfinite(upper_np), upper_np, np.nan), delta, label, adversarial_label, dim, search,
            gradients, forwards, time.perf_counter() - start, basis, certificate,
            greedy.distance.double().cpu().numpy())

    def _lower_bounds(self, x, basis, label) -> tuple[np.ndarray, str | None]:
        if not self.budget.certify:
            return np.zeros(len(x)), "certified bounds switched off (measure.attacks.search.certify: false)"
        try:
            network_layers(self.pgd.model)
        except (TypeError, ValueError) as error:  # a model the bound does not cover (e.g. a CNN)
            return np.zeros(len(x)), f"no certified bounds for this model: {error}"
        radius = certified_radius(self.pgd.model, x, basis=basis, label=label, max_radius=self.reach,
                                  complement=self.mode.endswith("off"))
        return radius.double().cpu().numpy(), None

    def _rays(self, x, work, basis, label, search, dim, project) -> torch.Tensor:
        """Unit rays (W, M, n) in each worked point's subspace."""
        if search == "exhaustive":
            frame = subspace_frame(self.mode, x, basis, work)
            unit = sphere_directions(dim, self.budget.directions).to(x.dtype).to(x.device)
            return torch.einsum("wnd,md->wmn", frame, unit)
        # Drawn for the worked points only, each from its own stream: the same rays whatever else is searched.
        gaussian = gaussian_directions(work.tolist(), max(self.budget.starts, 1), x.shape[1], self.pgd.seed,
                                       device=x.device, dtype=x.dtype)
        rows = work.repeat_interleave(gaussian.shape[1])
        flat = gaussian.reshape(-1, x.shape[1])
        rays = (flat if project is None else project(flat, rows)).reshape(gaussian.shape)
        # Turn each random ray into the downhill half-space of the margin at x: rays that climb
        # the margin rarely meet the boundary first.
        point = x[work].clone().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(margin(self.pgd.model(point), label[work]).sum(), point)
        downhill = -(gradient if project is None else project(gradient, work))
        sign = torch.where((rays * downhill[:, None]).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(x.dtype)
        rays = rays * sign
        if self.budget.starts == 0:
            rays = rays[:, :0]
        norm = rays.norm(dim=-1, keepdim=True)
        return torch.cat([rays / norm.clamp_min(torch.finfo(x.dtype).tiny), _unit_or_zero(downhill)[:, None]], dim=1)

    def _search_rays(self, x, work, rays, label, lower, upper, delta, project, exhaustive: bool) -> tuple[int, int]:
        """March and bisect the rays, walk the best, and lower `upper`/`delta` in place."""
        budget, model = self.budget, self.pgd.model
        usable = rays.norm(dim=-1) > 0.5  # zero rays: no descent direction in this subspace
        rays = torch.where(usable[..., None], rays, torch.zeros_like(rays))
        # A 1-D subspace searched exhaustively has only its two directions: march them as finely as
        # the probe budget of `directions` rays allows. Only then: a high-dimensional search with
        # no random starts also has a single ray (the downhill one), and marching it 128x finer
        # cost 4096 forward passes per point and pass (15 min on four 224 x 224 photos).
        march = budget.march_steps * max(1, budget.directions // rays.shape[1]) \
            if exhaustive and rays.shape[1] <= 2 else budget.march_steps
        high = torch.where(torch.isfinite(upper[work]), upper[work], torch.full_like(upper[work], self.reach))
        low = torch.minimum(lower[work], high)
        t, forwards = first_crossing(model, x[work], rays, label[work], low, high, march, budget.bisect_steps)
        t = torch.where(usable, t, torch.full_like(t, math.inf))
        # Candidates for the walk: the best few rays per point, and the PGD's point where found.
        order = t.argsort(dim=1)[:, :WALKED_RAYS]
        best_t = t.gather(1, order)
        best_rays = rays.gather(1, order[..., None].expand(-1, -1, x.shape[1]))
        starts = [best_t[..., None] * best_rays]
        has_ray = torch.isfinite(best_t)
        has_pgd = torch.isfinite(upper[work])
        starts.append(delta[work][:, None])
        found = torch.cat([has_ray, has_pgd[:, None]], dim=1)
        candidates = torch.cat(starts, dim=1)  # (W, C, n)
        owner, slot = found.nonzero(as_tuple=True)
        gradients = 0
        if len(owner) and budget.walk_rounds:
            rows = work[owner]
            walked, gradients, walk_forwards = walk_to_nearest(
                model, x[rows], torch.nan_to_num(candidates[owner, slot]), label[rows],
                None if project is None else (lambda v, r: project(v, rows[r])), budget.walk_rounds,
                budget.bisect_steps)
            forwards += walk_forwards
            candidates[owner, slot] = walked
        norms = torch.where(found, candidates.norm(dim=-1), torch.full_like(found, math.inf, dtype=x.dtype))
        best_norm, best_slot = norms.min(dim=1)
        better = best_norm < upper[work]
        chosen = work[better]
        upper[chosen] = best_norm[better]
        delta[chosen] = candidates[better.nonzero()[:, 0], best_slot[better]]
        return gradients, forwards


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _unit_or_zero(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))


def _row_projection(mode: str, basis: Subspace | None):
    """project(v (R, n), rows (R,)) onto each row's point's subspace, or None for free."""
    operator = PROJECTIONS[mode]
    if operator is None:
        return None
    return lambda v, rows: operator(v, basis, rows)


@torch.no_grad()
def _verified(model: nn.Module, x, label, upper, delta):
    """Check every found perturbation with one forward pass over all points; a point that is
    not adversarial here (last-bit differences between batch compositions) is pushed out by a
    relative nudge, and counts as not found if no nudge helps. Returns (upper, delta,
    adversarial label, forward evaluations)."""
    found = torch.isfinite(upper)
    adversarial_label = predicted_labels(model, x + delta)
    forwards = len(x)
    failing = found & (adversarial_label == label)
    for nudge in NUDGES:
        if not failing.any():
            break
        rows = failing.nonzero()[:, 0]
        delta[rows] *= 1 + nudge
        adversarial_label[rows] = predicted_labels(model, x[rows] + delta[rows])
        forwards += len(rows)
        failing = found & (adversarial_label == label)
    upper = torch.where(found & ~failing, delta.norm(dim=1), torch.full_like(upper, math.inf))
    delta = torch.where(torch.isfinite(upper)[:, None], delta, torch.zeros_like(delta))
    return upper, delta, adversarial_label, forwards


