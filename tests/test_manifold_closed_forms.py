"""Closed-form and second-method checks of the manifold families and the stretch spectra.

Each test checks numbers: the embeddings' exact points (sphere, torus, swiss roll and sine sheet
formulas), the chart Jacobians and tangent bases against the formulas written out by hand and
against a second method (Gram-Schmidt through a Cholesky factor instead of a sign-fixed QR), the
normals, the nearest points against first-order optimality and brute-force searches, the seeded
random isometry (pairwise distances kept, Q = G R^-1 with R from Cholesky), seeded sampling (its
moments against closed forms, and its draws against a plain-Python rejection sampler), the chart
boxes and the error messages, and for `simulator.geometry.stretch` the feature Jacobians of
hand-built ReLU networks (D2 W2 D1 W1) and the spectra, energies and summaries computed from an
SVD, with the chunking, the autodiff mode and the devices of the tensors it creates.

Sizes are tiny: the whole file runs in a few seconds. It is the targeted test set of the mutation
run over `simulator/manifolds/` and `simulator/geometry/stretch.py`
(docs/mutation/manifolds_stretch.md).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import simulator.manifolds as manifolds_package
from simulator.attacks.subspaces import tangent_spaces, tangent_subspaces
from simulator.geometry import stretch
from simulator.geometry.stretch import (
    GRAM_RESOLUTION,
    batched_jacobians,
    feature_jacobians,
    gram_spectrum,
    point_stretch,
    spectra,
    stretch_spectra,
)
from simulator.manifolds import ConcentricSpheres, Flat, Manifold, SineSheet, Sphere, SwissRoll, Torus
from simulator.manifolds import swiss_roll as swiss_roll_module
from simulator.manifolds.base import (
    check_dim,
    check_positive,
    cube_chart_box,
    rejection_sample,
    random_isometry,
    wrap_angle,
)
from simulator.manifolds.sphere import (
    sphere_chart_box,
    uniform_sphere_angles,
    unit_sphere_angles,
    unit_sphere_immersion,
    unit_sphere_jacobian,
)
from simulator.models import MLP

TWO_PI = 2 * math.pi


# --------------------------------------------------------------------------- helpers


def gram_schmidt_basis(jacobian: np.ndarray) -> np.ndarray:
    """Orthonormal basis [..., n, k] of the columns of `jacobian` by Gram-Schmidt, written as
    J L^-T with L L^T = J^T J (Cholesky): the unique QR factor whose R has a positive diagonal,
    so column i has a positive dot product with column i of J."""
    gram = np.swapaxes(jacobian, -1, -2) @ jacobian
    lower = np.linalg.cholesky(gram)
    return np.swapaxes(np.linalg.solve(lower, np.swapaxes(jacobian, -1, -2)), -1, -2)


def fd_jacobian(function, u: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences d function / du [..., n, k] of a map [..., k] -> [..., n]."""
    columns = []
    for i in range(u.shape[-1]):
        shift = np.zeros(u.shape[-1])
        shift[i] = step
        columns.append((function(u + shift) - function(u - shift)) / (2 * step))
    return np.stack(columns, axis=-1)


def assert_same_direction(got, expected, atol):
    """Unit vectors [..., n] equal up to sign, to atol per entry (|<a, b>| = 1 alone would only
    see direction errors above sqrt(atol))."""
    got, expected = np.asarray(got), np.asarray(expected)
    sign = np.where(np.sum(got * expected, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    np.testing.assert_allclose(sign * got, expected, atol=atol)


def projector(basis: np.ndarray) -> np.ndarray:
    """U U^T [..., n, n] of bases [..., n, k]."""
    return basis @ np.swapaxes(basis, -1, -2)


def pairwise(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)


def check_tangent_machinery(manifold: Manifold, u: np.ndarray, host_jacobian: np.ndarray, host_normal: np.ndarray):
    """The ambient Jacobian, tangent basis, normal and projections of `manifold` at u, against the
    host-space Jacobian and normal written out by hand."""
    embedding = manifold.embedding_matrix
    jacobian = embedding @ host_jacobian
    np.testing.assert_allclose(manifold.jacobian(u), jacobian, atol=1e-12)
    np.testing.assert_allclose(manifold.jacobian(u), fd_jacobian(manifold.immersion, u), atol=2e-8)
    expected_basis = gram_schmidt_basis(jacobian)
    np.testing.assert_allclose(manifold.tangent_basis(u), expected_basis, atol=1e-10)
    np.testing.assert_allclose(manifold.host_tangent_basis(u), gram_schmidt_basis(host_jacobian), atol=1e-10)
    np.testing.assert_allclose(manifold.host_unit_normal(u), host_normal, atol=1e-12)
    np.testing.assert_allclose(manifold.unit_normal(u), host_normal @ embedding.T, atol=1e-12)
    # P_T v = E (y - (nu . y) nu) with y = E^T v (the projection without a basis).
    v = np.random.default_rng(0).standard_normal(u.shape[:-1] + (manifold.ambient_dim,))
    y = v @ embedding
    tangent = (y - np.sum(host_normal * y, axis=-1, keepdims=True) * host_normal) @ embedding.T
    np.testing.assert_allclose(manifold.to_tangent(v, u), tangent, atol=1e-12)
    np.testing.assert_allclose(manifold.to_normal(v, u), v - tangent, atol=1e-12)
    np.testing.assert_allclose(projector(manifold.tangent_basis(u)), projector(expected_basis), atol=1e-10)
    # One point alone (u of shape (k,)) and a (1, N, k) batch give the same rows.
    for method in (manifold.immersion, manifold.jacobian, manifold.tangent_basis, manifold.unit_normal,
                   manifold.host_unit_normal, manifold.host_tangent_basis):
        batched = method(u)
        np.testing.assert_allclose(method(u[0]), batched[0], atol=1e-13)
        np.testing.assert_allclose(method(u[None])[0], batched, atol=1e-13)
    np.testing.assert_allclose(manifold.to_tangent(v[0], u[0]), tangent[0], atol=1e-12)


# --------------------------------------------------------------------------- base.py helpers


def test_check_positive_accepts_positive_numbers_and_names_the_field_otherwise():
    """check_positive: a positive finite number comes back as a float; 0, negatives, inf and NaN
    raise a ValueError that names the field and the value."""
    assert check_positive("radius", 2) == 2.0 and type(check_positive("radius", 2)) is float
    assert check_positive("radius", 1e-300) == 1e-300
    for bad, shown in [(0, "0.0"), (-1.5, "-1.5"), (math.inf, "inf"), (math.nan, "nan"), (-math.inf, "-inf")]:
        with pytest.raises(ValueError, match=re.escape(f"radius: must be a positive number, got {shown}")):
            check_positive("radius", bad)


def test_check_dim_accepts_integers_at_or_above_the_minimum():
    """check_dim: ints (numpy ints too) >= minimum come back as int; bools, floats, strings and
    too-small values raise with the field, the value and the minimum in the message."""
    assert check_dim("dim", 1) == 1
    assert check_dim("dim", np.int64(3)) == 3 and type(check_dim("dim", np.int64(3))) is int
    assert check_dim("host_dim", 4, minimum=4) == 4
    with pytest.raises(ValueError, match=re.escape("host_dim: must be at least 4, got 3")):
        check_dim("host_dim", 3, minimum=4)
    with pytest.raises(ValueError, match=re.escape("dim: must be at least 1, got 0")):
        check_dim("dim", 0)
    for bad in (True, False):
        with pytest.raises(ValueError, match=re.escape(f"dim: must be an integer, got {bad!r}")):
            check_dim("dim", bad)
    for bad in (1.5, 2.0, "3"):
        with pytest.raises(ValueError, match=re.escape(f"dim: must be an integer, got {bad!r}")):
            check_dim("dim", bad)


def test_wrap_angle_maps_into_zero_to_two_pi():
    """wrap_angle: angle mod 2 pi, with the rounding case mod(-tiny) = 2 pi mapped to 0."""
    angles = np.array([0.0, 1.0, -1.0, TWO_PI, 7.0, -7.0, -1e-300, -1e-17, 3 * TWO_PI + 0.5])
    expected = np.array([0.0, 1.0, TWO_PI - 1.0, 0.0, 7.0 - TWO_PI, 2 * TWO_PI - 7.0, 0.0, 0.0, 0.5])
    wrapped = wrap_angle(angles)
    np.testing.assert_allclose(wrapped, expected, atol=1e-12)
    assert np.all(wrapped >= 0) and np.all(wrapped < TWO_PI)
    assert wrapped[6] == 0.0 and wrapped[7] == 0.0  # exactly 0, not 2 pi


def test_random_isometry_is_gaussian_gram_schmidt_and_keeps_distances():
    """random_isometry(n, h, seed) = Q with G = Q R, G the seed's (n, h) standard normal draw and
    diag(R) > 0: Q = G L^-T with L the Cholesky factor of G^T G. Its columns are orthonormal and
    it keeps pairwise distances of host points."""
    # Square cases too: the last diagonal entry of R is |N(0, 1)|-distributed, often below 1.
    for n, h, seed in [(7, 3, 0), (5, 5, 4), (9, 2, 11)] + [(3, 3, seed) for seed in range(6)]:
        gaussian = np.random.default_rng(seed).standard_normal((n, h))
        q = random_isometry(n, h, seed)
        assert q.shape == (n, h)
        np.testing.assert_allclose(q, gram_schmidt_basis(gaussian), atol=1e-12)
        np.testing.assert_allclose(q.T @ q, np.eye(h), atol=1e-12)
        assert np.all(np.diag(q.T @ gaussian) > 0)  # diag(R) = Q^T G > 0
        y = np.random.default_rng(seed + 1).standard_normal((6, h))
        np.testing.assert_allclose(pairwise(y @ q.T), pairwise(y), atol=1e-12)
    np.testing.assert_array_equal(random_isometry(6, 3, 2), random_isometry(6, 3, 2))
    assert np.abs(random_isometry(6, 3, 2) - random_isometry(6, 3, 3)).max() > 0.1


def test_rejection_sample_follows_the_density():
    """rejection_sample on [0, 1] x [2, 5] with density u_0 (bound 1): u_0 has the density 2 u,
    mean 2/3 and second moment 1/2; u_1 is uniform (mean 3.5, variance 3/4). A loose bound (4)
    gives the same distribution; exactly n_samples rows come back, all inside the box."""
    def density(u):
        return u[:, 0]

    for bound in (1.0, 4.0):
        u = rejection_sample(20000, np.random.default_rng(1), [0.0, 2.0], [1.0, 5.0], density, bound)
        assert u.shape == (20000, 2)
        assert u[:, 0].min() >= 0 and u[:, 0].max() <= 1 and u[:, 1].min() >= 2 and u[:, 1].max() <= 5
        assert u[:, 0].mean() == pytest.approx(2 / 3, abs=0.008)
        assert np.mean(u[:, 0] ** 2) == pytest.approx(0.5, abs=0.008)
        assert u[:, 1].mean() == pytest.approx(3.5, abs=0.03)
        assert u[:, 1].var() == pytest.approx(0.75, abs=0.03)
    # A low acceptance rate (about 1 %) needs many rounds and still returns exactly n_samples.
    rare = rejection_sample(300, np.random.default_rng(2), [0.0], [1.0], lambda u: 0.01 + 0 * u[:, 0], 1.0)
    assert rare.shape == (300, 1) and len(np.unique(rare)) == 300
    assert abs(rare.mean() - 0.5) < 0.06
    empty = rejection_sample(0, np.random.default_rng(2), [0.0, 1.0], [1.0, 2.0], density, 1.0)
    assert empty.shape == (0, 2)


def test_rejection_sample_stream_is_pinned():
    """Golden stream: the samples of a seed are the first n accepted of batches of 2 m + 16
    uniform proposals (m still missing), each followed by its acceptance uniforms. Every scene's
    data is a function of its seed, so a change of this stream moves every published number."""
    def reference(n_samples, rng, low, high, density, bound):
        low, high = np.asarray(low, float), np.asarray(high, float)
        kept = []
        while len(kept) < n_samples:
            proposals = rng.uniform(low, high, size=(2 * (n_samples - len(kept)) + 16, low.size))
            uniforms = rng.uniform(0.0, bound, size=len(proposals))
            kept.extend(p for p, a in zip(proposals, uniforms) if a < density(p[None])[0])
        return np.array(kept[:n_samples])

    def density(u):
        return u[:, 0] * u[:, 1]

    for seed in range(8):
        for n_samples in (1, 7, 40):
            rng, reference_rng = np.random.default_rng(seed), np.random.default_rng(seed)
            got = rejection_sample(n_samples, rng, [0.0, 0.0], [1.0, 2.0], density, 2.0)
            np.testing.assert_array_equal(got, reference(n_samples, reference_rng, [0.0, 0.0], [1.0, 2.0], density,
                                                         2.0))
            # The generator is left where the reference leaves it: no batch is drawn after the last
            # one that completed the count (later draws from it, e.g. labels, stay put).
            assert rng.random() == reference_rng.random()
    rng = np.random.default_rng(3)
    rejection_sample(0, rng, [0.0], [1.0], density, 2.0)
    assert rng.random() == np.random.default_rng(3).random()  # nothing drawn for no samples


def test_cube_and_sphere_chart_boxes():
    """cube_chart_box(k, e) = [-e, e]^k, none periodic; sphere_chart_box(k): polar angles in
    [0, pi], the last (azimuth) in [0, 2 pi] and periodic."""
    low, high, periodic = cube_chart_box(3, 2.5)
    np.testing.assert_array_equal(low, [-2.5, -2.5, -2.5])
    np.testing.assert_array_equal(high, [2.5, 2.5, 2.5])
    assert periodic == (False, False, False)
    low, high, periodic = sphere_chart_box(3)
    np.testing.assert_array_equal(low, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(high, [math.pi, math.pi, TWO_PI])
    assert periodic == (False, False, True)
    low, high, periodic = sphere_chart_box(1)
    np.testing.assert_array_equal(low, [0.0])
    np.testing.assert_array_equal(high, [TWO_PI])
    assert periodic == (True,)


def test_manifold_constructor_dimensions_and_embeddings():
    """n defaults to h; n = h is allowed, n < h names both; "identity" embeds as the first h
    coordinates (eye(n, h)); "random" is the seeded isometry; the seed is stored as an int."""
    sphere = Sphere(dim=2)
    assert (sphere.dim, sphere.host_dim, sphere.ambient_dim) == (2, 3, 3)
    np.testing.assert_array_equal(sphere.embedding_matrix, random_isometry(3, 3, 0))
    exact = Sphere(dim=2, ambient_dim=3, embedding="identity")
    np.testing.assert_array_equal(exact.embedding_matrix, np.eye(3))
    wide = Torus(ambient_dim=5, embedding="identity")
    np.testing.assert_array_equal(wide.embedding_matrix, np.eye(5, 3))
    seeded = SwissRoll(ambient_dim=6, embedding_seed=np.int64(7))
    assert seeded.embedding_seed == 7 and type(seeded.embedding_seed) is int
    np.testing.assert_array_equal(seeded.embedding_matrix, random_isometry(6, 3, 7))
    assert seeded.embedding == "random"
    with pytest.raises(ValueError, match=re.escape(
            "ambient_dim: 2 is smaller than the host dimension 3 of the sphere family; use ambient_dim >= 3")):
        Sphere(dim=2, ambient_dim=2)
    with pytest.raises(ValueError, match=re.escape(
            "ambient_dim: 2 is smaller than the host dimension 3 of the torus family; use ambient_dim >= 3")):
        Torus(ambient_dim=2)
    with pytest.raises(ValueError, match=re.escape("ambient_dim: must be at least 1, got 0")):
        Sphere(dim=1, ambient_dim=0)
    with pytest.raises(ValueError, match=re.escape(
            "embedding: must be one of ('random', 'identity'), got 'haar'")):
        Flat(dim=1, embedding="haar")

    class Nameless(Flat):
        family = ""

    with pytest.raises(ValueError, match="host dimension 2 of the Nameless family"):
        Nameless(dim=1, ambient_dim=1)


class _Segment(Manifold):
    """The segment u -> (u, 0) of R^2 through the base class alone (no family-level checks)."""

    family = "segment"

    def __init__(self, dim=1, host_dim=2, **kwargs):
        super().__init__(dim, host_dim, **kwargs)

    def _host_immersion(self, u):
        return np.concatenate([u, np.zeros_like(u)], axis=-1)

    def _host_jacobian(self, u):
        return np.broadcast_to(np.array([[1.0], [0.0]]), u.shape[:-1] + (2, 1))

    def _host_normal(self, u):
        return np.broadcast_to(np.array([0.0, 1.0]), u.shape[:-1] + (2,))

    def _host_chart(self, y):
        return y[..., :1]

    def sample_chart(self, n_samples, rng):
        return rng.uniform(-1, 1, (n_samples, 1))


def test_base_class_defaults_and_checks():
    """Manifold's own defaults (n = h, a random embedding seeded 0) and checks (dim >= 1,
    host_dim >= dim + 1, each error starting with its field name), seen through a subclass that
    passes only dim and host_dim."""
    segment = _Segment()
    assert (segment.dim, segment.host_dim, segment.ambient_dim) == (1, 2, 2)
    assert (segment.embedding, segment.embedding_seed) == ("random", 0)
    np.testing.assert_array_equal(segment.embedding_matrix, random_isometry(2, 2, 0))
    assert _Segment(host_dim=3).host_dim == 3
    with pytest.raises(ValueError, match="^" + re.escape("dim: must be at least 1, got 0") + "$"):
        _Segment(dim=0)
    with pytest.raises(ValueError, match="^" + re.escape("host_dim: must be at least 2, got 1") + "$"):
        _Segment(host_dim=1)
    with pytest.raises(ValueError, match="^" + re.escape("host_dim: must be at least 3, got 2") + "$"):
        _Segment(dim=2, host_dim=2)
    with pytest.raises(ValueError, match="^" + re.escape("ambient_dim: must be at least 1, got 0") + "$"):
        _Segment(ambient_dim=0)
    assert repr(_Segment(ambient_dim=3, embedding_seed=2)) == \
        "_Segment(ambient_dim=3, embedding='random', embedding_seed=2)"


def test_shape_errors_name_the_expected_shape():
    """Chart coordinates must end in k, points in n; scalars are refused too."""
    torus = Torus(ambient_dim=4)
    for bad in (np.zeros((2, 3)), 1.0):
        with pytest.raises(ValueError, match=re.escape("chart coordinates must have shape [..., 2], got ")):
            torus.immersion(bad)
    with pytest.raises(ValueError, match=re.escape("points must have shape [..., 4], got (2, 3)")):
        torus.chart(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=re.escape("points must have shape [..., 4], got ()")):
        torus.belongs(0.0)
    # Integer input is accepted and treated as float.
    np.testing.assert_allclose(torus.immersion(np.array([0, 0])), torus.immersion([0.0, 0.0]))
    np.testing.assert_allclose(torus.projection(np.array([[2, 0, 0, 0]])), torus.projection([[2.0, 0, 0, 0]]))


@pytest.mark.parametrize("dtype", [np.float32, np.longdouble, np.int64])
def test_inputs_are_computed_in_float64(dtype):
    """Chart points, ambient points and vectors of any real dtype are converted to float64
    first: the outputs are float64 (torch takes no longdouble) and equal the float64 computation
    of the converted input (float32 angles are not evaluated in float32)."""
    sphere = Sphere(dim=2, radius=1.3, ambient_dim=4, embedding_seed=1)
    u = np.array([[0.7, 1.9], [2.0, 4.0]]).astype(dtype)
    x = (3 * np.random.default_rng(0).standard_normal((2, 4))).astype(dtype)
    u64, x64 = u.astype(np.float64), x.astype(np.float64)
    for got, expected in [
        (sphere.immersion(u), sphere.immersion(u64)),
        (sphere.jacobian(u), sphere.jacobian(u64)),
        (sphere.tangent_basis(u), sphere.tangent_basis(u64)),
        (sphere.unit_normal(u), sphere.unit_normal(u64)),
        (sphere.to_tangent(x, u), sphere.to_tangent(x64, u64)),
        (sphere.to_normal(x, u), sphere.to_normal(x64, u64)),
        (sphere.chart(x), sphere.chart(x64)),
        (sphere.projection(x), sphere.projection(x64)),
    ]:
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)


def test_belongs_uses_the_euclidean_distance_with_an_inclusive_tolerance():
    """belongs(x, atol) is |x - projection(x)| <= atol: on the flat z = 0 a point at height d
    belongs iff d <= atol (the default atol is 1e-6)."""
    flat = Flat(dim=2, ambient_dim=4, embedding="identity")
    heights = np.array([0.0, 2.0**-21, 2.0**-19, 0.25, 0.5])
    points = np.zeros((5, 4))
    points[:, 0], points[:, 2] = 0.3, heights
    np.testing.assert_array_equal(flat.belongs(points), [True, True, False, False, False])
    np.testing.assert_array_equal(flat.belongs(points, atol=0.25), [True, True, True, True, False])
    # Off the host space the distance is Euclidean too: 0.3 along e_3 and 0.4 along e_4 is 0.5 away.
    assert flat.belongs([[0.0, 0.0, 0.3, 0.4]], atol=0.5)[0]
    assert not flat.belongs([[0.0, 0.0, 0.3, 0.4]], atol=0.4999)[0]
    assert flat.belongs(np.zeros((2, 3, 4))).shape == (2, 3)


def test_chart_grid_values_and_order():
    """chart_grid(r): r points per axis, first coordinate slowest; closed axes include both ends,
    periodic ones leave out the upper end."""
    torus = Torus()
    grid = torus.chart_grid(4)
    axis = np.array([0.0, 0.5, 1.0, 1.5]) * math.pi
    np.testing.assert_allclose(grid, np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2))
    np.testing.assert_allclose(grid[:5], [[0, 0], [0, 0.5 * math.pi], [0, math.pi], [0, 1.5 * math.pi],
                                          [0.5 * math.pi, 0]])
    sphere = Sphere(dim=2)
    grid = sphere.chart_grid(3)
    np.testing.assert_allclose(grid[:, 0], np.repeat([0.0, math.pi / 2, math.pi], 3))
    np.testing.assert_allclose(grid[:, 1], np.tile([0.0, TWO_PI / 3, 2 * TWO_PI / 3], 3))
    flat = Flat(dim=1, extent=2.0)
    np.testing.assert_allclose(flat.chart_grid(5), [[-2.0], [-1.0], [0.0], [1.0], [2.0]])
    assert torus.chart_grid(1).shape == (1, 2)
    with pytest.raises(ValueError, match=re.escape("resolution: must be at least 1, got 0")):
        torus.chart_grid(0)


@pytest.mark.parametrize("make", [
    lambda seed: Flat(dim=2, ambient_dim=6, embedding_seed=seed),
    lambda seed: Sphere(dim=2, ambient_dim=6, embedding_seed=seed),
    lambda seed: ConcentricSpheres(dim=2, ambient_dim=6, embedding_seed=seed),
    lambda seed: Torus(ambient_dim=6, embedding_seed=seed),
    lambda seed: SineSheet(dim=2, ambient_dim=6, embedding_seed=seed),
    lambda seed: SwissRoll(ambient_dim=6, embedding_seed=seed),
], ids=["flat", "sphere", "concentric_spheres", "torus", "sine_sheet", "swiss_roll"])
def test_every_family_embeds_with_its_own_seed(make):
    """Each family hands `embedding_seed` on to the base class: its embedding matrix is exactly
    `random_isometry(n, h, seed)` for that seed, and the same chart point lands elsewhere under
    another seed (a family that dropped the seed would embed every seed with seed 0)."""
    seven, zero = make(7), make(0)
    np.testing.assert_array_equal(seven.embedding_matrix,
                                  random_isometry(seven.ambient_dim, seven.host_dim, 7))
    u = seven.sample_chart(3, np.random.default_rng(0))
    assert np.linalg.norm(seven.immersion(u) - zero.immersion(u), axis=1).min() > 1e-3


@pytest.mark.parametrize("manifold", [
    Flat(dim=2, ambient_dim=5, embedding_seed=1),
    Sphere(dim=2, ambient_dim=5, embedding_seed=1),
    ConcentricSpheres(dim=2, ambient_dim=5, embedding_seed=1),
    Torus(ambient_dim=5, embedding_seed=1),
    SineSheet(dim=2, ambient_dim=5, embedding_seed=1),
    SwissRoll(ambient_dim=5, embedding_seed=1),
], ids=lambda manifold: manifold.family)
def test_chart_inverts_immersion_for_one_point_and_for_a_grid_of_points(manifold):
    """chart(immersion(u)) = u for inputs [..., n] of any batch shape: a single point (n,) and a
    (2, 3) grid of points (2, 3, n), each equal to the same points charted as a flat (6, n)
    batch (an axis counted from the front instead of from the back breaks both)."""
    u = manifold.sample_chart(6, np.random.default_rng(0))
    flat = manifold.chart(manifold.immersion(u))
    np.testing.assert_allclose(flat, u, atol=1e-9)
    grid = manifold.chart(manifold.immersion(u.reshape(2, 3, manifold.dim)))
    assert grid.shape == (2, 3, manifold.dim)
    np.testing.assert_allclose(grid.reshape(6, manifold.dim), flat, atol=1e-12)
    single = manifold.chart(manifold.immersion(u[4]))
    assert single.shape == (manifold.dim,)
    np.testing.assert_allclose(single, flat[4], atol=1e-12)


def test_reprs_name_every_parameter():
    """__repr__: the family's own parameters, then ambient_dim, embedding and embedding_seed."""
    assert repr(Flat(dim=2, extent=1.5, ambient_dim=4, embedding_seed=3)) == \
        "Flat(dim=2, extent=1.5, ambient_dim=4, embedding='random', embedding_seed=3)"
    assert repr(Flat(dim=1, ambient_dim=2, embedding="identity", offset=[0.0, 0.5])) == \
        "Flat(dim=1, extent=1.0, offset=[0.0, 0.5], ambient_dim=2, embedding='identity', embedding_seed=0)"
    assert repr(Sphere(dim=3, radius=2.0)) == \
        "Sphere(dim=3, radius=2.0, ambient_dim=4, embedding='random', embedding_seed=0)"
    assert repr(ConcentricSpheres(dim=1, inner_radius=1.0, outer_radius=2.0, ambient_dim=3)) == \
        "ConcentricSpheres(dim=1, inner_radius=1.0, outer_radius=2.0, ambient_dim=3, embedding='random', " \
        "embedding_seed=0)"
    assert repr(SineSheet(dim=1, amplitude=0.5, frequency=3.0, extent=2.0)) == \
        "SineSheet(dim=1, amplitude=0.5, frequency=3.0, extent=2.0, ambient_dim=2, embedding='random', " \
        "embedding_seed=0)"
    assert repr(SwissRoll(t_min=1.0, t_max=4.0, width=3.0, scale=0.5)) == \
        "SwissRoll(t_min=1.0, t_max=4.0, width=3.0, scale=0.5, ambient_dim=3, embedding='random', embedding_seed=0)"
    assert repr(Torus(major_radius=2.0, minor_radius=0.5)) == \
        "Torus(major_radius=2.0, minor_radius=0.5, ambient_dim=3, embedding='random', embedding_seed=0)"


def test_package_registry_and_exports():
    """The family registry maps each class's `family` tag to the class; __all__ lists the classes."""
    assert manifolds_package.MANIFOLD_FAMILIES == {
        "flat": Flat, "sphere": Sphere, "torus": Torus, "swiss_roll": SwissRoll, "sine_sheet": SineSheet,
        "concentric_spheres": ConcentricSpheres}
    assert sorted(manifolds_package.__all__) == sorted(
        ["MANIFOLD_FAMILIES", "ConcentricSpheres", "Flat", "Manifold", "SineSheet", "Sphere", "SwissRoll", "Torus"])
    for name in manifolds_package.__all__:
        assert hasattr(manifolds_package, name)
    assert Manifold.family == "" and Manifold.n_components == 1


def test_component_is_zero_for_one_piece_families():
    """component(u) is 0 for every family with one connected piece, with u's leading shape."""
    torus = Torus()
    component = torus.component(np.zeros((2, 3, 2)))
    assert component.shape == (2, 3) and component.dtype.kind == "i" and not component.any()


# --------------------------------------------------------------------------- flat


def test_flat_points_basis_and_nearest_points_with_an_offset():
    """Flat: phi(u) = E (u, 0) + c; Jacobian E[:, :k]; normal E e_{k+1}; chart(x) = first k host
    coordinates of x - c; the distance to it is the norm of the rest."""
    c = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    flat = Flat(dim=2, ambient_dim=5, embedding_seed=3, offset=c)
    embedding = flat.embedding_matrix
    u = np.array([[0.3, -0.7], [1.5, 2.0]])
    np.testing.assert_allclose(flat.immersion(u), u @ embedding[:, :2].T + c, atol=1e-12)
    np.testing.assert_allclose(flat.host_immersion(u), [[0.3, -0.7, 0.0], [1.5, 2.0, 0.0]])
    np.testing.assert_array_equal(flat.ambient_offset, c)
    check_tangent_machinery(flat, u, np.broadcast_to(np.eye(3, 2), (2, 3, 2)), np.array([[0, 0, 1.0]] * 2))
    x = np.random.default_rng(0).standard_normal((10, 5)) * 2
    host = (x - c) @ embedding
    np.testing.assert_allclose(flat.chart(x), host[:, :2], atol=1e-12)
    np.testing.assert_allclose(flat.projection(x), host[:, :2] @ embedding[:, :2].T + c, atol=1e-12)
    distance = np.sqrt(np.sum((x - c) ** 2, axis=1) - np.sum(host[:, :2] ** 2, axis=1))
    np.testing.assert_allclose(np.linalg.norm(x - flat.projection(x), axis=1), distance, atol=1e-10)
    plain = Flat(dim=2, ambient_dim=5, embedding_seed=3)
    assert plain.offset is None and plain.ambient_offset is None
    np.testing.assert_allclose(plain.immersion(u), u @ embedding[:, :2].T, atol=1e-12)
    np.testing.assert_allclose(plain.chart(x), (x @ embedding)[:, :2], atol=1e-12)
    # The Jacobian may be written to without touching later calls (it is a copy).
    jacobian = flat._host_jacobian(u)
    jacobian[...] = 7.0
    np.testing.assert_array_equal(flat._host_jacobian(u)[0], np.eye(3, 2))
    # The chart is a copy as well.
    y = np.array([[1.0, 2.0, 3.0]])
    chart = flat._host_chart(y)
    chart[...] = 0.0
    np.testing.assert_array_equal(y, [[1.0, 2.0, 3.0]])


def test_flat_offset_is_validated():
    """An offset must be n finite numbers; the message names n, the count and the shape, or the
    non-finite entries."""
    with pytest.raises(ValueError, match=re.escape(
            "offset: must be 3 finite numbers, one per ambient coordinate (a point of R^3); "
            "got 2 numbers of shape (2,)")):
        Flat(dim=1, ambient_dim=3, offset=[1.0, 2.0])
    with pytest.raises(ValueError, match=re.escape("got 3 numbers of shape (1, 3)")):
        Flat(dim=1, ambient_dim=3, offset=[[1.0, 2.0, 3.0]])
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=re.escape(
                "offset: must be 3 finite numbers, one per ambient coordinate (a point of R^3); "
                "got inf or NaN among them")):
            Flat(dim=1, ambient_dim=3, offset=[1.0, bad, 0.0])
    flat = Flat(dim=1, ambient_dim=3, offset=np.array([1, 2, 3]))
    assert flat.offset.dtype == np.float64


def test_flat_sampling_is_uniform_on_the_box():
    """Flat.sample_chart: uniform on [-e, e]^k: mean 0, variance e^2 / 3, inside the box."""
    flat = Flat(dim=2, extent=3.0)
    np.testing.assert_array_equal(flat.chart_low, [-3.0, -3.0])
    np.testing.assert_array_equal(flat.chart_high, [3.0, 3.0])
    assert flat.periodic == (False, False) and flat.extent == 3.0
    u = flat.sample_chart(20000, np.random.default_rng(0))
    assert u.shape == (20000, 2) and np.abs(u).max() <= 3.0 and np.abs(u).max() > 2.99
    np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=0.06)
    np.testing.assert_allclose(u.var(axis=0), 3.0, rtol=0.03)
    np.testing.assert_array_equal(u, np.random.default_rng(0).uniform(-3.0, 3.0, size=(20000, 2)))


# --------------------------------------------------------------------------- sphere


def test_unit_sphere_immersion_and_jacobian_by_hand():
    """Hyperspherical coordinates written out for k = 1, 2, 3 (points and Jacobian columns)."""
    a, b, c = 0.7, 1.9, 4.0
    np.testing.assert_allclose(unit_sphere_immersion(np.array([c])), [math.cos(c), math.sin(c)], atol=1e-15)
    np.testing.assert_allclose(unit_sphere_jacobian(np.array([c])), [[-math.sin(c)], [math.cos(c)]], atol=1e-15)
    sa, ca, sb, cb, sc, cc = math.sin(a), math.cos(a), math.sin(b), math.cos(b), math.sin(c), math.cos(c)
    np.testing.assert_allclose(unit_sphere_immersion(np.array([a, b])), [ca, sa * cb, sa * sb], atol=1e-15)
    np.testing.assert_allclose(unit_sphere_jacobian(np.array([a, b])),
                               [[-sa, 0.0], [ca * cb, -sa * sb], [ca * sb, sa * cb]], atol=1e-15)
    np.testing.assert_allclose(unit_sphere_immersion(np.array([a, b, c])),
                               [ca, sa * cb, sa * sb * cc, sa * sb * sc], atol=1e-15)
    np.testing.assert_allclose(unit_sphere_jacobian(np.array([a, b, c])), [
        [-sa, 0.0, 0.0],
        [ca * cb, -sa * sb, 0.0],
        [ca * sb * cc, sa * cb * cc, -sa * sb * sc],
        [ca * sb * sc, sa * cb * sc, sa * sb * cc],
    ], atol=1e-15)
    # Batched over leading dimensions, and equal to central differences.
    phi = np.random.default_rng(0).uniform(0.2, 2.9, (2, 3, 4))
    np.testing.assert_allclose(unit_sphere_jacobian(phi), fd_jacobian(unit_sphere_immersion, phi), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(unit_sphere_immersion(phi), axis=-1), 1.0, atol=1e-15)


def test_unit_sphere_angles_by_hand():
    """Angles of hand-picked directions (any scale): poles, the azimuth's wrap into [0, 2 pi),
    y = 0 giving the angles of e_1, and (1, 1, 1, 1) with polar angles pi/3 and atan(sqrt 2)."""
    cases = [
        ([2.0, 0.0, 0.0], [0.0, 0.0]),
        ([-1.0, 0.0, 0.0], [math.pi, 0.0]),
        ([0.0, 0.0, 3.0], [math.pi / 2, math.pi / 2]),
        ([0.0, 0.0, -1.0], [math.pi / 2, 1.5 * math.pi]),
        ([0.0, -5.0, 0.0], [math.pi / 2, math.pi]),
        ([0.0, 0.0, 0.0], [0.0, 0.0]),
        ([1.0, 1.0, 1.0, 1.0], [math.pi / 3, math.atan(math.sqrt(2)), math.pi / 4]),
        ([0.0, 0.0, 1.0, -1.0], [math.pi / 2, math.pi / 2, 1.75 * math.pi]),
        ([-1.0, -1.0], [1.25 * math.pi]),
        ([3.0, 0.0], [0.0]),
    ]
    for y, angles in cases:
        np.testing.assert_allclose(unit_sphere_angles(np.array(y)), angles, atol=1e-15, err_msg=str(y))
    # Round trip away from the poles, batched, and independent of the scale.
    phi = np.random.default_rng(1).uniform([0.1, 0.1, 0.0], [3.0, 3.0, 6.28], (2, 5, 3))
    np.testing.assert_allclose(unit_sphere_angles(4.2 * unit_sphere_immersion(phi)), phi, atol=1e-12)


def test_uniform_sphere_angles_are_uniform_and_seeded():
    """Normalised Gaussians are uniform on S^k: the points' mean is 0 and E[x x^T] = I / (k + 1);
    for k = 2, cos(phi_1) is uniform on [-1, 1] (mean 0, E[cos^2] = 1/3), phi_2 uniform on [0, 2 pi).
    The same seed gives the same angles."""
    angles = uniform_sphere_angles(20000, 2, np.random.default_rng(3))
    assert angles.shape == (20000, 2)
    x = unit_sphere_immersion(angles)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.015)
    np.testing.assert_allclose(x.T @ x / len(x), np.eye(3) / 3, atol=0.01)
    assert np.mean(np.cos(angles[:, 0]) ** 2) == pytest.approx(1 / 3, abs=0.01)
    assert angles[:, 1].mean() == pytest.approx(math.pi, abs=0.05)
    assert angles[:, 1].min() >= 0 and angles[:, 1].max() < TWO_PI
    np.testing.assert_array_equal(angles, uniform_sphere_angles(20000, 2, np.random.default_rng(3)))
    np.testing.assert_allclose(angles[:5], unit_sphere_angles(np.random.default_rng(3).standard_normal((5, 3))))
    circle = uniform_sphere_angles(4000, 1, np.random.default_rng(4))
    assert circle.shape == (4000, 1) and np.mean(np.cos(circle)) == pytest.approx(0, abs=0.04)


def test_sphere_points_normals_and_nearest_points():
    """Sphere of radius r: phi(u) = r (hyperspherical point), Jacobian r x the unit one, outward
    normal x / r, tangent basis by Gram-Schmidt; the nearest point of x is r E y / |y| with
    y = E^T x, at distance sqrt(|x|^2 - |y|^2 + (|y| - r)^2)."""
    sphere = Sphere(dim=2, radius=1.7, ambient_dim=5, embedding_seed=2)
    assert sphere.radius == 1.7
    np.testing.assert_array_equal(sphere.chart_low, [0.0, 0.0])
    np.testing.assert_array_equal(sphere.chart_high, [math.pi, TWO_PI])
    assert sphere.periodic == (False, True)
    u = np.array([[0.7, 1.9], [2.5, 5.5], [1.2, 0.1]])
    host = 1.7 * unit_sphere_immersion(u)
    np.testing.assert_allclose(sphere.host_immersion(u), host, atol=1e-15)
    np.testing.assert_allclose(sphere.immersion(u), host @ sphere.embedding_matrix.T, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(sphere.immersion(u), axis=1), 1.7, atol=1e-12)
    check_tangent_machinery(sphere, u, 1.7 * unit_sphere_jacobian(u), unit_sphere_immersion(u))
    x = np.random.default_rng(5).standard_normal((20, 5))
    y = x @ sphere.embedding_matrix
    norm_y = np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(sphere.chart(x), unit_sphere_angles(y), atol=1e-12)
    np.testing.assert_allclose(sphere.projection(x), 1.7 * (y / norm_y[:, None]) @ sphere.embedding_matrix.T,
                               atol=1e-12)
    distance = np.sqrt(np.sum(x**2, axis=1) - norm_y**2 + (norm_y - 1.7) ** 2)
    np.testing.assert_allclose(np.linalg.norm(x - sphere.projection(x), axis=1), distance, atol=1e-12)
    samples = sphere.sample_chart(2000, np.random.default_rng(6))
    np.testing.assert_array_equal(samples, uniform_sphere_angles(2000, 2, np.random.default_rng(6)))


def test_circle_k1_closed_forms():
    """k = 1: the circle (r cos t, r sin t), tangent (-sin t, cos t), normal (cos t, sin t)."""
    circle = Sphere(dim=1, radius=2.0, embedding="identity")
    t = np.array([[0.3], [2.0], [5.0]])
    c, s = np.cos(t[:, 0]), np.sin(t[:, 0])
    np.testing.assert_allclose(circle.immersion(t), 2.0 * np.stack([c, s], 1), atol=1e-15)
    check_tangent_machinery(circle, t, 2.0 * np.stack([-s, c], 1)[..., None], np.stack([c, s], 1))
    np.testing.assert_allclose(circle.tangent_basis(t)[..., 0], np.stack([-s, c], 1), atol=1e-15)
    np.testing.assert_allclose(circle.chart([[0.0, -3.0], [-1.0, 0.0], [1.0, 1.0]]),
                               [[1.5 * math.pi], [math.pi], [0.25 * math.pi]], atol=1e-15)


# --------------------------------------------------------------------------- torus


def test_torus_points_jacobian_and_normal_by_hand():
    """Torus: y = ((R + r cos th) cos ph, (R + r cos th) sin ph, r sin th), the columns of its
    Jacobian written out, and the outward normal (y - R (cos ph, sin ph, 0)) / r."""
    big, small = 2.0, 0.5
    torus = Torus(major_radius=big, minor_radius=small, ambient_dim=6, embedding_seed=4)
    assert (torus.major_radius, torus.minor_radius, torus.dim, torus.host_dim) == (2.0, 0.5, 2, 3)
    np.testing.assert_array_equal(torus.chart_low, [0.0, 0.0])
    np.testing.assert_array_equal(torus.chart_high, [TWO_PI, TWO_PI])
    assert torus.periodic == (True, True)
    u = np.array([[0.0, 0.0], [0.5 * math.pi, 0.5 * math.pi], [0.4, 2.2], [3.5, 5.0]])
    th, ph = u[:, 0], u[:, 1]
    rho = big + small * np.cos(th)
    host = np.stack([rho * np.cos(ph), rho * np.sin(ph), small * np.sin(th)], 1)
    np.testing.assert_allclose(host[:2], [[2.5, 0.0, 0.0], [0.0, 2.0, 0.5]], atol=1e-15)
    np.testing.assert_allclose(torus.host_immersion(u), host, atol=1e-15)
    np.testing.assert_allclose(torus.immersion(u), host @ torus.embedding_matrix.T, atol=1e-12)
    d_th = small * np.stack([-np.sin(th) * np.cos(ph), -np.sin(th) * np.sin(ph), np.cos(th)], 1)
    d_ph = np.stack([-rho * np.sin(ph), rho * np.cos(ph), np.zeros_like(ph)], 1)
    centre = big * np.stack([np.cos(ph), np.sin(ph), np.zeros_like(ph)], 1)
    check_tangent_machinery(torus, u, np.stack([d_th, d_ph], -1), (host - centre) / small)


def test_torus_nearest_point_closed_form():
    """The nearest torus point of y: ph = atan2(y2, y1), th = atan2(y3, rho - R) (both wrapped to
    [0, 2 pi)), at distance |sqrt((rho - R)^2 + y3^2) - r|, off-host coordinates added in squares."""
    torus = Torus(major_radius=1.5, minor_radius=0.5, ambient_dim=5, embedding_seed=1)
    x = np.random.default_rng(2).uniform(-2.5, 2.5, (40, 5))
    y = x @ torus.embedding_matrix
    rho = np.hypot(y[:, 0], y[:, 1])
    expected_chart = np.stack([np.mod(np.arctan2(y[:, 2], rho - 1.5), TWO_PI), np.mod(np.arctan2(y[:, 1], y[:, 0]),
                                                                                          TWO_PI)], 1)
    np.testing.assert_allclose(torus.chart(x), expected_chart, atol=1e-12)
    off_host = np.sum(x**2, axis=1) - np.sum(y**2, axis=1)
    distance = np.sqrt(off_host + (np.sqrt((rho - 1.5) ** 2 + y[:, 2] ** 2) - 0.5) ** 2)
    np.testing.assert_allclose(np.linalg.norm(x - torus.projection(x), axis=1), distance, atol=1e-12)
    identity = Torus(major_radius=1.5, minor_radius=0.5, embedding="identity")
    np.testing.assert_allclose(identity.chart([[0.0, -3.0, 0.0], [1.5, 0.0, -0.2], [0.5, 0.0, 0.0]]),
                               [[0.0, 1.5 * math.pi], [1.5 * math.pi, 0.0], [math.pi, 0.0]], atol=1e-15)


def test_torus_sampling_is_area_uniform_and_validates():
    """The torus area element r (R + r cos th): E[cos th] = r / (2 R), phi uniform (mean pi,
    E[cos ph] = 0). A tube as thick as the ring, dim != 2 and non-positive radii are refused."""
    torus = Torus(major_radius=1.0, minor_radius=0.5)
    u = torus.sample_chart(20000, np.random.default_rng(3))
    assert u.shape == (20000, 2) and u.min() >= 0 and u.max() <= TWO_PI
    assert np.cos(u[:, 0]).mean() == pytest.approx(0.25, abs=0.012)
    assert np.sin(u[:, 0]).mean() == pytest.approx(0.0, abs=0.012)
    assert np.cos(u[:, 1]).mean() == pytest.approx(0.0, abs=0.015)
    assert u[:, 1].mean() == pytest.approx(math.pi, abs=0.04)
    with pytest.raises(ValueError, match=re.escape(
            "minor_radius: 1.0 must be smaller than major_radius 1.0 (otherwise the torus intersects itself)")):
        Torus(major_radius=1.0, minor_radius=1.0)
    with pytest.raises(ValueError, match=re.escape("dim: the torus is 2-dimensional, got dim=3")):
        Torus(dim=3)
    with pytest.raises(ValueError, match=re.escape("minor_radius: must be a positive number, got 0.0")):
        Torus(minor_radius=0.0)
    assert Torus(major_radius=1.0, minor_radius=0.999).minor_radius == 0.999


# --------------------------------------------------------------------------- concentric spheres


def test_concentric_spheres_chart_points_and_normals():
    """Two spheres on one chart: u_1 in [0, pi) inner with polar angle u_1, u_1 in [pi, 2 pi]
    outer with polar angle u_1 - pi (u_1 = pi itself counts as outer); points at the two radii,
    Jacobians radius x unit-sphere Jacobian, outward normals on both."""
    spheres = ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=1.5, ambient_dim=4, embedding_seed=1)
    np.testing.assert_array_equal(spheres.chart_low, [0.0, 0.0])
    np.testing.assert_array_equal(spheres.chart_high, [TWO_PI, TWO_PI])
    assert spheres.periodic == (False, True) and spheres.n_components == 2
    u = np.array([[0.7, 1.0], [0.7 + math.pi, 1.0], [math.pi, 2.0], [2.0, 5.0], [1.0 + math.pi, 4.0]])
    outer = np.array([False, True, True, False, True])
    np.testing.assert_array_equal(spheres.component(u), outer.astype(int))
    assert spheres.component(u).dtype.kind == "i"
    angles = u.copy()
    angles[outer, 0] -= math.pi
    radius = np.where(outer, 1.5, 1.0)
    host = radius[:, None] * unit_sphere_immersion(angles)
    np.testing.assert_allclose(spheres.host_immersion(u), host, atol=1e-15)
    np.testing.assert_allclose(spheres.host_immersion(u[1]), 1.5 * unit_sphere_immersion(u[0]), atol=1e-15)
    interior = [0, 1, 3, 4]  # away from the pole of the outer chart at u_1 = pi
    check_tangent_machinery(spheres, u[interior], radius[interior, None, None] * unit_sphere_jacobian(angles[interior]),
                            unit_sphere_immersion(angles[interior]))
    # Integer chart coordinates are taken as floats (the split shifts the first one by pi).
    np.testing.assert_allclose(spheres.immersion(np.array([[4, 1], [1, 2]])),
                               spheres.immersion([[4.0, 1.0], [1.0, 2.0]]))
    np.testing.assert_allclose(spheres.jacobian(np.array([[4, 1]])), spheres.jacobian([[4.0, 1.0]]))
    # The input is not changed by the split.
    u_before = u.copy()
    spheres.immersion(u)
    np.testing.assert_array_equal(u, u_before)


def test_concentric_spheres_nearest_sphere_by_the_mid_radius():
    """chart(x): the outer sphere where |y| >= (r_in + r_out) / 2 (exactly at the mid radius too),
    the inner one below; the angles are those of y, the first shifted by pi on the outer sphere."""
    spheres = ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=1.3, embedding="identity")
    y = np.array([[1.15, 0.0, 0.0], [1.1499999, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.0]])
    expected = np.array([[math.pi, 0.0], [0.0, 0.0], [1.5 * math.pi, 1.5 * math.pi], [0.5 * math.pi, 0.0],
                         [0.0, 0.0]])
    np.testing.assert_allclose(spheres.chart(y), expected, atol=1e-15)
    np.testing.assert_allclose(spheres.projection(y), [[1.3, 0, 0], [1.0, 0, 0], [0, 0, -1.3], [0, 1.0, 0],
                                                       [1.0, 0, 0]], atol=1e-15)
    x = np.random.default_rng(0).standard_normal((30, 3)) * 1.5
    norm = np.linalg.norm(x, axis=1)
    distance = np.minimum(np.abs(norm - 1.0), np.abs(norm - 1.3))
    np.testing.assert_allclose(np.linalg.norm(x - spheres.projection(x), axis=1), distance, atol=1e-12)


def test_concentric_circles_k1():
    """k = 1: the angle runs over [0, 4 pi), the first 2 pi on the inner circle; no coordinate is
    periodic (wrapping would join the circles)."""
    circles = ConcentricSpheres(dim=1, inner_radius=1.0, outer_radius=2.0, embedding="identity")
    np.testing.assert_array_equal(circles.chart_low, [0.0])
    np.testing.assert_array_equal(circles.chart_high, [2 * TWO_PI])
    assert circles.periodic == (False,)
    u = np.array([[0.5], [TWO_PI], [TWO_PI + 1.0], [TWO_PI - 1e-9]])
    np.testing.assert_array_equal(circles.component(u), [0, 1, 1, 0])
    np.testing.assert_allclose(circles.immersion(u)[:3], [[math.cos(0.5), math.sin(0.5)], [2.0, 0.0],
                                                          [2 * math.cos(1.0), 2 * math.sin(1.0)]], atol=1e-14)
    np.testing.assert_allclose(circles.chart([[0.0, 1.4], [0.0, 1.6], [0.0, -1.0]]),
                               [[0.5 * math.pi], [0.5 * math.pi + TWO_PI], [1.5 * math.pi]], atol=1e-15)


def test_concentric_spheres_sampling_and_validation():
    """A fair coin per sample picks the sphere (half the samples on each, not half the area); on
    each sphere the points are uniform (mean 0, second moments I / (k + 1)). outer <= inner and
    non-positive radii are refused."""
    spheres = ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=2.0, embedding="identity")
    u = spheres.sample_chart(20000, np.random.default_rng(7))
    assert u.shape == (20000, 2)
    component = spheres.component(u)
    assert component.mean() == pytest.approx(0.5, abs=0.012)
    x = spheres.immersion(u)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), np.where(component == 1, 2.0, 1.0), atol=1e-12)
    for side, r in ((0, 1.0), (1, 2.0)):
        points = x[component == side] / r
        np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=0.025)
        np.testing.assert_allclose(points.T @ points / len(points), np.eye(3) / 3, atol=0.015)
    with pytest.raises(ValueError, match=re.escape("outer_radius: 1.0 must be larger than inner_radius 1.0")):
        ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=1.0)
    with pytest.raises(ValueError, match=re.escape("outer_radius: must be a positive number, got -1.0")):
        ConcentricSpheres(dim=2, outer_radius=-1.0)
    assert ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=1.0001).outer_radius == 1.0001


# --------------------------------------------------------------------------- sine sheet


def test_sine_sheet_height_gradient_and_hessian_by_hand():
    """h(u) = a sin(w u_1) sin(w u_2): gradient a w (cos sin, sin cos), Hessian
    a w^2 [[-sin sin, cos cos], [cos cos, -sin sin]]; for k = 3 against finite differences."""
    a, w = 0.4, 1.7
    sheet = SineSheet(dim=2, amplitude=a, frequency=w, extent=2.0, ambient_dim=4, embedding_seed=3)
    u = np.array([[0.3, -0.8], [1.1, 0.4], [-1.5, 1.9]])
    s1, s2, c1, c2 = np.sin(w * u[:, 0]), np.sin(w * u[:, 1]), np.cos(w * u[:, 0]), np.cos(w * u[:, 1])
    height, gradient, hessian = sheet._height(u, order=2)
    np.testing.assert_allclose(height, a * s1 * s2, atol=1e-15)
    np.testing.assert_allclose(gradient, a * w * np.stack([c1 * s2, s1 * c2], 1), atol=1e-15)
    np.testing.assert_allclose(hessian, a * w**2 * np.stack([np.stack([-s1 * s2, c1 * c2], 1),
                                                              np.stack([c1 * c2, -s1 * s2], 1)], 1), atol=1e-15)
    assert len(sheet._height(u)) == 2
    three = SineSheet(dim=3, amplitude=0.3, frequency=2.5)
    v = np.random.default_rng(0).uniform(-1, 1, (4, 3))
    _, gradient, hessian = three._height(v, order=2)
    np.testing.assert_allclose(gradient, fd_jacobian(lambda p: three._height(p)[0][..., None], v)[:, 0], atol=1e-8)
    np.testing.assert_allclose(hessian, fd_jacobian(lambda p: three._height(p)[1], v), atol=1e-7)


def test_sine_sheet_points_basis_and_normal():
    """phi(u) = E (u, h(u)); Jacobian (I; grad h); normal (-grad h, 1) / sqrt(1 + |grad h|^2)."""
    a, w = 0.4, 1.7
    sheet = SineSheet(dim=2, amplitude=a, frequency=w, extent=2.0, ambient_dim=4, embedding_seed=3)
    np.testing.assert_array_equal(sheet.chart_low, [-2.0, -2.0])
    np.testing.assert_array_equal(sheet.chart_high, [2.0, 2.0])
    assert sheet.periodic == (False, False)
    u = np.array([[0.3, -0.8], [1.1, 0.4], [-1.5, 1.9]])
    height = a * np.sin(w * u[:, 0]) * np.sin(w * u[:, 1])
    gradient = a * w * np.stack([np.cos(w * u[:, 0]) * np.sin(w * u[:, 1]),
                                 np.sin(w * u[:, 0]) * np.cos(w * u[:, 1])], 1)
    host = np.concatenate([u, height[:, None]], 1)
    np.testing.assert_allclose(sheet.host_immersion(u), host, atol=1e-15)
    np.testing.assert_allclose(sheet.immersion(u), host @ sheet.embedding_matrix.T, atol=1e-12)
    jacobian = np.concatenate([np.broadcast_to(np.eye(2), (3, 2, 2)), gradient[:, None, :]], 1)
    normal = np.concatenate([-gradient, np.ones((3, 1))], 1) / np.sqrt(1 + np.sum(gradient**2, 1))[:, None]
    check_tangent_machinery(sheet, u, jacobian, normal)
    flat = SineSheet(dim=1, amplitude=0.0, embedding="identity")
    np.testing.assert_allclose(flat.immersion([[0.3], [-0.2]]), [[0.3, 0.0], [-0.2, 0.0]])


def _sine_sheet_optimality(sheet, point):
    """grad F at the returned chart point v, F(v) = |(v, h(v)) - y|^2 / 2 in host coordinates."""
    v = sheet.chart(point)
    y = point @ sheet.embedding_matrix
    height, gradient = sheet._height(v)
    return v, (v - y[:, : sheet.dim]) + (height - y[:, sheet.dim])[:, None] * gradient


def test_sine_sheet_nearest_point_is_a_critical_point_and_the_foot_of_its_normal():
    """Within the reach: a point phi(u) + t nu(u) + (anything off the host) has chart u to 1e-12,
    and grad F = (v - y_below) + (h(v) - y_z) grad h(v) vanishes at the result to 1e-13."""
    sheet = SineSheet(dim=2, amplitude=0.3, frequency=2.0, ambient_dim=5, embedding_seed=2)
    rng = np.random.default_rng(4)
    u = rng.uniform(-1.0, 1.0, (40, 2))
    t = rng.uniform(-0.35, 0.35, (40, 1))
    off = rng.standard_normal((40, 5))
    off -= off @ sheet.embedding_matrix @ sheet.embedding_matrix.T
    point = sheet.immersion(u) + t * sheet.unit_normal(u) + off
    v, gradient = _sine_sheet_optimality(sheet, point)
    np.testing.assert_allclose(v, u, atol=1e-11)
    assert np.abs(gradient).max() < 1e-13
    np.testing.assert_allclose(sheet.projection(point), sheet.immersion(u), atol=1e-11)
    assert sheet.chart(point.reshape(2, 20, 5)).shape == (2, 20, 2)
    assert sheet.chart(np.empty((0, 5))).shape == (0, 2)


def test_sine_sheet_nearest_point_against_a_dense_search_on_a_curve():
    """k = 1 (a curve, so a dense search over the chart line is cheap): far from the curve too,
    where the Newton Hessian is indefinite and Gauss-Newton steps and the line search take over,
    the result is a critical point of F, and for these points the nearest one (dense grid of
    spacing 2e-5, refined nowhere: its squared distances exceed the true one by < 1e-9)."""
    sheet = SineSheet(dim=1, amplitude=0.5, frequency=3.0, embedding="identity")
    rng = np.random.default_rng(5)
    below = rng.uniform(-1.0, 1.0, 30)
    heights = np.concatenate([rng.uniform(-1.2, 1.2, 20), [-0.4, -0.45, -0.5, 0.4, 0.45, 0.5, 0.3, -0.3, 1.5, -1.5]])
    # Under a bump's top and above a valley's bottom (slightly off the symmetry axis: exactly on
    # it the start is itself a critical point, a local maximum of the distance, and stays put).
    below[20:] = [math.pi / 6 + 1e-4, math.pi / 6 + 0.05, math.pi / 6 - 0.03, -math.pi / 6 - 1e-4, -math.pi / 6 + 1e-4,
                  -math.pi / 6 + 0.02, math.pi / 2 + 1e-4, math.pi / 2, 0.1, -0.1]
    point = np.stack([below, heights], 1)
    v, gradient = _sine_sheet_optimality(sheet, point)
    assert np.abs(gradient).max() < 1e-12
    distance = np.linalg.norm(point - sheet.immersion(v), axis=1)
    grid = np.linspace(-4.0, 4.0, 400001)
    curve = np.stack([grid, 0.5 * np.sin(3.0 * grid)], 1)
    for p, d in zip(point, distance):
        brute = np.min(np.sum((curve - p) ** 2, axis=1))
        assert d**2 <= brute + 1e-12
        assert brute - d**2 <= 1e-9


def test_sine_sheet_line_search_far_from_the_curve():
    """Points up to 2.5 away from a curve of reach about 0.22 (a = 0.5, w = 3): full Newton steps
    overshoot there, and the Armijo line search keeps F decreasing, so each point ends at a
    critical point of F (to |grad F| < 1e-7: near convergence F's decrease falls below its
    rounding and the search stops early, at |grad F| ~ 1e-9) that is, for these points, the
    nearest one (a dense search of spacing 1e-4 finds nothing nearer, and its squared distances
    exceed ours by less than 1e-7)."""
    sheet = SineSheet(dim=1, amplitude=0.5, frequency=3.0, embedding="identity")
    rng = np.random.default_rng(5)
    point = np.stack([rng.uniform(-1, 1, 120), rng.uniform(-2.5, 2.5, 120)], 1)
    v, gradient = _sine_sheet_optimality(sheet, point)
    assert np.abs(gradient).max() < 1e-7
    squared = np.sum((point - sheet.immersion(v)) ** 2, axis=1)
    grid = np.linspace(-4.0, 4.0, 80001)
    curve = np.stack([grid, 0.5 * np.sin(3.0 * grid)], 1)
    brute = np.array([np.min(np.sum((curve - p) ** 2, axis=1)) for p in point])
    assert np.all(squared <= brute + 1e-12)
    assert np.all(brute - squared <= 1e-7)


def test_sine_sheet_line_search_is_armijo_backtracking_by_hand():
    """_step_length on the flat sheet (a = 0, so F(v) = |v - b|^2 / 2) from v = 0 with b = 1:
    the longest of 1, 1/2, ..., 2^-20 with F(v + L s) <= F(v) + 1e-4 L slope, slope = grad F . s,
    else 0, per point: a step that lands near b (1), one that overshoots to 2 + 1e-5 (F rises by
    1e-5 < 1e-4 |slope|: 1/2), one to 2 - 1e-4 (F falls by only 1e-4 < 2e-4: 1/2), one 1000 long
    (2^-9), and an ascent step (none: 0)."""
    sheet = SineSheet(dim=1, amplitude=0.0, embedding="identity")
    steps = np.array([[0.9], [2.0 + 1e-5], [2.0 - 1e-4], [1000.0], [-0.5]])
    v, below, z = np.zeros((5, 1)), np.ones((5, 1)), np.zeros(5)

    def armijo(step):
        slope = -step  # grad F at 0 is v - b = -1
        for length in 0.5 ** np.arange(21):
            if 0.5 * (length * step - 1) ** 2 <= 0.5 + 1e-4 * length * slope:
                return length
        return 0.0

    expected = [armijo(step) for step in steps[:, 0]]
    assert expected == [1.0, 0.5, 0.5, 2.0**-9, 0.0]
    np.testing.assert_array_equal(sheet._step_length(v, steps, below, z), expected)
    # One at a time, the same lengths (the ladder does not depend on the other points).
    for i in range(5):
        np.testing.assert_array_equal(sheet._step_length(v[i:i + 1], steps[i:i + 1], below[i:i + 1], z[i:i + 1]),
                                      expected[i:i + 1])


def test_sine_sheet_convergence_tolerance_is_per_point():
    """The Newton iteration stops a point when its own step is below 1e-10 (1 + |v|): a far
    chart point (|v| = 1e6) in the same batch does not loosen the others' tolerance, which
    still end with |grad F| < 1e-12."""
    sheet = SineSheet(dim=2, amplitude=0.3, frequency=2.0, embedding="identity")
    rng = np.random.default_rng(15)
    u = np.concatenate([[[1e6, -1e6]], rng.uniform(-1, 1, (20, 2))])
    point = sheet.immersion(u) + rng.uniform(-0.3, 0.3, (21, 1)) * sheet.unit_normal(u)
    _, gradient = _sine_sheet_optimality(sheet, point)
    assert np.abs(gradient[1:]).max() < 1e-12


def test_sine_sheet_sampling_follows_the_area_element():
    """The area element sqrt(1 + |grad h|^2): for k = 1, a = 1, w = 3 on [-1, 1] the sample mean
    of cos^2(3u) equals its density-weighted mean (quadrature), not the uniform one."""
    sheet = SineSheet(dim=1, amplitude=1.0, frequency=3.0, extent=1.0)
    u = sheet.sample_chart(20000, np.random.default_rng(6))[:, 0]
    assert u.min() >= -1 and u.max() <= 1
    grid = np.linspace(-1, 1, 200001)
    density = np.sqrt(1 + 9 * np.cos(3 * grid) ** 2)
    weighted = np.sum(np.cos(3 * grid) ** 2 * density) / np.sum(density)
    uniform = np.mean(np.cos(3 * grid) ** 2)
    assert weighted - uniform > 0.08  # the check can tell the two apart
    assert np.mean(np.cos(3 * u) ** 2) == pytest.approx(weighted, abs=0.01)
    # k = 2: |grad h| reaches a w at the saddles, so the bound is needed in full there.
    sheet2 = SineSheet(dim=2, amplitude=1.0, frequency=2.0, extent=1.0)
    u2 = sheet2.sample_chart(20000, np.random.default_rng(7))
    g = np.stack(np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401), indexing="ij"), -1).reshape(-1, 2)
    density2 = np.sqrt(1 + np.sum(sheet2._height(g)[1] ** 2, axis=1))
    moment = np.sum(np.cos(2 * g[:, 0]) ** 2 * np.cos(2 * g[:, 1]) ** 2 * density2) / np.sum(density2)
    sample = np.mean(np.cos(2 * u2[:, 0]) ** 2 * np.cos(2 * u2[:, 1]) ** 2)
    assert sample == pytest.approx(moment, abs=0.008)


def test_sine_sheet_validation():
    """Amplitude >= 0 (0 allowed: a flat), finite; frequency and extent positive."""
    assert SineSheet(amplitude=0.0).amplitude == 0.0
    with pytest.raises(ValueError, match=re.escape("amplitude: must be a number >= 0, got -0.1")):
        SineSheet(amplitude=-0.1)
    with pytest.raises(ValueError, match=re.escape("amplitude: must be a number >= 0, got inf")):
        SineSheet(amplitude=math.inf)
    with pytest.raises(ValueError, match=re.escape("frequency: must be a positive number, got 0.0")):
        SineSheet(frequency=0.0)
    with pytest.raises(ValueError, match=re.escape("extent: must be a positive number, got -1.0")):
        SineSheet(extent=-1.0)
    with pytest.raises(ValueError, match=re.escape("dim: must be at least 1, got 0")):
        SineSheet(dim=0)
    default = SineSheet()
    assert (default.dim, default.amplitude, default.frequency, default.extent) == (2, 0.3, 2.0, 1.0)


# --------------------------------------------------------------------------- swiss roll


def test_swiss_roll_points_jacobian_and_normal_by_hand():
    """y = scale (t cos t, s, t sin t); d/dt = scale (cos t - t sin t, 0, sin t + t cos t),
    d/ds = scale e_2; normal (-(sin t + t cos t), 0, cos t - t sin t) / sqrt(1 + t^2)."""
    roll = SwissRoll(t_min=1.0, t_max=9.0, width=3.0, scale=0.3, ambient_dim=5, embedding_seed=6)
    u = np.array([[1.5, -0.4], [4.0, 1.2], [8.5, 0.0]])
    t, s = u[:, 0], u[:, 1]
    host = 0.3 * np.stack([t * np.cos(t), s, t * np.sin(t)], 1)
    np.testing.assert_allclose(roll.host_immersion(u), host, atol=1e-15)
    np.testing.assert_allclose(roll.immersion(u), host @ roll.embedding_matrix.T, atol=1e-12)
    d_t = 0.3 * np.stack([np.cos(t) - t * np.sin(t), 0 * t, np.sin(t) + t * np.cos(t)], 1)
    d_s = np.broadcast_to([0.0, 0.3, 0.0], (3, 3))
    normal = np.stack([-(np.sin(t) + t * np.cos(t)), 0 * t, np.cos(t) - t * np.sin(t)], 1) / np.sqrt(1 + t**2)[:, None]
    check_tangent_machinery(roll, u, np.stack([d_t, d_s], -1), normal)


def test_swiss_roll_defaults_box_and_grid():
    """Defaults: scale = 1 / t_max, width = 2 / scale; the chart box [t_min, t_max] x
    [-width/2, width/2]; the coarse grid has 64 samples per turn (at least 16), both ends
    included."""
    roll = SwissRoll()
    assert roll.t_min == 1.5 * math.pi and roll.t_max == 4.5 * math.pi
    assert roll.scale == pytest.approx(1 / (4.5 * math.pi), rel=1e-15)
    assert roll.width == pytest.approx(9 * math.pi, rel=1e-15)
    np.testing.assert_allclose(roll.chart_low, [1.5 * math.pi, -4.5 * math.pi])
    np.testing.assert_allclose(roll.chart_high, [4.5 * math.pi, 4.5 * math.pi])
    assert roll.periodic == (False, False)
    assert len(roll._t_grid) == 64 * 3 // 2 + 1
    assert roll._t_grid[0] == roll.t_min and roll._t_grid[-1] == roll.t_max
    custom = SwissRoll(t_min=0.0, t_max=2.0, width=1.0, scale=0.5)
    assert (custom.scale, custom.width) == (0.5, 1.0)
    np.testing.assert_array_equal(custom.chart_low, [0.0, -0.5])
    np.testing.assert_array_equal(custom.chart_high, [2.0, 0.5])
    assert len(custom._t_grid) == max(16, math.ceil(64 * 2.0 / TWO_PI) + 1) == 22
    assert len(SwissRoll(t_min=0.0, t_max=0.5)._t_grid) == 16
    only_width = SwissRoll(t_min=0.0, t_max=2.0, width=4.0)
    assert (only_width.scale, only_width.width) == (0.5, 4.0)
    only_scale = SwissRoll(t_min=0.0, t_max=2.0, scale=0.25)
    assert (only_scale.scale, only_scale.width) == (0.25, 8.0)


def test_swiss_roll_validation():
    """t_min finite >= 0 (0 allowed), t_max > t_min, positive width and scale, dim 2."""
    assert SwissRoll(t_min=0.0, t_max=1.0).t_min == 0.0
    with pytest.raises(ValueError, match=re.escape("t_min: must be a finite number >= 0, got -1.0")):
        SwissRoll(t_min=-1.0)
    with pytest.raises(ValueError, match=re.escape("t_min: must be a finite number >= 0, got nan")):
        SwissRoll(t_min=math.nan)
    with pytest.raises(ValueError, match=re.escape("t_max: 2.0 must be larger than t_min 2.0")):
        SwissRoll(t_min=2.0, t_max=2.0)
    with pytest.raises(ValueError, match=re.escape("t_max: inf must be larger than t_min 1.0")):
        SwissRoll(t_min=1.0, t_max=math.inf)
    with pytest.raises(ValueError, match=re.escape("dim: the swiss roll is 2-dimensional, got dim=1")):
        SwissRoll(dim=1)
    with pytest.raises(ValueError, match=re.escape("width: must be a positive number, got 0.0")):
        SwissRoll(width=0.0)
    with pytest.raises(ValueError, match=re.escape("scale: must be a positive number, got -2.0")):
        SwissRoll(scale=-2.0)


def _spiral_distance(roll, point, t):
    """In-plane distance of host points to the spiral point t (scaled)."""
    return np.hypot(point[:, 0] - roll.scale * t * np.cos(t), point[:, 2] - roll.scale * t * np.sin(t))


def test_swiss_roll_nearest_point_is_optimal_and_global():
    """chart(x) = (t*, y_2 / scale): s exactly, t* a critical point of the in-plane squared
    distance (slope <= 1e-12) or a spiral end with the distance rising inward, and no point of a
    dense t grid is nearer (also midway between turns, where two local minima tie)."""
    roll = SwissRoll(t_min=1.0, t_max=13.0, width=4.0, scale=0.1, ambient_dim=4, embedding="identity")
    rng = np.random.default_rng(8)
    angle = rng.uniform(roll.t_min, roll.t_max - TWO_PI, 40)
    midway = roll.scale * (angle + math.pi)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    point = rng.uniform(-1.5, 1.5, (100, 4))
    point[:40, [0, 2]] = midway
    point[40, [0, 2]] = [0.0, 0.0]  # the axis: the nearest point is the inner end
    point[41, [0, 2]] = [2.0, -0.3]  # far outside: the outer end or the last turn
    chart = roll.chart(point)
    np.testing.assert_allclose(chart[:, 1], point[:, 1] / 0.1, rtol=1e-15)
    t = chart[:, 0]
    assert np.all(t >= roll.t_min) and np.all(t <= roll.t_max)
    assert t[40] == roll.t_min
    q = point[:, [0, 2]] / roll.scale
    residual = np.stack([t * np.cos(t) - q[:, 0], t * np.sin(t) - q[:, 1]], 1)
    slope = np.sum(residual * np.stack([np.cos(t) - t * np.sin(t), np.sin(t) + t * np.cos(t)], 1), 1)
    interior = (t > roll.t_min) & (t < roll.t_max)
    assert np.abs(slope[interior]).max() < 1e-11
    assert np.all(slope[t == roll.t_min] >= 0) and np.all(slope[t == roll.t_max] <= 0)
    distance = _spiral_distance(roll, point, t)
    grid = np.linspace(roll.t_min, roll.t_max, 20001)
    spiral = roll.scale * np.stack([grid * np.cos(grid), grid * np.sin(grid)], 1)
    brute = np.sqrt(np.min(np.sum((point[:, None, [0, 2]] - spiral[None]) ** 2, axis=-1), axis=1))
    assert np.all(distance <= brute + 1e-13)
    assert np.all(brute - distance <= 1e-4)
    full = np.sqrt(distance**2 + point[:, 3] ** 2)
    np.testing.assert_allclose(np.linalg.norm(point - roll.projection(point), axis=1), full, atol=1e-12)
    assert roll.chart(np.empty((0, 4))).shape == (0, 2)
    np.testing.assert_array_equal(roll.chart(point[:6].reshape(2, 3, 4)), chart[:6].reshape(2, 3, 2))
    np.testing.assert_array_equal(roll.chart(point[7]), chart[7])


def test_swiss_roll_refinement_converges_quadratically(monkeypatch):
    """From a coarse-grid cell (64 per turn) the safeguarded Newton iteration reaches slope
    1e-11 within 6 steps at every point (quadratic convergence: 3 suffice here), over the whole
    roll and near the centre of a roll starting at t = 0, where the curvature of the squared
    distance |c'|^2 + r.c'' falls below 1; bisection alone, or Newton with a wrong second
    derivative, would need tens."""
    monkeypatch.setattr(swiss_roll_module, "_NEWTON_STEPS", 6)
    for t_min, box in ((1.0, 1.5), (0.0, 0.3)):
        roll = SwissRoll(t_min=t_min, t_max=13.0, width=4.0, scale=0.1, embedding="identity")
        point = np.random.default_rng(14).uniform(-box, box, (300, 3))
        t = roll.chart(point)[:, 0]
        q = point[:, [0, 2]] / roll.scale
        residual = np.stack([t * np.cos(t) - q[:, 0], t * np.sin(t) - q[:, 1]], 1)
        slope = np.sum(residual * np.stack([np.cos(t) - t * np.sin(t), np.sin(t) + t * np.cos(t)], 1), 1)
        interior = (t > roll.t_min) & (t < roll.t_max)
        assert interior.sum() > 150
        assert np.abs(slope[interior]).max() < 1e-11


def test_swiss_roll_chunked_coarse_search_equals_one_chunk(monkeypatch):
    """The coarse search in chunks of 3 points gives the same nearest points as in one chunk."""
    roll = SwissRoll(t_min=1.0, t_max=13.0, scale=0.1, embedding="identity")
    point = np.random.default_rng(9).uniform(-1.2, 1.2, (11, 3))
    whole = roll.chart(point)
    monkeypatch.setattr(swiss_roll_module, "_CHUNK_ELEMENTS", 3 * len(roll._t_grid))
    np.testing.assert_array_equal(roll.chart(point), whole)
    monkeypatch.setattr(swiss_roll_module, "_CHUNK_ELEMENTS", 1)
    np.testing.assert_array_equal(roll.chart(point), whole)


def test_swiss_roll_refines_every_coarse_local_minimum_in_its_own_cell(monkeypatch):
    """The coarse search hands `_refine` exactly the local minima of each point's squared grid
    distances (a grid point no farther than both neighbours, the ends compared with one), each
    once, bracketed by its two neighbouring grid points (clipped at the ends): recomputed here
    from the grid by hand."""
    roll = SwissRoll(t_min=0.5, t_max=13.0, scale=0.1, embedding="identity")
    point = np.random.default_rng(16).uniform(-1.4, 1.4, (25, 3))
    calls = []
    original = swiss_roll_module._refine
    monkeypatch.setattr(swiss_roll_module, "_refine",
                        lambda q, t, low, high: calls.append((q, t, low, high)) or original(q, t, low, high))
    roll.chart(point)
    (q, t, low, high), = calls
    grid = roll._t_grid
    expected = []
    for p in point[:, [0, 2]] / roll.scale:
        squared = (grid * np.cos(grid) - p[0]) ** 2 + (grid * np.sin(grid) - p[1]) ** 2
        padded = np.concatenate([[np.inf], squared, [np.inf]])
        for j in np.flatnonzero((squared <= padded[:-2]) & (squared <= padded[2:])):
            expected.append((p[0], p[1], grid[j], grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]))
    got = sorted(zip(q[:, 0], q[:, 1], t, low, high))
    assert len(got) == len(expected) > len(point)  # several turns: more than one candidate a point
    np.testing.assert_allclose(np.array(got), np.array(sorted(expected)), rtol=1e-15, atol=0)


def test_swiss_roll_refine_brackets_and_ends():
    """_refine: from a bracket around a local minimum it returns the critical point (slope 0 to
    1e-12); a minimum beyond the bracket's edge gives that edge."""
    t_star = np.array([3.0, 5.0, 7.5])
    # Points on the normal line at distance 0.3 have the spiral point t_star as a local minimum.
    c, s = np.cos(t_star), np.sin(t_star)
    normal = np.stack([-(s + t_star * c), c - t_star * s], 1) / np.sqrt(1 + t_star**2)[:, None]
    q = np.stack([t_star * c, t_star * s], 1) + 0.3 * normal
    found = swiss_roll_module._refine(q, t_star + 0.2, t_star - 0.4, t_star + 0.4)
    np.testing.assert_allclose(found, t_star, atol=1e-12)
    edge = swiss_roll_module._refine(q, t_star + 0.3, t_star + 0.2, t_star + 0.4)
    np.testing.assert_allclose(edge, t_star + 0.2, atol=1e-12)
    other_edge = swiss_roll_module._refine(q, t_star - 0.3, t_star - 0.4, t_star - 0.2)
    np.testing.assert_allclose(other_edge, t_star - 0.2, atol=1e-12)


def test_swiss_roll_sampling_follows_the_area_element():
    """Area element scale^2 sqrt(1 + t^2) dt ds: E[t] = int t sqrt(1 + t^2) / int sqrt(1 + t^2)
    over [t_min, t_max] (closed forms), s uniform on [-width/2, width/2]."""
    roll = SwissRoll(t_min=0.0, t_max=3.0, width=2.0, scale=1.0)
    u = roll.sample_chart(20000, np.random.default_rng(10))
    assert u.shape == (20000, 2)
    assert u[:, 0].min() >= 0 and u[:, 0].max() <= 3 and np.abs(u[:, 1]).max() <= 1

    def integral_sqrt(t):  # int sqrt(1 + t^2) dt
        return 0.5 * (t * math.sqrt(1 + t * t) + math.asinh(t))

    first_moment = ((1 + 9) ** 1.5 - 1) / 3  # int t sqrt(1 + t^2) dt over [0, 3]
    mean_t = first_moment / (integral_sqrt(3.0) - integral_sqrt(0.0))
    assert mean_t - 1.5 > 0.2  # far from the uniform mean
    assert u[:, 0].mean() == pytest.approx(mean_t, abs=0.015)
    assert u[:, 1].mean() == pytest.approx(0.0, abs=0.015)
    assert u[:, 1].var() == pytest.approx(1 / 3, abs=0.01)


def test_area_uniform_families_draw_with_the_tightest_bound():
    """Torus, sine sheet and swiss roll sample by `rejection_sample` with their area element as the
    density and its maximum as the bound (R + r; sqrt(1 + (a w)^2); sqrt(1 + t_max^2)): the same
    draws as that call (a looser bound gives the same distribution but other draws, and every
    scene's data would move)."""
    torus = Torus(major_radius=1.5, minor_radius=0.5)
    sheet = SineSheet(dim=2, amplitude=0.4, frequency=2.0, extent=1.5)  # a w = 0.8: (a w)^2 != (a w)^3
    roll = SwissRoll(t_min=1.0, t_max=6.0, width=2.0)
    cases = [
        (torus, lambda u: 1.5 + 0.5 * np.cos(u[:, 0]), 2.0),
        (sheet, lambda u: np.sqrt(1 + np.sum(sheet._height(u)[1] ** 2, axis=1)), math.sqrt(1 + 0.8**2)),
        (roll, lambda u: np.sqrt(1 + u[:, 0] ** 2), math.sqrt(37.0)),
    ]
    for manifold, density, bound in cases:
        expected = rejection_sample(30, np.random.default_rng(21), manifold.chart_low, manifold.chart_high, density,
                                    bound)
        np.testing.assert_allclose(manifold.sample_chart(30, np.random.default_rng(21)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("build, message", [
    (lambda: Torus(dim=0), "dim: must be at least 1, got 0"),
    (lambda: Torus(dim=True), "dim: must be an integer, got True"),
    (lambda: Torus(major_radius=-1.0), "major_radius: must be a positive number, got -1.0"),
    (lambda: Torus(minor_radius=-0.5), "minor_radius: must be a positive number, got -0.5"),
    (lambda: SwissRoll(dim=0), "dim: must be at least 1, got 0"),
    (lambda: SwissRoll(scale=0.0), "scale: must be a positive number, got 0.0"),
    (lambda: SwissRoll(width=-1.0), "width: must be a positive number, got -1.0"),
    (lambda: Sphere(dim=0), "dim: must be at least 1, got 0"),
    (lambda: Sphere(dim=2, radius=0.0), "radius: must be a positive number, got 0.0"),
    (lambda: ConcentricSpheres(dim=0), "dim: must be at least 1, got 0"),
    (lambda: ConcentricSpheres(dim=2, inner_radius=-1.0), "inner_radius: must be a positive number, got -1.0"),
    (lambda: Flat(dim=0), "dim: must be at least 1, got 0"),
    (lambda: Flat(dim=1, extent=-2.0), "extent: must be a positive number, got -2.0"),
    (lambda: SineSheet(dim=0), "dim: must be at least 1, got 0"),
    (lambda: SineSheet(frequency=-1.0), "frequency: must be a positive number, got -1.0"),
    (lambda: SineSheet(extent=0.0), "extent: must be a positive number, got 0.0"),
])
def test_constructor_errors_start_with_the_field_name(build, message):
    """Every constructor error starts with the exact field name (the scene loader maps it back to
    the scene file's key), then the rule and the value."""
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        build()


def test_family_defaults():
    """The documented defaults of each family's parameters."""
    torus = Torus()
    assert (torus.major_radius, torus.minor_radius, torus.dim, torus.ambient_dim) == (1.0, 0.4, 2, 3)
    assert (torus.embedding, torus.embedding_seed) == ("random", 0)
    sphere = Sphere(dim=2)
    assert (sphere.radius, sphere.ambient_dim, sphere.embedding) == (1.0, 3, "random")
    spheres = ConcentricSpheres(dim=2)
    assert (spheres.inner_radius, spheres.outer_radius, spheres.ambient_dim) == (1.0, 1.3, 3)
    flat = Flat(dim=2)
    assert (flat.extent, flat.offset, flat.ambient_dim) == (1.0, None, 3)
    roll = SwissRoll()
    assert (roll.dim, roll.host_dim, roll.ambient_dim) == (2, 3, 3)


def test_sampling_streams_are_seeded():
    """Every family's sample_chart is a function of its generator: the same seed gives the same
    chart points, another seed others (golden values pin the first draws of two families)."""
    for manifold in (Flat(dim=2), Sphere(dim=2), Torus(), SwissRoll(), SineSheet(), ConcentricSpheres(dim=2)):
        first = manifold.sample_chart(50, np.random.default_rng(11))
        np.testing.assert_array_equal(first, manifold.sample_chart(50, np.random.default_rng(11)))
        assert np.abs(first - manifold.sample_chart(50, np.random.default_rng(12))).max() > 0.1
        assert first.shape == (50, manifold.dim)
        assert np.all(first >= manifold.chart_low) and np.all(first <= manifold.chart_high)
    spheres = ConcentricSpheres(dim=2)
    rng = np.random.default_rng(13)
    angles = uniform_sphere_angles(6, 2, rng)
    angles[:, 0] += np.where(rng.random(6) < 0.5, math.pi, 0.0)
    np.testing.assert_array_equal(spheres.sample_chart(6, np.random.default_rng(13)), angles)


# --------------------------------------------------------------------------- stretch.py


def relu_mlp(weights, biases, head_classes: int = 2) -> MLP:
    """An MLP (float64, ReLU) with the given hidden-layer weights and biases."""
    widths = [w.shape[0] for w in weights]
    model = MLP(weights[0].shape[1], widths, head_classes, activation="relu").double()
    linears = [module for module in model.body if isinstance(module, nn.Linear)]
    with torch.no_grad():
        for linear, weight, bias in zip(linears, weights, biases):
            linear.weight.copy_(torch.as_tensor(weight))
            linear.bias.copy_(torch.as_tensor(bias))
    return model.eval()


def hand_jacobians(weights, biases, x: np.ndarray) -> np.ndarray:
    """J = D_L W_L ... D_1 W_1 per point, D_l = diag(1[z_l > 0]) (ReLU network)."""
    out = []
    for point in x:
        jacobian = np.eye(len(point))
        h = point
        for weight, bias in zip(weights, biases):
            z = weight @ h + bias
            jacobian = ((z > 0)[:, None] * weight) @ jacobian
            h = np.maximum(z, 0)
        out.append(jacobian)
    return np.array(out)


def _network(n, widths, seed):
    rng = np.random.default_rng(seed)
    weights, biases, width = [], [], n
    for out in widths:
        weights.append(rng.standard_normal((out, width)))
        biases.append(rng.uniform(-0.5, 2.0, out))  # mostly live units, some dead
        width = out
    return weights, biases


def test_feature_jacobians_of_a_relu_network_by_hand():
    """feature_jacobians = D2 W2 D1 W1 for a two-layer ReLU network, in forward mode (n = 3 < m = 5)
    and reverse mode (n = 6 > m = 2 and n = m = 4); the result is detached."""
    for n, widths in [(3, (4, 5)), (6, (4, 2)), (4, (3, 4))]:
        weights, biases = _network(n, widths, seed=n)
        model = relu_mlp(weights, biases)
        x = np.random.default_rng(1).standard_normal((7, n))
        jacobians = feature_jacobians(model, torch.as_tensor(x))
        assert jacobians.shape == (7, widths[-1], n) and not jacobians.requires_grad
        expected = hand_jacobians(weights, biases, x)
        assert np.abs(expected).sum() > 0 and (expected == 0).any()  # live and dead units both occur
        np.testing.assert_allclose(jacobians.numpy(), expected, atol=1e-12)


def test_batched_jacobians_of_a_smooth_map_against_finite_differences():
    """batched_jacobians of f(x) = (sin(x1 x2), x1^2, x2 x3, cos x3) (d = 3 < m = 4, forward mode)
    and of its first two outputs (m = 2 < d, reverse mode) against the derivatives by hand."""
    def function(x):
        return torch.stack([torch.sin(x[:, 0] * x[:, 1]), x[:, 0] ** 2, x[:, 1] * x[:, 2], torch.cos(x[:, 2])], 1)

    x = torch.tensor([[0.3, -1.2, 0.7], [1.5, 0.4, -2.0]], dtype=torch.float64)
    x1, x2, x3 = x[:, 0], x[:, 1], x[:, 2]
    zero = torch.zeros_like(x1)
    expected = torch.stack([
        torch.stack([x2 * torch.cos(x1 * x2), x1 * torch.cos(x1 * x2), zero], 1),
        torch.stack([2 * x1, zero, zero], 1),
        torch.stack([zero, x3, x2], 1),
        torch.stack([zero, zero, -torch.sin(x3)], 1),
    ], 1)
    torch.testing.assert_close(batched_jacobians(function, x), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(batched_jacobians(lambda p: function(p)[:, :2], x), expected[:, :2], rtol=0, atol=1e-14)


def test_batched_jacobians_picks_the_cheaper_autodiff_mode(monkeypatch):
    """Forward mode (d Jacobian-vector products) when the input is narrower than the output,
    reverse mode (m vector-Jacobian products) otherwise, ties included; the Jacobian is the same
    either way (here A for x -> A x)."""
    used = []
    for name in ("jacfwd", "jacrev"):
        original = getattr(stretch, name)
        monkeypatch.setattr(stretch, name, lambda f, original=original, name=name: used.append(name) or original(f))
    for d, m, n_points, mode in [(3, 5, 7, "jacfwd"), (5, 3, 2, "jacrev"), (4, 4, 2, "jacrev"), (2, 3, 1, "jacfwd")]:
        matrix = torch.as_tensor(np.random.default_rng(d).standard_normal((m, d)))
        points = torch.as_tensor(np.random.default_rng(m).standard_normal((n_points, d)))
        used.clear()
        jacobians = batched_jacobians(lambda p: p @ matrix.T, points)
        assert used == [mode], (d, m)
        torch.testing.assert_close(jacobians, matrix.expand(n_points, m, d), rtol=0, atol=1e-15)


def test_spectra_against_the_svd_both_gram_sides():
    """spectra(J): the singular values of J (descending) and its top right singular vector v_1
    (up to sign), from J^T J (n <= m) and from J J^T (n > m), with sigma_1 / sigma_2 = 1.01 so
    that an inaccurate inverse iteration would show."""
    rng = np.random.default_rng(2)
    for m, n in [(5, 3), (3, 5), (4, 4)]:
        r = min(m, n)
        left = np.linalg.qr(rng.standard_normal((m, r)))[0]
        right = np.linalg.qr(rng.standard_normal((n, r)))[0]
        sigma = np.array([2.0, 2.0 / 1.01, 0.5, 0.1][:r])
        jacobian = (left * sigma) @ right.T
        values, top = spectra(torch.as_tensor(np.stack([jacobian, 3.0 * jacobian])))
        np.testing.assert_allclose(values.numpy(), np.stack([sigma, 3 * sigma]), rtol=1e-10)
        assert values.dtype == torch.float64 and top.shape == (2, n)
        assert_same_direction(top.numpy(), np.stack([right[:, 0]] * 2), atol=1e-10)
        np.testing.assert_allclose(np.linalg.norm(top.numpy(), axis=1), 1.0, atol=1e-12)
    # The inverse iteration's shift is relative to sigma_1^2: tiny and huge Jacobians alike.
    for scale in (1e-4, 1e4):
        values, top = spectra(torch.as_tensor(scale * jacobian)[None])
        np.testing.assert_allclose(values.numpy(), [scale * sigma], rtol=1e-10)
        assert_same_direction(top.numpy(), right[:, :1].T, atol=1e-10)
    # float32 input is computed in float64.
    values, _ = spectra(torch.tensor([[[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], dtype=torch.float32))
    assert values.dtype == torch.float64
    np.testing.assert_allclose(values.numpy(), [[3.0, 1.0]], rtol=1e-7)


def test_gram_spectrum_resolution_and_degenerate_cases():
    """Singular values below GRAM_RESOLUTION sigma_1 read as 0 (1e-9 does, 1e-6 does not);
    G = 0 gives singular values 0 and the normalised starting vector 1 + linspace(0, 1, d)
    (no top direction, but finite); a repeated top eigenvalue gives a unit vector of its
    eigenspace; round-off negatives are clamped to 0."""
    assert GRAM_RESOLUTION == 1e-7
    gram = torch.diag(torch.tensor([1.0, 1e-18, 1e-12, 0.25], dtype=torch.float64))[None]
    values, top = gram_spectrum(gram)
    np.testing.assert_allclose(values.numpy(), [[1.0, 0.5, 1e-6, 0.0]], rtol=1e-9)
    np.testing.assert_allclose(np.abs(top.numpy()), [[1.0, 0.0, 0.0, 0.0]], atol=1e-12)
    values, top = gram_spectrum(torch.zeros(1, 3, 3, dtype=torch.float64))
    np.testing.assert_array_equal(values.numpy(), [[0.0, 0.0, 0.0]])
    start = np.array([1.0, 1.5, 2.0])
    np.testing.assert_allclose(top.numpy(), [start / np.linalg.norm(start)], atol=1e-15)
    repeated = torch.diag(torch.tensor([2.0, 2.0, 0.5], dtype=torch.float64))[None]
    values, top = gram_spectrum(repeated)
    np.testing.assert_allclose(values.numpy(), [[math.sqrt(2), math.sqrt(2), math.sqrt(0.5)]], rtol=1e-12)
    assert abs(float(top[0, 2])) < 1e-9 and float(top.norm()) == pytest.approx(1.0, abs=1e-12)
    negative = torch.diag(torch.tensor([4.0, -1e-17], dtype=torch.float64))[None]
    values, _ = gram_spectrum(negative)
    np.testing.assert_array_equal(values.numpy(), [[2.0, 0.0]])
    # The cut is relative to sigma_1 and strict: sigma^2 = GRAM_RESOLUTION^2 sigma_1^2 exactly reads as 0.
    at_cut = GRAM_RESOLUTION**2
    diagonal = torch.tensor([1.0, at_cut, 1.0000000000000002e-14], dtype=torch.float64)
    values, _ = gram_spectrum(torch.diag(diagonal)[None])
    np.testing.assert_allclose(values.numpy(), [[1.0, 1e-7, 0.0]], rtol=1e-9)
    values, _ = gram_spectrum(torch.diag(torch.tensor([100.0, 1e-13, 1e-11], dtype=torch.float64))[None])
    np.testing.assert_allclose(values.numpy(), [[10.0, math.sqrt(1e-11), 0.0]], rtol=1e-9)
    # G = 0 in d = 4: the start 1 + linspace(0, 1, 4) = (1, 4/3, 5/3, 2) in float64, normalised.
    _, top = gram_spectrum(torch.zeros(1, 4, 4, dtype=torch.float64))
    start = 1 + np.linspace(0, 1, 4)
    np.testing.assert_allclose(top.numpy(), [start / np.linalg.norm(start)], rtol=0, atol=1e-15)
    # A wide zero Jacobian: v_1 = J^T u_1 = 0, kept finite (no 0 / 0).
    values, top = spectra(torch.zeros(1, 2, 5, dtype=torch.float64))
    np.testing.assert_array_equal(values.numpy(), [[0.0, 0.0]])
    np.testing.assert_array_equal(top.numpy(), np.zeros((1, 5)))


def test_top_eigenvector_with_an_eigenvector_orthogonal_to_the_start():
    """Inverse iteration finds v_1 = (1, -2, 1) / sqrt 6, which is orthogonal to the starting
    vector's constant part and not to 1 + linspace(0, 1, 3), with eigenvalues 4 and 3.9."""
    v1 = np.array([1.0, -2.0, 1.0]) / math.sqrt(6)
    v2 = np.array([1.0, 0.0, -1.0]) / math.sqrt(2)
    v3 = np.array([1.0, 1.0, 1.0]) / math.sqrt(3)
    gram = 4.0 * np.outer(v1, v1) + 3.9 * np.outer(v2, v2) + 0.2 * np.outer(v3, v3)
    values, top = gram_spectrum(torch.as_tensor(gram)[None])
    np.testing.assert_allclose(values.numpy(), [[2.0, math.sqrt(3.9), math.sqrt(0.2)]], rtol=1e-12)
    assert_same_direction(top.numpy()[0], v1, atol=1e-12)


def test_top_direction_when_the_top_two_singular_values_nearly_tie():
    """sigma = (1, 1 - 1e-5, 0.3): v_1 is still determined to ~1e-11 (its sensitivity is
    eps / (sigma_1^2 - sigma_2^2)), and three inverse-iteration steps with the shift 1e-10 sigma_1^2
    above sigma_1^2 reach it (each step shrinks the v_2 part by 1e-10 / 2e-5)."""
    rng = np.random.default_rng(12)
    for m, n in [(4, 3), (3, 5)]:
        left = np.linalg.qr(rng.standard_normal((m, 3)))[0]
        right = np.linalg.qr(rng.standard_normal((n, 3)))[0]
        jacobian = (left * np.array([1.0, 1.0 - 1e-5, 0.3])) @ right.T
        _, top = spectra(torch.as_tensor(jacobian)[None])
        assert_same_direction(top.numpy()[0], right[:, 0], atol=1e-9)


def _tangent_of(manifold, u):
    """Dense tangent bases (N, n, k) of a manifold at chart points u, float64."""
    return torch.as_tensor(manifold.tangent_basis(u))


def _expected_point_stats(jacobians: np.ndarray, bases: np.ndarray):
    """Per-point numbers from the SVD of each J: singular values, |<v_1, .>|-free tangent fraction
    ||U^T v_1||, ||J||_F^2 and ||J U||_F^2."""
    singular, tangent_top = [], []
    for jacobian, basis in zip(jacobians, bases):
        _, s, vt = np.linalg.svd(jacobian)
        singular.append(s)
        tangent_top.append(np.linalg.norm(basis.T @ vt[0]))
    total = np.sum(jacobians**2, axis=(1, 2))
    tangent_energy = np.sum((jacobians @ bases) ** 2, axis=(1, 2))
    return np.array(singular), np.array(tangent_top), total, tangent_energy


@pytest.mark.parametrize("n, widths", [(6, (4, 3)), (3, (4, 5)), (3, (2, 5)), (4, (4, 3)), (4, (3, 4))],
                         ids=["first-layer-path", "full-jacobian", "narrow-first-wide-last", "equal-first-width",
                              "equal-last-width"])
def test_point_stretch_against_hand_jacobians(n, widths, monkeypatch):
    """point_stretch on a sphere's tangent spaces, in chunks of 2 points: singular values, v_1,
    ||J||_F^2, ||J U||_F^2 and ||U^T v_1|| from the hand Jacobians' SVDs, the same for a dense,
    factored and Householder tangent operator. With n > h1 and m <= n it goes through the first
    layer (J = A W1, never formed); otherwise through the full Jacobians."""
    weights, biases = _network(n, widths, seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=1)
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = sphere.immersion(u)
    bases = sphere.tangent_basis(u)
    jacobians = hand_jacobians(weights, biases, x)
    singular, tangent_top, total, tangent_energy = _expected_point_stats(jacobians, bases)
    assert np.all(singular[:, 0] > 1.05 * singular[:, 1])  # v_1 is unique up to sign at every point
    calls = []
    original = stretch._first_layer_stats
    monkeypatch.setattr(stretch, "_first_layer_stats", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(stretch, "JACOBIAN_CHUNK_BYTES", 4 * widths[-1] * n * 2)
    for tangent in (_tangent_of(sphere, u), tangent_spaces(sphere, u, dtype=torch.float64),
                    tangent_subspaces(sphere, u, dtype=torch.float64)):
        stats = point_stretch(model, torch.as_tensor(x), tangent)
        assert stats["singular_values"].shape == (5, min(widths[-1], n))
        np.testing.assert_allclose(stats["singular_values"].numpy(), singular, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats["total"].numpy(), total, rtol=1e-10)
        np.testing.assert_allclose(stats["tangent_energy"].numpy(), tangent_energy, rtol=1e-9)
        np.testing.assert_allclose(stats["top_tangent"].numpy(), tangent_top, rtol=1e-8)
        top = np.array([np.linalg.svd(jacobian)[2][0] for jacobian in jacobians])
        assert_same_direction(stats["top_direction"].numpy(), top, atol=1e-9)
    assert bool(calls) == (widths[0] < n and widths[-1] <= n)


@pytest.mark.parametrize("n, widths, budget, sizes", [
    (3, (4, 5), 4 * 5 * 3 * 2, [2, 2, 1]),  # full Jacobians: 4 m n bytes a point
    (3, (4, 5), 4 * 5 * 3 * 2 - 1, [1, 1, 1, 1, 1]),
    (3, (4, 5), 1, [1, 1, 1, 1, 1]),  # never fewer than one point
    (3, (4, 5), 4 * 5 * 3 * 5, [5]),
    (6, (4, 3), 4 * 3 * 4 * 3, [3, 2]),  # through the first layer: 4 m h1 bytes a point
    (6, (4, 3), 4 * 3 * 4 * 3 - 1, [2, 2, 1]),
], ids=["full-2", "full-below-2", "full-tiny-budget", "full-all", "first-layer-3", "first-layer-below-3"])
def test_point_stretch_chunks_follow_the_byte_budget(n, widths, budget, sizes, monkeypatch):
    """point_stretch holds at most JACOBIAN_CHUNK_BYTES of float32-sized Jacobians at once: chunks
    of max(1, budget // (4 m c)) consecutive points, c = h1 through the first layer and n
    otherwise; the per-point numbers are those of one chunk."""
    weights, biases = _network(n, widths, seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=1)
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = torch.as_tensor(sphere.immersion(u))
    tangent = tangent_spaces(sphere, u, dtype=torch.float64)
    whole = point_stretch(model, x, tangent)
    seen = []
    for name in ("_first_layer_stats", "_jacobian_stats"):
        original = getattr(stretch, name)

        def spy(*args, original=original):
            seen.append(args[-1].tolist())
            return original(*args)

        monkeypatch.setattr(stretch, name, spy)
    monkeypatch.setattr(stretch, "JACOBIAN_CHUNK_BYTES", budget)
    chunked = point_stretch(model, x, tangent)
    starts = np.cumsum([0] + sizes[:-1])
    assert seen == [list(range(start, start + size)) for start, size in zip(starts, sizes)]
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, widths", [(6, (4, 3)), (3, (4, 5))], ids=["first-layer-path", "full-jacobian"])
def test_point_stretch_computes_float32_tangent_operators_in_float64(n, widths):
    """A float32 tangent operator is cast to float64 first: the same numbers (to 1e-12) as the
    operator cast by hand, not float32 arithmetic (errors near 1e-7)."""
    weights, biases = _network(n, widths, seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=1)
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = torch.as_tensor(sphere.immersion(u))
    for tangent in (tangent_spaces(sphere, u, dtype=torch.float32), tangent_subspaces(sphere, u, dtype=torch.float32),
                    _tangent_of(sphere, u).float()):
        cast = tangent.double() if isinstance(tangent, torch.Tensor) else tangent.to(dtype=torch.float64)
        got, expected = point_stretch(model, x, tangent), point_stretch(model, x, cast)
        for key in ("total", "tangent_energy", "top_tangent"):
            assert got[key].dtype == torch.float64
            torch.testing.assert_close(got[key], expected[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, widths", [(6, (4, 3)), (3, (4, 5)), (3, (4, 3))],
                         ids=["first-layer-path", "full-jacobian-forward", "full-jacobian-reverse"])
def test_stretch_creates_every_tensor_on_its_inputs_device(n, widths):
    """With the default device set to "meta" (a stand-in for a second device on a CPU-only
    machine), the CPU model, points, tangent operator and numpy feature directions give the same
    summary as before: every tensor the measurement makes (the inverse iteration's start, the chunk
    rows, the feature directions) is placed on its inputs' device, not the default one."""
    weights, biases = _network(n, widths, seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=1)
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = torch.as_tensor(sphere.immersion(u))
    tangent = tangent_spaces(sphere, u, dtype=torch.float64)
    direction = np.random.default_rng(0).standard_normal((5, n))
    expected = stretch_spectra(model, tangent, {"d": direction}, x=x)
    torch.set_default_device("meta")
    try:
        got = stretch_spectra(model, tangent, {"d": direction}, x=x)
    finally:
        torch.set_default_device(None)
    assert got == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
@pytest.mark.parametrize("n, widths", [(6, (4, 3)), (3, (4, 5))], ids=["first-layer-path", "full-jacobian"])
def test_stretch_moves_a_cpu_tangent_operator_to_the_points_device(n, widths):
    """Points and model on CUDA, the tangent operator on the CPU: the operator is moved to the
    points' device, and the numbers equal the all-CPU ones."""
    weights, biases = _network(n, widths, seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=1)
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = torch.as_tensor(sphere.immersion(u))
    for tangent in (tangent_spaces(sphere, u, dtype=torch.float64), tangent_subspaces(sphere, u, dtype=torch.float64),
                    _tangent_of(sphere, u)):
        cpu = point_stretch(model, x, tangent)
        cuda = point_stretch(model.cuda(), x.cuda(), tangent)
        model.cpu()
        for key in ("singular_values", "total", "tangent_energy", "top_tangent"):
            assert cuda[key].device.type == "cuda"
            torch.testing.assert_close(cuda[key].cpu(), cpu[key], rtol=1e-9, atol=1e-12)


def test_first_layer_path_hands_the_householder_operator_the_total_energy(monkeypatch):
    """Through the first layer, the Householder tangent operator gets ||J||_F^2 (= trace(J J^T),
    here from the hand Jacobians), which spares it a product when E is square."""
    from simulator.attacks.operators import HypersurfaceTangents

    weights, biases = _network(6, (4, 3), seed=1)
    model = relu_mlp(weights, biases)
    sphere = Sphere(dim=5, ambient_dim=6, embedding="identity")
    u = sphere.sample_chart(5, np.random.default_rng(3))
    x = sphere.immersion(u)
    seen = []
    original = HypersurfaceTangents.shared_energy
    monkeypatch.setattr(HypersurfaceTangents, "shared_energy",
                        lambda self, inner, w, rows=None, total=None: seen.append(total)
                        or original(self, inner, w, rows, total))
    stats = point_stretch(model, torch.as_tensor(x), tangent_subspaces(sphere, u, dtype=torch.float64))
    (total,), jacobians = seen, hand_jacobians(weights, biases, x)
    np.testing.assert_allclose(total.numpy(), np.sum(jacobians**2, axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(stats["tangent_energy"].numpy(),
                               np.sum((jacobians @ sphere.tangent_basis(u)) ** 2, axis=(1, 2)), rtol=1e-9)


def test_point_stretch_of_a_model_without_a_first_layer_split():
    """A features-only model (no first_layer_split) is measured through its full Jacobians:
    features(x) = A x gives singular values of A and energies ||A||_F^2, ||A U||_F^2."""
    class Linear(nn.Module):
        def __init__(self, matrix):
            super().__init__()
            self.matrix = torch.as_tensor(matrix)

        def features(self, x):
            return x @ self.matrix.T

    matrix = np.array([[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    flat = Flat(dim=2, ambient_dim=4, embedding="identity")
    u = np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.0]])
    stats = point_stretch(Linear(matrix), torch.as_tensor(flat.immersion(u)), _tangent_of(flat, u))
    np.testing.assert_allclose(stats["singular_values"].numpy(), [[math.sqrt(5), 1.0]] * 3, rtol=1e-12)
    np.testing.assert_allclose(stats["total"].numpy(), [6.0] * 3, rtol=1e-12)
    np.testing.assert_allclose(stats["tangent_energy"].numpy(), [5.0] * 3, rtol=1e-12)  # columns 1, 2: 4 + 1
    np.testing.assert_allclose(stats["top_tangent"].numpy(), [2 / math.sqrt(5)] * 3, rtol=1e-12)


def test_stretch_spectra_summaries_in_closed_form():
    """stretch_spectra of per-point diagonal Jacobians J_i = diag(a_i, b_i, 0)^T-padded (m = 3,
    n = 4) on the tangent space span(e_1, e_2): mean singular values, median of sigma_1 /
    sigma_min (inf where J is rank-deficient), normal share ||J P_N||^2 / ||J||^2 averaged over
    points with J != 0, the baselines (n - k) / n and sqrt(k / n), the tangent fraction of v_1 and
    the mean |<v_1, d>| per named feature direction."""
    n, m, k = 4, 3, 2
    diagonals = np.array([[3.0, 1.0, 0.5], [2.0, 2.5, 1.0], [4.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]])
    jacobians = np.zeros((5, m, n))
    jacobians[:, 0, 0] = diagonals[:, 0]
    jacobians[:, 1, 1] = diagonals[:, 1]
    jacobians[:, 2, 3] = diagonals[:, 2]  # the third feature reads the normal coordinate e_4
    basis = np.eye(n)[:, :k]
    bases = np.broadcast_to(basis, (5, n, k)).copy()
    directions = {"first": np.tile(np.eye(n)[0], (5, 1)), "second": np.tile(np.eye(n)[1], (5, 1))}
    summary = stretch_spectra(torch.as_tensor(jacobians), torch.as_tensor(bases), feature_directions=directions)
    sorted_values = -np.sort(-diagonals, axis=1)
    np.testing.assert_allclose(summary["mean_singular_values"], sorted_values.mean(axis=0), rtol=1e-12)
    # ratios: 6, 2.5, inf, inf (J = 0), 6 -> torch's median (lower middle of 5) = 6
    assert summary["median_stretch_ratio"] == pytest.approx(6.0, rel=1e-12)
    shares = [0.25 / 10.25, 1.0 / 11.25, 0.0 / 17.0, 0.25 / 10.25]
    assert summary["normal_energy_share"] == pytest.approx(np.mean(shares), rel=1e-12)
    assert summary["normal_energy_baseline"] == (n - k) / n == 0.5
    assert summary["top_direction_tangent_baseline"] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert summary["n_points"] == 5 and type(summary["n_points"]) is int
    # v_1 is e_1, e_2, e_1, 0 (J = 0 and n > m: v_1 = J^T u_1 = 0, kept finite), e_2.
    assert summary["top_direction_tangent_fraction"] == pytest.approx(0.8, rel=1e-12)
    assert summary["top_direction_feature_alignment"]["first"] == pytest.approx(0.4, rel=1e-12)
    assert summary["top_direction_feature_alignment"]["second"] == pytest.approx(0.4, rel=1e-12)
    plain = stretch_spectra(torch.as_tensor(jacobians), torch.as_tensor(bases))
    assert "top_direction_feature_alignment" not in plain
    assert plain["median_stretch_ratio"] == summary["median_stretch_ratio"]
    assert isinstance(plain["mean_singular_values"], list) and isinstance(plain["normal_energy_share"], float)


def test_normal_energy_share_averages_over_every_nonzero_jacobian_however_small():
    """The normal share is averaged over the points with ||J||_F > 0, whatever its size: J with
    equal entries 0.5 on e_1 (tangent) and e_4 (normal) has share 1/2 at scale 1 and at 1e-3;
    a zero J is left out (it has no share)."""
    jacobians = np.zeros((3, 2, 4))
    jacobians[0, 0, 0] = jacobians[0, 1, 3] = 0.5
    jacobians[1] = 1e-3 * jacobians[0]
    bases = np.broadcast_to(np.eye(4)[:, :2], (3, 4, 2)).copy()
    summary = stretch_spectra(torch.as_tensor(jacobians), torch.as_tensor(bases))
    assert summary["normal_energy_share"] == pytest.approx(0.5, rel=1e-12)
    single = stretch_spectra(torch.as_tensor(jacobians[1:2]), torch.as_tensor(bases[1:2]))
    assert single["normal_energy_share"] == pytest.approx(0.5, rel=1e-12)


def test_stretch_spectra_of_a_model_at_points_equals_the_jacobian_route():
    """With x, stretch_spectra measures the model's own Jacobians: the same summary as passing
    the hand Jacobians, both through the first-layer path (n = 6 > h1 = 4) and without it; the
    alignment with a direction is |<v_1, d>| averaged, and signs of d do not matter."""
    for n, widths in [(6, (4, 3)), (3, (4, 5))]:
        weights, biases = _network(n, widths, seed=1)
        model = relu_mlp(weights, biases)
        sphere = Sphere(dim=n - 1, ambient_dim=n, embedding_seed=2)
        u = sphere.sample_chart(7, np.random.default_rng(4))
        x = sphere.immersion(u)
        bases = sphere.tangent_basis(u)
        jacobians = hand_jacobians(weights, biases, x)
        direction = np.random.default_rng(5).standard_normal((7, n))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        flipped = direction * np.where(np.arange(7) % 2, -1.0, 1.0)[:, None]
        from_model = stretch_spectra(model, torch.as_tensor(bases), {"d": direction, "flipped": flipped},
                                     x=torch.as_tensor(x))
        singular, tangent_top, total, tangent_energy = _expected_point_stats(jacobians, bases)
        assert np.all(singular[:, 0] > 1.05 * singular[:, 1])
        np.testing.assert_allclose(from_model["mean_singular_values"], singular.mean(axis=0), rtol=1e-9, atol=1e-9)
        resolved = singular[:, -1] > GRAM_RESOLUTION * singular[:, 0]
        ratio = np.where(resolved, singular[:, 0] / np.where(resolved, singular[:, -1], 1.0), np.inf)
        assert from_model["median_stretch_ratio"] == pytest.approx(np.sort(ratio)[3], rel=1e-8)
        assert from_model["normal_energy_share"] == pytest.approx(np.mean(1 - tangent_energy / total), rel=1e-9)
        assert from_model["normal_energy_baseline"] == pytest.approx(1 / n, rel=1e-15)
        assert from_model["top_direction_tangent_baseline"] == pytest.approx(math.sqrt((n - 1) / n), rel=1e-15)
        assert from_model["top_direction_tangent_fraction"] == pytest.approx(tangent_top.mean(), rel=1e-8)
        top = np.array([np.linalg.svd(j)[2][0] for j in jacobians])
        expected_alignment = np.mean(np.abs(np.sum(top * direction, axis=1)))
        assert from_model["top_direction_feature_alignment"]["d"] == pytest.approx(expected_alignment, rel=1e-8)
        assert from_model["top_direction_feature_alignment"]["flipped"] == pytest.approx(expected_alignment, rel=1e-8)
        assert from_model["n_points"] == 7
