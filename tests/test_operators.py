"""Subspaces as operators (simulator.attacks.operators): exact against dense bases, and the
structured random subspace distributed like a Haar-random one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.operators import (
    CoordinateSubset,
    DenseBasis,
    FactoredBasis,
    StructuredRandomSubspace,
    real_fourier,
    real_fourier_transpose,
)
from simulator.attacks.subspaces import (
    coordinate_subset_bases,
    coordinate_subsets,
    random_subspace_bases,
    random_subspace_kind,
    random_subspaces,
    tangent_spaces,
    tangent_subspaces,
)
from simulator.manifolds.sphere import Sphere

N, K = 23, 4  # an odd n exercises the real Fourier transform's unpaired terms


@pytest.mark.parametrize("n", [1, 2, 5, 8, 23])
def test_the_real_fourier_transform_is_orthogonal_for_any_length(n):
    eye = torch.eye(n, dtype=torch.float64)
    matrix = real_fourier(eye)
    torch.testing.assert_close(matrix @ matrix.T, eye)
    torch.testing.assert_close(real_fourier_transpose(eye), matrix.T)


def _operators():
    sphere = Sphere(dim=K, ambient_dim=N, embedding="random", embedding_seed=2)
    u = sphere.sample_chart(6, np.random.default_rng(0))
    return {
        "dense": DenseBasis(random_subspace_bases(6, N, K, seed=1, dtype=torch.float64)),
        "factored": tangent_spaces(sphere, u, dtype=torch.float64),
        "hypersurface": tangent_subspaces(sphere, u, dtype=torch.float64),
        "coordinate": coordinate_subsets(6, N, K, seed=1, dtype=torch.float64),
        "structured": StructuredRandomSubspace.draw(6, N, K, seed=1, dtype=torch.float64),
    }


@pytest.mark.parametrize("kind", ["dense", "factored", "hypersurface", "coordinate", "structured"])
def test_every_operator_applies_exactly_its_dense_orthonormal_basis(kind):
    operator = _operators()[kind]
    basis = operator.basis()
    assert basis.shape == (6, N, K)
    torch.testing.assert_close(basis.transpose(1, 2) @ basis, torch.eye(K, dtype=torch.float64).expand(6, K, K))
    generator = torch.Generator().manual_seed(3)
    v = torch.randn(6, 5, N, dtype=torch.float64, generator=generator)  # extra axes broadcast per point
    c = torch.randn(6, 5, K, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(operator.coefficients(v), torch.einsum("pnk,pan->pak", basis, v))
    torch.testing.assert_close(operator.expand(c), torch.einsum("pnk,pak->pan", basis, c))
    rows = torch.tensor([5, 0, 5, 2])  # rows name points, repeats allowed (many rays per point)
    w = v[:4, 0]
    torch.testing.assert_close(operator.project(w, rows), torch.einsum("rnk,rk->rn", basis[rows],
                                                                         torch.einsum("rnk,rn->rk", basis[rows], w)))
    torch.testing.assert_close(operator.remove(w, rows) + operator.project(w, rows), w)
    torch.testing.assert_close(operator.select(rows).basis(), basis[rows])
    torch.testing.assert_close(operator.to(dtype=torch.float32).basis(), basis.float(), atol=1e-6, rtol=0)
    inner, shared = torch.randn(4, 3, 7, dtype=torch.float64, generator=generator), v[0, :, :].repeat(2, 1)[:7]
    torch.testing.assert_close(operator.shared_energy(inner, shared, rows),
                               (inner @ shared @ basis[rows]).pow(2).sum(dim=(1, 2)))


@pytest.mark.parametrize("width", [7, 2])  # the host space (h = 5) narrower / wider than w's rows
def test_hypersurface_tangents_span_the_manifold_tangent_spaces(width):
    """Householder bases from the host normals: the same subspaces as the chart-aligned QR bases
    (equal projectors), and the same energies without any per-row basis."""
    sphere = Sphere(dim=K, ambient_dim=N, embedding="random", embedding_seed=2)
    u = sphere.sample_chart(6, np.random.default_rng(0))
    householder, factored = tangent_subspaces(sphere, u, dtype=torch.float64), tangent_spaces(sphere, u, dtype=torch.float64)
    assert householder.dim == K and householder.host_normals.shape == (6, K + 1)
    projector = householder.basis() @ householder.basis().transpose(1, 2)
    torch.testing.assert_close(projector, factored.basis() @ factored.basis().transpose(1, 2))
    generator = torch.Generator().manual_seed(4)
    inner = torch.randn(5, 3, width, dtype=torch.float64, generator=generator)
    shared = torch.randn(width, N, dtype=torch.float64, generator=generator)
    rows = torch.tensor([1, 4, 4, 0, 5])
    explicit = (inner @ shared @ factored.basis()[rows]).pow(2).sum(dim=(1, 2))
    torch.testing.assert_close(householder.shared_energy(inner, shared, rows), explicit)
    torch.testing.assert_close(factored.shared_energy(inner, shared, rows), explicit)


def test_operators_store_far_less_than_a_dense_basis():
    n, k, points = 3072, 32, 200
    dense_bytes = points * n * k * 4
    sphere = Sphere(dim=k, ambient_dim=n, embedding="random")
    u = sphere.sample_chart(points, np.random.default_rng(0))
    assert tangent_spaces(sphere, u).stored_bytes < dense_bytes / 50  # (n h + N h k) vs N n k
    assert tangent_subspaces(sphere, u).stored_bytes < dense_bytes / 100  # (n h + 2 N h) vs N n k
    assert coordinate_subsets(points, n, k, seed=0).stored_bytes < dense_bytes / 100
    assert StructuredRandomSubspace.draw(points, n, k, seed=0).stored_bytes < dense_bytes / 8


def test_the_manifold_tangent_operator_is_the_exact_tangent_basis():
    sphere = Sphere(dim=3, ambient_dim=40, embedding="random", embedding_seed=5)
    u = sphere.sample_chart(10, np.random.default_rng(1))
    np.testing.assert_allclose(tangent_spaces(sphere, u, dtype=torch.float64).basis().numpy(),
                               sphere.tangent_basis(u), atol=1e-13)
    assert isinstance(tangent_spaces(sphere, u), FactoredBasis)


def test_coordinate_subsets_are_the_index_sets_of_the_one_hot_bases():
    subsets = coordinate_subsets(5, 30, 4, seed=2)
    assert isinstance(subsets, CoordinateSubset) and subsets.indices.shape == (5, 4)
    dense = coordinate_subset_bases(5, 30, 4, seed=2)
    assert torch.equal(dense.argmax(dim=1), subsets.indices)
    assert torch.equal(coordinate_subsets(2, 30, 4, seed=2).indices, subsets.indices[:2])


def test_structured_subspaces_are_seeded_per_point():
    first = StructuredRandomSubspace.draw(6, 50, 5, seed=7, dtype=torch.float64).basis()
    torch.testing.assert_close(StructuredRandomSubspace.draw(3, 50, 5, seed=7, first_index=3,
                                                             dtype=torch.float64).basis(), first[3:])
    assert not torch.allclose(StructuredRandomSubspace.draw(6, 50, 5, seed=8, dtype=torch.float64).basis(), first)


def test_large_random_subspaces_are_structured_operators():
    assert random_subspace_kind(784, 50) == "haar" and random_subspace_kind(3072, 32) == "haar"
    assert random_subspace_kind(150528, 3500) == "structured"
    assert isinstance(random_subspaces(2, 150528, 8, seed=0, kind="structured"), StructuredRandomSubspace)
    with pytest.raises(MemoryError, match="budget"):
        random_subspaces(40, 150528, 3500, seed=0).basis()


@pytest.mark.parametrize("weight", ["spike", "flat", "gaussian"])
def test_structured_random_subspaces_give_haar_distances_on_a_linear_model(weight):
    """On f(x) = w.x + b the distance in a subspace S is |f| / ||P_S w||: compare its distribution
    over 1500 fresh subspaces per kind (two-sample Kolmogorov-Smirnov test, fixed seeds). A spike
    w is the hard case for a fast transform (one round of signs and Fourier spreads it evenly,
    which is not random); a flat w is the hard case for the signs."""
    n, k, points = 64, 6, 1500
    w = {"spike": torch.eye(n, dtype=torch.float64)[0], "flat": torch.ones(n, dtype=torch.float64) / n**0.5,
         "gaussian": torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))}[weight]
    distance = {}
    for kind in ("haar", "structured"):
        subspace = random_subspaces(points, n, k, seed=11, dtype=torch.float64, kind=kind)
        distance[kind] = 1.0 / subspace.coefficients(w.expand(points, n)).norm(dim=1).numpy()
    assert stats.ks_2samp(distance["haar"], distance["structured"]).pvalue > 0.01
    # ... and both follow the closed form: ||P_S w||^2 / ||w||^2 ~ Beta(k/2, (n-k)/2) for a Haar S
    squared = 1.0 / (distance["structured"] ** 2 * float(w.norm()) ** 2)
    assert stats.kstest(squared, stats.beta(k / 2, (n - k) / 2).cdf).pvalue > 0.01


@pytest.mark.parametrize("kind", ["factored", "coordinate", "structured"])
@pytest.mark.parametrize("mode", ["on", "off"])
def test_attacks_in_operator_subspaces_hit_the_linear_closed_form(kind, mode):
    operator = _operators()[kind]
    generator = torch.Generator().manual_seed(5)
    w = torch.randn(N, dtype=torch.float64, generator=generator)
    model = nn.Linear(N, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(N, dtype=torch.float64), w]))
        model.bias.copy_(torch.tensor([0.0, 0.5], dtype=torch.float64))
    x = 0.05 * torch.randn(6, N, dtype=torch.float64, generator=generator)
    f = (x @ w + 0.5).abs()
    projected = operator.project(w.expand(6, N)) if mode == "on" else operator.remove(w.expand(6, N))
    expected = f / projected.norm(dim=1)
    result = GreedyProjectedPGD(model, mode=mode, step_size=0.01, max_steps=100_000, refine_steps=30)(
        x, tangent_bases=operator)
    torch.testing.assert_close(result.distance, expected, rtol=1e-6, atol=0)


def test_hypersurface_energy_from_the_total_when_the_host_space_is_everything():
    """A k-sphere in R^(k+1) (E = I): the tangent energy is the total minus the normal part; the
    caller's total ||inner w||^2 replaces one product and gives the explicit basis's energy."""
    sphere = Sphere(dim=K, ambient_dim=K + 1, embedding="identity")
    u = sphere.sample_chart(4, np.random.default_rng(2))
    householder = tangent_subspaces(sphere, u, dtype=torch.float64)
    generator = torch.Generator().manual_seed(6)
    inner = torch.randn(4, 3, 6, dtype=torch.float64, generator=generator)
    shared = torch.randn(6, K + 1, dtype=torch.float64, generator=generator)
    total = (inner @ shared).pow(2).sum(dim=(1, 2))
    explicit = (inner @ shared @ householder.basis()).pow(2).sum(dim=(1, 2))
    torch.testing.assert_close(householder.shared_energy(inner, shared, total=total), explicit)
