"""Rays and boundary walks: the pieces of the global minimal-distance search (DESIGN.md section 8).

A greedy walk down the margin ends at *a* boundary point, often not the nearest one. These
functions look elsewhere:

- `sphere_directions(d, count)`: unit vectors spread evenly over the sphere of R^d (d <= 3),
  for an exhaustive direction search in small subspaces;
- `first_crossing(...)`: along many rays per point, the first label change, by a march of
  evenly spaced probes and a bisection of the first bracket;
- `walk_to_nearest(...)`: from boundary points already found, turn each ray towards the
  boundary normal at its end and keep the turned ray when it crosses sooner: a fixed-point
  walk along the boundary to a local minimum of the distance, where the perturbation is
  parallel to the normal (the stationarity condition that fast minimum-norm attacks (Pintor
  et al., NeurIPS 2021) and decoupled direction and norm (Rony et al., CVPR 2019) also drive
  towards, here with every accepted point checked by a forward pass).

Everything works on per-point batches of rays: x (N, n), rays (N, M, n).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from simulator.attacks.greedy_pgd import NO_MOVE_RTOL  # "no descent direction in this subspace"
# Rows per forward pass: at most CHUNK_ROWS, and at most CHUNK_ELEMENTS input floats (a 224 x 224
# image is 150,528 floats: 27 images per pass), bounding the memory of a march.
CHUNK_ROWS, CHUNK_ELEMENTS = 1 << 16, 1 << 22


def rows_per_pass(ambient_dim: int) -> int:
    return max(1, min(CHUNK_ROWS, CHUNK_ELEMENTS // ambient_dim))


def sphere_directions(dim: int, count: int, dtype=torch.float64) -> torch.Tensor:
    """(M, dim) unit vectors spread over the sphere S^(dim-1): both signs for dim 1, `count`
    equally spaced angles for dim 2, a Fibonacci lattice of `count` points for dim 3 (spacing
    about sqrt(4 pi / count) radians, so the nearest probe to any direction is within
    about half of that)."""
    if dim == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=dtype)
    if dim == 2:
        angle = torch.arange(count, dtype=dtype) * (2 * math.pi / count)
        return torch.stack([angle.cos(), angle.sin()], dim=1)
    if dim == 3:
        index = torch.arange(count, dtype=dtype) + 0.5
        z = 1 - 2 * index / count
        angle = index * math.pi * (3 - math.sqrt(5))  # golden-angle increments
        ring = (1 - z**2).sqrt()
        return torch.stack([ring * angle.cos(), ring * angle.sin(), z], dim=1)
    raise ValueError(f"an exhaustive direction search covers dimensions 1 to 3, not {dim}")


@torch.no_grad()
def predicted_labels(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """argmax of the logits for any batch shape (..., n), in chunks of `rows_per_pass(n)` rows."""
    flat = points.reshape(-1, points.shape[-1])
    labels = torch.cat([model(chunk).argmax(-1) for chunk in flat.split(rows_per_pass(flat.shape[1]))]) if len(flat) else \
        torch.empty(0, dtype=torch.long, device=points.device)
    return labels.reshape(points.shape[:-1])


@torch.no_grad()
def first_crossing(model: nn.Module, x: torch.Tensor, rays: torch.Tensor, label: torch.Tensor, low: torch.Tensor,
                   high: torch.Tensor, march_steps: int, bisect_steps: int) -> tuple[torch.Tensor, int]:
    """Distance along each unit ray to its first label change in (low, high], per point.

    x (N, n), rays (N, M, n) unit vectors, label (N,), low/high (N,). The march probes
    t = low + (high - low) s / march_steps for s = 1..march_steps; a change between probes that
    reverts before the next probe is missed, so the march resolves features wider than
    (high - low) / march_steps. Only the rays whose first change falls in the earliest bracket
    of their point can be the shortest; those are bisected `bisect_steps` times, keeping the
    upper end adversarial. Returns (t (N, M), +inf where no change was seen or the ray lost to
    an earlier bracket; forward evaluations spent).
    """
    n_points, n_rays, _ = rays.shape
    fractions = torch.arange(1, march_steps + 1, dtype=x.dtype, device=x.device) / march_steps
    first = torch.full((n_points, n_rays), march_steps, dtype=torch.long, device=x.device)
    # March a block of probes at a time (about one forward pass's worth), only on rays that have
    # not crossed yet, and stop once every ray has.
    start = 0
    while start < march_steps:
        owner, ray = (first == march_steps).nonzero(as_tuple=True)
        if len(owner) == 0:
            break
        block = fractions[start:start + max(1, rows_per_pass(x.shape[1]) // len(owner))]
        t = low[owner, None] + (high - low)[owner, None] * block  # (rays, probes)
        probes = x[owner, None] + t[..., None] * rays[owner, ray][:, None]
        crossed = predicted_labels(model, probes) != label[owner, None]
        hit = crossed.any(dim=1)
        first[owner[hit], ray[hit]] = start + crossed[hit].int().argmax(dim=1)
        start += len(block)
    forwards = n_points * n_rays * march_steps  # an upper bound on the march's cost, for the budget record
    earliest = first.min(dim=1, keepdim=True).values
    candidate = (first == earliest) & (first < march_steps)
    t_out = torch.full((n_points, n_rays), math.inf, dtype=x.dtype, device=x.device)
    owner, ray = candidate.nonzero(as_tuple=True)
    if len(owner):
        width = (high - low)[owner] / march_steps
        bracket_low = low[owner] + width * first[owner, ray]
        bracket_high = bracket_low + width
        t = bisect_rays(model, x[owner], rays[owner, ray], label[owner], bracket_low, bracket_high, bisect_steps)
        t_out[owner, ray] = t
        forwards += len(owner) * bisect_steps
    return t_out, forwards


@torch.no_grad()
def bisect_rays(model: nn.Module, x: torch.Tensor, rays: torch.Tensor, label: torch.Tensor, low: torch.Tensor,
                high: torch.Tensor, steps: int) -> torch.Tensor:
    """Bisect the label change on x + t ray for t in [low, high], given label(x + high ray) !=
    label. Keeps that invariant: the returned t (rows,) always gives an adversarial point."""
    for _ in range(steps):
        middle = (low + high) / 2
        crossed = predicted_labels(model, x + middle[:, None] * rays) != label
        high = torch.where(crossed, middle, high)
        low = torch.where(crossed, low, middle)
    return high


def margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """f = z_label - max_{j != label} z_j per row: positive while the label holds."""
    own = logits.gather(1, label[:, None])[:, 0]
    rival = logits.scatter(1, label[:, None], -torch.inf).amax(1)
    return own - rival


def walk_to_nearest(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, label: torch.Tensor, project,
                    rounds: int, bisect_steps: int, tolerance: float = 1e-4) -> tuple[torch.Tensor, int, int]:
    """Walk boundary points towards the nearest boundary point, `rounds` times at most.

    x (R, n) the attacked points (one row per ray), delta (R, n) adversarial perturbations
    (x + delta changes the label), `project(v, rows)` the projection onto the rows' subspace
    (None for the free space). Per round and row: nu = the unit projected downhill margin
    gradient at x + delta, u = delta / ||delta||; the turned rays u' = normalize(u + eta (nu - u))
    for eta = 1, 1/2, 1/4 are tried in turn, and the first one already adversarial at the current
    distance is bisected from 0 (every accepted point stays adversarial). A row stops when a
    round shortens it by less than `tolerance` (relative). Returns (delta (R, n), gradient
    evaluations, forward evaluations).
    """
    delta = delta.clone()
    active = torch.arange(len(x), device=x.device)
    gradients = forwards = 0
    for _ in range(rounds):
        if len(active) == 0:
            break
        point = (x[active] + delta[active]).requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(margin(model(point), label[active]).sum(), point)
        gradients += len(active)
        projected = gradient if project is None else project(gradient, active)
        norm = projected.norm(dim=1, keepdim=True)
        usable = norm[:, 0] > NO_MOVE_RTOL * gradient.norm(dim=1)
        rows, normal = active[usable], -projected[usable] / norm[usable]
        distance = delta[rows].norm(dim=1)
        ray = delta[rows] / distance[:, None]
        improved = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
        pending = torch.ones(len(rows), dtype=torch.bool, device=x.device)
        for eta in (1.0, 0.5, 0.25):
            trial = pending.nonzero()[:, 0]
            if len(trial) == 0:
                break
            turned = ray[trial] + eta * (normal[trial] - ray[trial])
            turned = turned / turned.norm(dim=1, keepdim=True)
            with torch.no_grad():
                crossed = predicted_labels(model, x[rows[trial]] + distance[trial, None] * turned) != label[rows[trial]]
            forwards += len(trial)
            chosen = trial[crossed]
            if len(chosen) == 0:
                continue
            t = bisect_rays(model, x[rows[chosen]], turned[crossed], label[rows[chosen]],
                            torch.zeros_like(distance[chosen]), distance[chosen].clone(), bisect_steps)
            forwards += len(chosen) * bisect_steps
            shorter = t < distance[chosen]
            accepted = chosen[shorter]
            improved[accepted] = t[shorter] < distance[accepted] * (1 - tolerance)
            delta[rows[accepted]] = t[shorter, None] * turned[crossed][shorter]
            pending[accepted] = False
        active = rows[improved]
    return delta, gradients, forwards
