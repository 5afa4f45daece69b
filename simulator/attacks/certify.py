"""Certified lower bounds on the distance to the decision boundary within a subspace.

An attack's distance is an upper bound: it found a label change that far away, so the true
minimal distance is at most that. This module gives the other side of the bracket: a radius
r such that *no* point x0 + B z with ||z||_2 <= r changes the label, proven by bounding the
network's margin over the whole ball.

    radius = certified_radius(model, x0, basis=B)        # B: (N, n, k) orthonormal, or None (free)

The bound is interval bound propagation (Gowal et al. 2018, arXiv 1810.12715) with the first
layer bounded exactly over the L2 ball (|w . B z| <= r ||B^T w||, attained), intervals through
the hidden layers, and the last layer folded into each margin f_y - f_j before bounding (so
the logits' common terms cancel). It is sound for any MLP of Linear layers and the ReLU, tanh,
softplus or GELU activations; exact for a network without hidden layers; looser the deeper and
wider the network. A tighter bound (CROWN, linear relaxations) is the planned refinement:
auto_LiRPA, the maintained CROWN library, needs torch < 1.13 and NumPy 1 on PyPI (0.3, 2022)
and does not import beside torch 2.x, so it cannot be used here yet.

Certified-or-not is monotone in r (a larger ball gives wider intervals), so the largest
certified radius is found by bisection, batched over points.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

MONOTONE = (nn.ReLU, nn.Tanh, nn.Softplus)


def network_layers(model: nn.Module) -> list[nn.Module]:
    """The model's leaf modules in registration order, which for the simulator's MLP (and any
    nn.Sequential of Linear layers and activations) is the order of the forward pass.
    TypeError or ValueError for anything the bound cannot handle."""
    layers = [module for module in model.modules() if not list(module.children())]
    for module in layers:
        if not isinstance(module, (nn.Linear, nn.GELU, *MONOTONE)):
            raise TypeError(f"certified bounds support Linear layers and ReLU/tanh/softplus/GELU activations, "
                             f"not {type(module).__name__}")
    linear = [isinstance(module, nn.Linear) for module in layers]
    if not (linear and linear[0] and linear[-1]) or any(not a and not b for a, b in itertools.pairwise(linear)):
        raise ValueError("certified bounds need a Linear layer first and last, and no two activations in a row")
    return layers


@torch.no_grad()
def margin_lower_bound(layers: list[nn.Module], x0: torch.Tensor, label: torch.Tensor, radius: torch.Tensor,
                       basis: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) a lower bound on min over ||z|| <= radius of f_label(x0 + B z) - max_{j != label} f_j(x0 + B z).
    Positive means: no label change anywhere in the ball (within the subspace spanned by B)."""
    first, *rest = layers
    head = rest[-1] if rest else first
    if not rest:  # no hidden layer: the margin itself is affine, bounded exactly
        return _affine_margin_bound(head, x0, label, radius, basis)
    center = nn.functional.linear(x0, first.weight, first.bias)
    spread = radius[:, None] * _row_norms(first.weight, basis)  # exact over the ball: attained
    lower, upper = center - spread, center + spread
    for module in rest[:-1]:
        if isinstance(module, nn.Linear):
            middle, half = (upper + lower) / 2, (upper - lower) / 2
            center = nn.functional.linear(middle, module.weight, module.bias)
            spread = half @ module.weight.abs().T
            lower, upper = center - spread, center + spread
        else:
            lower, upper = _activation_bounds(module, lower, upper)
    return _interval_margin_bound(head, lower, upper, label)


def _row_norms(weight: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """||B^T w_i|| for each row w_i of `weight`: (h,) free, (N, h) with per-point bases (N, n, k)."""
    if basis is None:
        return weight.norm(dim=1)
    return torch.einsum("hn,pnk->phk", weight, basis).norm(dim=2)


def _affine_margin_bound(head: nn.Linear, x0, label, radius, basis) -> torch.Tensor:
    logits = head(x0)
    differences = head.weight[label][:, None, :] - head.weight[None, :, :]  # (N, C, n): w_y - w_j
    if basis is None:
        slopes = differences.norm(dim=2)
    else:
        slopes = torch.einsum("pcn,pnk->pck", differences, basis).norm(dim=2)
    margins = logits.gather(1, label[:, None]) - logits - radius[:, None] * slopes
    return _exclude_own_class(margins, label).min(dim=1).values


def _interval_margin_bound(head: nn.Linear, lower, upper, label) -> torch.Tensor:
    middle, half = (upper + lower) / 2, (upper - lower) / 2
    weights = head.weight[label][:, None, :] - head.weight[None, :, :]  # (N, C, h)
    biases = 0.0 if head.bias is None else head.bias[label][:, None] - head.bias[None, :]
    margins = torch.einsum("pch,ph->pc", weights, middle) + biases - torch.einsum("pch,ph->pc", weights.abs(), half)
    return _exclude_own_class(margins, label).min(dim=1).values


def _exclude_own_class(margins: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return margins.scatter(1, label[:, None], float("inf"))


def _activation_bounds(module: nn.Module, lower, upper):
    if isinstance(module, MONOTONE):
        return module(lower), module(upper)
    # GELU falls to a minimum near -0.75, then rises: the maximum of an interval is at an end, the
    # minimum at an end or at the dip when the interval contains it.
    dip_x, dip_value = _gelu_dip(module, lower.dtype, lower.device)
    at_ends = torch.minimum(module(lower), module(upper))
    contains_dip = (lower < dip_x) & (dip_x < upper)
    return torch.where(contains_dip, torch.full_like(at_ends, dip_value), at_ends), \
        torch.maximum(module(lower), module(upper))


def _gelu_dip(module: nn.Module, dtype, device) -> tuple[float, float]:
    """Where the GELU (either variant) is smallest, and a value safely below that minimum."""
    grid = torch.linspace(-2.0, 0.0, 200_001, dtype=torch.float64)
    values = module(grid)
    index = int(values.argmin())
    # The grid minimum is within 1e-5 of the true one in x, so within ~1e-10 in value; the
    # slack keeps the bound sound in float32 too.
    return float(grid[index]), float(values[index]) - 1e-6


@torch.no_grad()
def certified_radius(model: nn.Module, x0: torch.Tensor, basis: torch.Tensor | None = None,
                     label: torch.Tensor | None = None, max_radius: float = 10.0, steps: int = 40) -> torch.Tensor:
    """(N,) the largest radius (up to `max_radius`, bisection to `max_radius` / 2**steps) within
    which the label of every x0 + B z provably stays `label` (default: the prediction at x0).
    0 where even the point itself cannot be certified (on the boundary, within rounding)."""
    layers = network_layers(model)
    if label is None:
        label = model(x0).argmax(dim=1)
    low = torch.zeros(len(x0), dtype=x0.dtype, device=x0.device)
    high = torch.full_like(low, float(max_radius))
    whole = margin_lower_bound(layers, x0, label, high, basis) > 0
    low = torch.where(whole, high, low)
    for _ in range(steps):
        middle = (low + high) / 2
        certified = margin_lower_bound(layers, x0, label, middle, basis) > 0
        low = torch.where(certified & ~whole, middle, low)
        high = torch.where(certified | whole, high, middle)
    return low
