"""Certified lower bounds (simulator/attacks/certify.py) against closed forms and exhaustive search.

A certified radius is only worth printing if it is never above the true minimal distance:
checked against the closed form of affine networks (where the bound is exact), against an
exhaustive search over every direction of a 2-D subspace, and against random sampling of the
certified ball for every supported activation.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simulator.attacks.certify import certified_radius, network_layers


def orthonormal_bases(count: int, n: int, k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(count, n, k, generator=generator, dtype=torch.float64))[0]


def affine_distance(head: nn.Linear, x0: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Closed form: min over j != y of (f_y - f_j)(x0) / ||B^T (w_y - w_j)||."""
    logits = head(x0)
    label = logits.argmax(1)
    best = torch.full((len(x0),), math.inf, dtype=x0.dtype)
    for j in range(head.out_features):
        difference = head.weight[label] - head.weight[j]
        slope = difference.norm(dim=1) if basis is None else torch.einsum("pn,pnk->pk", difference, basis).norm(dim=1)
        gap = logits.gather(1, label[:, None])[:, 0] - logits[:, j]
        best = torch.where(label == j, best, torch.minimum(best, gap / slope))
    return best


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("subspace", [False, True])
def test_the_bound_is_exact_for_an_affine_network(classes, subspace):
    torch.manual_seed(0)
    head = nn.Linear(6, classes).double()
    x0 = torch.randn(50, 6, dtype=torch.float64)
    basis = orthonormal_bases(50, 6, 2, seed=1) if subspace else None
    radius = certified_radius(head, x0, basis, max_radius=100.0, steps=60)
    assert torch.allclose(radius, affine_distance(head, x0, basis), rtol=1e-9, atol=1e-12)


def first_crossing_2d(model: nn.Module, x0: torch.Tensor, basis: torch.Tensor, label: int, reach: float,
                      directions: int = 1000, samples: int = 1500) -> float:
    """The true minimal distance within span(B) (k = 2), by marching `directions` rays of
    `samples` steps each: the first label change on any ray, bracketed to one step."""
    angles = torch.linspace(0, 2 * math.pi, directions + 1, dtype=torch.float64)[:-1]
    unit = torch.stack([angles.cos(), angles.sin()], dim=1)  # (D, 2)
    radii = torch.linspace(0, reach, samples + 1, dtype=torch.float64)[1:]
    points = x0 + torch.einsum("rd,dk,nk->rdn", radii[:, None].expand(-1, directions), unit, basis)
    with torch.no_grad():
        changed = model(points.reshape(-1, x0.numel())).argmax(1).reshape(samples, directions) != label
    if not changed.any():
        return math.inf
    first_step = changed.float().argmax(0)[changed.any(0)].min()
    return float(radii[first_step])


def test_the_bound_is_never_above_the_true_distance_of_a_relu_network_in_a_plane():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    x0 = torch.randn(12, 4, dtype=torch.float64)
    bases = orthonormal_bases(12, 4, 2, seed=4)
    radius = certified_radius(model, x0, bases, max_radius=5.0)
    labels = model(x0).argmax(1)
    for point in range(len(x0)):
        true = first_crossing_2d(model, x0[point], bases[point], int(labels[point]), reach=5.0)
        step = 5.0 / 1500
        assert radius[point] <= true + step, (point, float(radius[point]), true)
        assert radius[point] > 0  # every point is off the boundary: something is certified


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Softplus, nn.GELU])
def test_no_sampled_point_inside_the_certified_ball_changes_the_label(activation):
    """Soundness by an independent method: 4000 points uniformly in each certified ball (and
    on its sphere, where a change is likeliest) keep the label, for every activation."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 24), activation(), nn.Linear(24, 24), activation(), nn.Linear(24, 3)).double()
    x0 = torch.randn(20, 5, dtype=torch.float64)
    bases = orthonormal_bases(20, 5, 3, seed=6)
    radius = certified_radius(model, x0, bases)
    labels = model(x0).argmax(1)
    generator = torch.Generator().manual_seed(7)
    for point in range(len(x0)):
        z = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
        z = z / z.norm(dim=1, keepdim=True)
        scale = torch.cat([torch.ones(2000, dtype=torch.float64),
                           torch.rand(2000, generator=generator, dtype=torch.float64) ** (1 / 3)])
        inside = x0[point] + (radius[point] * scale[:, None] * z) @ bases[point].T
        assert (model(inside).argmax(1) == labels[point]).all(), point


def test_the_simulators_mlp_is_supported_and_other_layers_are_refused():
    from simulator.models import MLP

    assert len(network_layers(MLP(3, [8, 8], 2, activation="gelu"))) == 5
    with pytest.raises(TypeError, match="BatchNorm1d"):
        network_layers(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="Linear layer first"):
        network_layers(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
