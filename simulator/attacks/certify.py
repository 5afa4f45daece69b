"""Certified lower bounds on the distance to the decision boundary within a subspace.

An attack's distance is an upper bound: it found a label change that far away, so the true
minimal distance is at most that. This module gives the other side of the bracket: a radius
r such that *no* point of the ball {x0 + v : v in S, ||v||_2 <= r} changes the label, proven by
bounding the network's margin f_y - max_{j != y} f_j from below over the whole ball.

    radius = certified_radius(model, x0, basis=B)                   # S = span B: a Subspace or (N, n, k)
    radius = certified_radius(model, x0, basis=B, complement=True)  # S = the complement of span B
    radius = certified_radius(model, x0)                            # S = R^n

Three bounds, each sound on its own (`linear_bounds` has the propagations):

1. IBP (Gowal et al. 2018, arXiv 1810.12715), first layer exact over the ball; exact for a
   network without hidden layers. Largest certified r by bisection.
2. CROWN (Zhang et al. 2018, arXiv 1811.00866; the backward linear relaxation of auto_LiRPA,
   which needs torch < 1.13 and cannot be used here), with every intermediate layer bounded by
   CROWN as well and the larger of the CROWN and IBP bounds kept. Bisection again, from the IBP
   radius up. Certification need not be exactly monotone in r for CROWN (the lines' slopes
   change with the intervals), so the result is always a radius that was certified, possibly
   short of the largest one.
3. Branch and bound for subspaces of dimension d <= 3 (`max_boxes`), best first, in coordinates
   z of an orthonormal basis of S. A label change is first looked for on the ray along which
   CROWN's bound falls fastest; the target is the ball of radius (1 - BAB_RTOL) x the nearest
   change known, covered by boxes (a cube at first). The queued box nearest the origin is
   halved; each half is bounded by CROWN over box-and-target (both concretisations are sound
   there, the larger is kept) and is certified, dropped (inside the CROWN-certified ball, or
   outside the target) or queued. Every point nearer than the nearest queued box lies in a
   certified box or in the certified ball, so that distance (at most the target) is a
   certified radius. Probes of the queued boxes may find nearer label changes, which shrink
   the target; a point stops when nothing is queued inside its target or at the box budget.
   For these tiny subspaces this gets within ~0.5% of the true minimal distance.

The certified radius is the largest of the three. Everything is computed in float64 from
float64 copies of the weights and an orthonormalised (QR, float64) basis, so float32 round-off
cannot make a bound unsound; the float64 radius is rounded down to the input's dtype. What is
certified is the network as a real function of its (float32) weights: a float32 forward pass
may still flip a label within ~1e-6 relative of the boundary.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from simulator.attacks.linear_bounds import (
    Ball,
    Box,
    FirstLayer,
    Intersection,
    Network,
    crown_margins,
    exclude_own_class,
    interval_margins,
    network_layers,
)
from simulator.attacks.operators import DenseBasis, FactoredBasis, Subspace
from simulator.attacks.subspaces import as_subspace

__all__ = ["BOUNDS", "certified_radius", "margin_lower_bound", "network_layers"]

BOUNDS = ("ibp", "crown")
# Branch and bound: only for subspaces of at most this dimension (the boxes grow as 2^d).
BAB_MAX_DIM = 3
# The target radius is this fraction short of the nearest label change known.
BAB_RTOL = 0.005
# Boxes split per point and round (the rest wait in the queue, nearest first).
BAB_SPLITS_PER_ROUND = 16
# A box is halved across the side that maximises width x (|slope| + SPLIT_BALANCE ||slope||),
# slope: the gradient of its weakest margin bound in z (thin across the boundary, not a needle).
SPLIT_BALANCE = 0.1
# Points certified at once: the first layer composed with a complement, W (I - B B^T), is
# hidden x n float64 numbers per point, so large inputs are certified in chunks of points.
CERTIFY_CHUNK_BYTES = 128 * 2**20
# The first label change on the steepest ray: log-spaced probes, then halvings of the bracket.
RAY_SAMPLES = 48
RAY_BISECTIONS = 12


@torch.no_grad()
def certified_radius(model: nn.Module, x0: torch.Tensor, basis: torch.Tensor | None = None,
                     label: torch.Tensor | None = None, max_radius: float = 10.0, steps: int = 40, *,
                     complement: bool = False, bound: str = "crown", max_boxes: int = 1024,
                     rtol: float = 1e-4) -> torch.Tensor:
    """(N,) a radius (at most `max_radius`) within which the label of every x0 + v, v in the
    subspace, provably stays `label` (default: the prediction at x0); 0 where even the point
    itself cannot be certified (on the boundary, within rounding).

    basis: (N, n, k) or (n, k) orthonormal, or None for the free space R^n; complement: the
    subspace is the orthogonal complement of span(basis) (the attack's `*_off` modes).
    bound: "ibp" or "crown" (CROWN, and IBP's radius where larger). steps: IBP bisection steps
    (to max_radius / 2**steps), and at most as many for CROWN, which stops earlier, at a
    relative bracket width `rtol`. max_boxes: branch-and-bound budget of boxes per point for
    subspaces of dimension <= 3 (0 = off; only with bound="crown"). Cost, 50 points, one
    CPU thread: IBP ~0.05 s; CROWN ~0.1-0.2 s for [64, 64] (n = 3) and ~0.3-0.7 s for
    [128, 128] (n = 100); branch and bound ~0.3 s (d = 1) to ~1.5 s (d = 3) for [64, 64],
    ~7 s for [256, 256] (d = 3).
    """
    if bound not in BOUNDS:
        raise ValueError(f"bound: must be one of {BOUNDS}, got {bound!r}")
    net = Network.from_layers(network_layers(model), device=x0.device)
    label = model(x0).argmax(dim=1) if label is None else torch.as_tensor(label, device=x0.device).long()
    x = x0.detach().to(torch.float64)
    basis = _orthonormal(basis, x, complement)
    chunk = max(1, CERTIFY_CHUNK_BYTES // (8 * 4 * x.shape[1] * max(w.shape[0] for w, _ in net.linears)))
    if len(x) > chunk:  # a point's radius does not depend on the others, so chunks change nothing
        rows = torch.arange(len(x), device=x.device)
        return torch.cat([_certified(net, x[part], None if basis is None else basis.select(part), label[part],
                                     max_radius, steps, complement, bound, max_boxes, rtol, x0.dtype)
                          for part in rows.split(chunk)])
    return _certified(net, x, basis, label, max_radius, steps, complement, bound, max_boxes, rtol, x0.dtype)


def _certified(net, x, basis, label, max_radius, steps, complement, bound, max_boxes, rtol, dtype) -> torch.Tensor:
    """`certified_radius` for float64 points x with an orthonormal float64 `basis` operator."""
    first = subspace_first_layer(net, x, basis, complement)

    def margin_bound(method):
        margins = interval_margins if method == "ibp" else crown_margins
        return lambda index, radius: exclude_own_class(margins(net, first[index], label[index], Ball(radius)),
                                                       label[index])

    zero = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    radius = _largest_certified(margin_bound("ibp"), zero, float(max_radius), steps, rtol=0.0)
    if bound == "crown" and net.depth > 0:
        radius = _largest_certified(margin_bound("crown"), radius, float(max_radius), steps, rtol)
        dim = _subspace_dim(x, basis, complement)
        if max_boxes > 0 and 1 <= dim <= BAB_MAX_DIM:
            frame = subspace_first_layer(net, x, _frame(x, basis, complement), complement=False)
            boxed = branch_and_bound(net, frame, label, radius, float(max_radius), max_boxes)
            # Branch and bound certifies the open ball; one ulp less gives the closed one.
            radius = torch.maximum(radius, torch.nextafter(boxed, torch.zeros_like(boxed)))
    return _round_down(radius, dtype)


@torch.no_grad()
def margin_lower_bound(model: nn.Module, x0: torch.Tensor, label: torch.Tensor, radius: torch.Tensor,
                       basis: torch.Tensor | None = None, complement: bool = False,
                       bound: str = "crown") -> torch.Tensor:
    """(N,) a float64 lower bound on min over the ball of radius `radius` (N,) in the subspace of
    f_label - max_{j != label} f_j. Positive: no label change anywhere in the ball."""
    if bound not in BOUNDS:
        raise ValueError(f"bound: must be one of {BOUNDS}, got {bound!r}")
    net = Network.from_layers(network_layers(model), device=x0.device)
    x = x0.detach().to(torch.float64)
    first = subspace_first_layer(net, x, _orthonormal(basis, x, complement), complement)
    margins = interval_margins if bound == "ibp" else crown_margins
    return exclude_own_class(margins(net, first, label, Ball(radius.to(torch.float64))), label)


# --------------------------------------------------------------------------- subspaces


def subspace_first_layer(net: Network, x: torch.Tensor, basis, complement: bool) -> FirstLayer:
    """The first layer composed with x + A z: A = I (no basis), B, or I - B B^T (complement);
    `basis` a Subspace or a dense (N, n, k) tensor."""
    weight, bias = net.linears[0]
    offset = x @ weight.T + bias
    if basis is None:
        return FirstLayer(weight.expand(len(x), -1, -1), offset)
    basis = as_subspace(basis, len(x))
    if isinstance(basis, DenseBasis) and not basis.shared:
        projected = torch.einsum("hn,pnk->phk", weight, basis.bases)  # W B, without a per-point copy of W
    else:
        projected = basis.coefficients(weight.expand(len(x), -1, -1))
    if not complement:
        return FirstLayer(projected, offset)
    return FirstLayer(weight - basis.expand(projected), offset)  # W (I - B B^T)


def _orthonormal(basis, x, complement) -> Subspace | None:
    """The subspaces as a float64 operator with orthonormal columns to float64 precision: dense
    and factored bases are re-orthonormalised by QR (same span); coordinate and structured
    random ones are orthonormal by construction."""
    if basis is None:
        if complement:
            raise ValueError("complement=True needs the basis of the span to avoid")
        return None
    if not isinstance(basis, Subspace):
        basis = torch.as_tensor(basis).to(device=x.device, dtype=torch.float64)
        if basis.dim() == 2:
            basis = basis.expand(len(x), *basis.shape)
        if basis.dim() != 3 or basis.shape[:2] != x.shape or basis.shape[2] < 1:
            raise ValueError(f"basis: expected ({len(x)}, {x.shape[1]}, k) or ({x.shape[1]}, k), got {tuple(basis.shape)}")
        basis = DenseBasis(basis)
    if basis.n_points != len(x) or basis.ambient_dim != x.shape[1]:
        raise ValueError(f"basis: expected {len(x)} subspaces of R^{x.shape[1]}, got {basis.n_points} of R^{basis.ambient_dim}")
    basis = basis.to(device=x.device, dtype=torch.float64)
    if isinstance(basis, DenseBasis):
        dense = basis.bases.expand(len(x), -1, -1) if basis.shared else basis.bases
        return DenseBasis(torch.linalg.qr(dense).Q)
    if isinstance(basis, FactoredBasis):
        return FactoredBasis(torch.linalg.qr(basis.embedding).Q, torch.linalg.qr(basis.local).Q)
    return basis


def _subspace_dim(x, basis, complement) -> int:
    if basis is None:
        return x.shape[1]
    return x.shape[1] - basis.dim if complement else basis.dim


def _frame(x, basis, complement) -> torch.Tensor:
    """An explicit orthonormal basis (N, n, d) of the subspace (for small d)."""
    if basis is None:
        return torch.eye(x.shape[1], dtype=x.dtype, device=x.device).expand(len(x), -1, -1)
    dense = basis.basis(dtype=x.dtype)
    if not complement:
        return dense
    return torch.linalg.qr(dense, mode="complete").Q[:, :, dense.shape[2]:]


def _round_down(radius: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """radius in `dtype`, never above the float64 value."""
    cast = radius.to(dtype)
    too_high = cast.to(torch.float64) > radius
    return torch.where(too_high, torch.nextafter(cast, torch.zeros_like(cast)), cast)


# --------------------------------------------------------------------------- bisection


def _largest_certified(margin_bound, low: torch.Tensor, high: float, steps: int, rtol: float) -> torch.Tensor:
    """Per point, the largest radius between a certified `low` (N,) and `high` at which
    `margin_bound(index, radius)` is positive, evaluating only the points whose bracket
    [certified, not certified] is open: until high - low <= rtol * high, or `steps` steps.

    rtol = 0: plain bisection. rtol > 0: false position on the bound's value (Illinois variant:
    the end kept twice in a row has its value halved), kept at least 1/16 of the bracket from
    either end, and geometric bisection while the value at `low` is unknown. Either way the
    result is a radius whose bound was positive (or `low`), however the bound depends on r."""
    everyone = torch.arange(len(low), device=low.device)
    high = torch.full_like(low, high)
    high_value = margin_bound(everyone, high)
    whole = high_value > 0
    low = torch.where(whole, high, low)
    low_value = torch.full_like(low, math.nan)
    kept = torch.zeros_like(low)  # +1: the high end was kept last step, -1: the low end
    open_ = ~whole & (high - low > rtol * high)
    for _ in range(steps):
        index = open_.nonzero()[:, 0]
        if not len(index):
            break
        lo, hi, value_lo, value_hi = low[index], high[index], low_value[index], high_value[index]
        if rtol > 0:
            width = hi - lo
            secant = (lo * value_hi - hi * value_lo) / (value_hi - value_lo)
            secant = torch.minimum(torch.maximum(secant, lo + width / 16), hi - width / 16)
            middle = torch.where(secant.isfinite(), secant, torch.where(lo > 0, (lo * hi).sqrt(), (lo + hi) / 2))
        else:
            middle = (lo + hi) / 2
        value = margin_bound(index, middle)
        certified = value > 0
        was_kept = kept[index]
        low[index] = torch.where(certified, middle, lo)
        low_value[index] = torch.where(certified, value, torch.where(was_kept == -1, value_lo / 2, value_lo))
        high[index] = torch.where(certified, hi, middle)
        high_value[index] = torch.where(certified, torch.where(was_kept == 1, value_hi / 2, value_hi), value)
        kept[index] = torch.where(certified, 1, -1).to(kept.dtype)
        open_[index] = high[index] - low[index] > rtol * high[index]
    return low


# --------------------------------------------------------------------------- branch and bound


@torch.no_grad()
def branch_and_bound(net: Network, frame: FirstLayer, label: torch.Tensor, inner: torch.Tensor,
                     max_radius: float, max_boxes: int) -> torch.Tensor:
    """(N,) a certified radius by best-first box splitting in the subspace's coordinates z.

    `frame`: the first layer composed with x0 + Q z for an orthonormal basis Q (N, n, d) of the
    subspace; `inner`: radii already certified. The target is the ball of radius (1 - BAB_RTOL)
    times the nearest label change known (first from a ray along CROWN's steepest descent, then
    from probes of the queued boxes), and only the part of a box inside it is bounded (the box
    and the ball bounds, both sound there, the larger kept). Each round, the
    BAB_SPLITS_PER_ROUND queued boxes nearest the origin of every open point are halved; each
    half is certified, dropped (inside `inner`, or outside the target) or queued. The radius is
    the distance to the nearest queued box, at most the target: every nearer point lies in a
    certified box or in the certified ball. A point closes when nothing is queued inside its
    target or after `max_boxes` boxes."""
    n_points, d = frame.weight.shape[0], frame.weight.shape[2]
    active = (inner > 0) & (inner < max_radius)  # inner = 0: not even the point is certified
    change = _ray_change(net, frame, label, inner, max_radius)
    owner = active.nonzero()[:, 0]
    high = change[owner, None].expand(-1, d).clone()
    low = -high
    distance = torch.zeros(len(owner), dtype=inner.dtype, device=inner.device)
    split_score = torch.ones_like(low)
    used = torch.zeros(n_points, dtype=torch.long, device=inner.device)
    while True:
        target = (1 - BAB_RTOL) * change
        radius = torch.where(active, target.scatter_reduce(0, owner, distance, "amin"), 0).maximum(inner)
        open_ = (radius < target) & (used < max_boxes)
        chosen = open_[owner] & (_rank_within_owner(owner, distance) < BAB_SPLITS_PER_ROUND)
        if not chosen.any():
            return radius
        keep = ~chosen
        parents, parent_low, parent_high = owner[chosen], low[chosen], high[chosen]
        used += torch.bincount(parents, minlength=n_points) * 2
        # Halve each box across the side along which its weakest margin bound varies most.
        axis = (split_score[chosen] * (parent_high - parent_low)).argmax(dim=1, keepdim=True)
        cut = (parent_low.gather(1, axis) + parent_high.gather(1, axis)) / 2
        child_owner = parents.repeat(2)
        child_low = torch.cat([parent_low, parent_low.scatter(1, axis, cut)])
        child_high = torch.cat([parent_high.scatter(1, axis, cut), parent_high])
        nearest_point = torch.zeros_like(child_low).clamp(child_low, child_high)
        child_distance = nearest_point.norm(dim=1)
        farthest = torch.maximum(child_low.abs(), child_high.abs()).norm(dim=1)
        pending = (farthest > inner[child_owner]) & (child_distance < target[child_owner])
        child_owner, child_low, child_high = child_owner[pending], child_low[pending], child_high[pending]
        nearest_point, child_distance = nearest_point[pending], child_distance[pending]
        boxes, child_label = frame[child_owner], label[child_owner]
        region = Intersection(Box((child_low + child_high) / 2, (child_high - child_low) / 2),
                              Ball(target[child_owner]))
        margins, slopes = crown_margins(net, boxes, child_label, region, slopes=True)
        weakest = margins.scatter(1, child_label[:, None], math.inf).argmin(dim=1)
        certified = margins.gather(1, weakest[:, None])[:, 0] > 0
        steepness = slopes[torch.arange(len(weakest)), weakest]
        # Probe for label changes (only to aim the target; never part of the certificate): the
        # box's point nearest the origin, and its corner where the weakest bound is lowest.
        corner = torch.where(steepness > 0, child_low, child_high)
        for probe in (nearest_point, corner):
            changed = net.logits(boxes, probe).argmax(dim=1) != child_label
            change.scatter_reduce_(0, child_owner[changed], probe[changed].norm(dim=1), "amin")
        queued = ~certified
        child_score = steepness.abs() + SPLIT_BALANCE * steepness.norm(dim=1, keepdim=True)
        owner = torch.cat([owner[keep], child_owner[queued]])
        low = torch.cat([low[keep], child_low[queued]])
        high = torch.cat([high[keep], child_high[queued]])
        distance = torch.cat([distance[keep], child_distance[queued]])
        split_score = torch.cat([split_score[keep], child_score[queued]])


def _ray_change(net: Network, frame: FirstLayer, label: torch.Tensor, inner: torch.Tensor,
                max_radius: float) -> torch.Tensor:
    """(N,) the distance of the first label change on the ray along which CROWN's linear bound
    on the weakest margin over the certified ball falls fastest (max_radius where none):
    RAY_SAMPLES log-spaced probes from `inner` to max_radius, then RAY_BISECTIONS halvings."""
    margins, slopes = crown_margins(net, frame, label, Ball(inner), slopes=True)
    weakest = margins.scatter(1, label[:, None], math.inf).argmin(dim=1)
    direction = -slopes[torch.arange(len(label)), weakest]
    direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-300)
    start = inner.clamp(min=max_radius * 1e-9)
    fractions = torch.arange(1, RAY_SAMPLES + 1, dtype=inner.dtype, device=inner.device) / RAY_SAMPLES
    distances = start[:, None] * (max_radius / start[:, None]) ** fractions  # (N, S)
    changed = _changed(net, frame, label, distances[:, :, None] * direction[:, None, :])
    first = changed.to(torch.int8).argmax(dim=1, keepdim=True)  # the first change (0 where none)
    high = distances.gather(1, first)[:, 0]
    low = torch.where(first[:, 0] > 0, distances.gather(1, (first - 1).clamp(min=0))[:, 0], start)
    for _ in range(RAY_BISECTIONS):
        middle = (low + high) / 2
        crossed = _changed(net, frame, label, (middle[:, None] * direction)[:, None, :])[:, 0]
        low, high = torch.where(crossed, low, middle), torch.where(crossed, middle, high)
    return torch.where(changed.any(dim=1), high, torch.full_like(high, max_radius))


def _changed(net: Network, frame: FirstLayer, label: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(N, S) whether the label at x0 + Q z differs from `label`, for z (N, S, d)."""
    count, samples, d = z.shape
    index = torch.arange(count, device=z.device).repeat_interleave(samples)
    return (net.logits(frame[index], z.reshape(-1, d)).argmax(dim=1) != label[index]).reshape(count, samples)


def _rank_within_owner(owner: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Each box's rank by distance among its owner's boxes (0 = nearest)."""
    if not len(owner):
        return owner
    by_distance = distance.argsort()
    order = by_distance[owner[by_distance].argsort(stable=True)]
    sorted_owner = owner[order]
    starts = torch.ones_like(sorted_owner, dtype=torch.bool)
    starts[1:] = sorted_owner[1:] != sorted_owner[:-1]
    position = torch.arange(len(owner), device=owner.device)
    first_of_run = torch.cummax(torch.where(starts, position, 0), dim=0).values
    rank = torch.empty_like(owner)
    rank[order] = position - first_of_run
    return rank
