"""Property tests run over every manifold family, checked against finite differences,
brute-force searches and closed forms."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from simulator.config.scene import FAMILY_NAMES, MANIFOLD_SPECS
from simulator.manifolds import (
    MANIFOLD_FAMILIES,
    ConcentricSpheres,
    Flat,
    SineSheet,
    Sphere,
    SwissRoll,
    Torus,
)

# (id, constructor, reach-safe offset): offsets stay well below each manifold's reach, so a
# point that far along the normal has a unique nearest point, the foot of that normal.
CASES = [
    ("flat-k1", lambda: Flat(dim=1, extent=2.0), 0.5),
    ("flat-k3-n7", lambda: Flat(dim=3, ambient_dim=7, embedding_seed=3), 0.5),
    ("sphere-k1", lambda: Sphere(dim=1, radius=2.0), 0.5),
    ("sphere-k2-n7", lambda: Sphere(dim=2, ambient_dim=7), 0.3),
    ("sphere-k3-identity", lambda: Sphere(dim=3, ambient_dim=5, embedding="identity"), 0.3),
    ("torus", lambda: Torus(), 0.15),
    ("torus-n7", lambda: Torus(major_radius=2.0, minor_radius=0.5, ambient_dim=7, embedding_seed=1), 0.2),
    ("swiss_roll", lambda: SwissRoll(), 0.08),
    ("swiss_roll-n7", lambda: SwissRoll(t_min=2.0, t_max=10.0, width=4.0, scale=0.2, ambient_dim=7), 0.1),
    ("sine_sheet-k1", lambda: SineSheet(dim=1, amplitude=0.5, frequency=3.0), 0.1),
    ("sine_sheet-k2-n7", lambda: SineSheet(ambient_dim=7), 0.2),
    ("sine_sheet-k3-identity", lambda: SineSheet(dim=3, amplitude=0.2, ambient_dim=6, embedding="identity"), 0.2),
    ("concentric-k1", lambda: ConcentricSpheres(dim=1), 0.1),
    ("concentric-k2-n7", lambda: ConcentricSpheres(dim=2, ambient_dim=7), 0.1),
    ("concentric-k3", lambda: ConcentricSpheres(dim=3, inner_radius=2.0, outer_radius=3.0), 0.3),
]


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def case(request):
    _, build, offset = request.param
    return build(), offset


def _rng(manifold):
    # crc32, not hash(): str hashes change from one interpreter run to the next.
    return np.random.default_rng(zlib.crc32(repr(manifold).encode()))


def _interior_chart(manifold, n_samples, rng):
    """Sampled chart points away from the chart's edges and the sphere's poles, where the
    Jacobian degenerates or a finite-difference step would leave the box."""
    u = manifold.sample_chart(4 * n_samples, rng)
    width = manifold.chart_high - manifold.chart_low
    margin = 0.05 * width
    inside = np.all((u > manifold.chart_low + margin) & (u < manifold.chart_high - margin), axis=1)
    if isinstance(manifold, ConcentricSpheres) and manifold.dim > 1:
        polar = np.mod(u[:, 0], math.pi)
        inside &= (polar > 0.1) & (polar < math.pi - 0.1)
    u = u[inside][:n_samples]
    assert len(u) == n_samples
    return u


def _fd_jacobian(manifold, u, step=1e-6):
    columns = []
    for i in range(manifold.dim):
        shift = np.zeros(manifold.dim)
        shift[i] = step
        columns.append((manifold.immersion(u + shift) - manifold.immersion(u - shift)) / (2 * step))
    return np.stack(columns, axis=-1)


def _off_host(manifold, n_samples, rng, scale):
    """Random ambient vectors orthogonal to range(E): they move no nearest point."""
    vectors = rng.standard_normal((n_samples, manifold.ambient_dim))
    embedding = manifold.embedding_matrix
    vectors -= (vectors @ embedding) @ embedding.T
    return scale * vectors


def _squared_distances(a, b):
    """Pairwise squared distances (len(a), len(b))."""
    squared = np.sum(a**2, axis=1)[:, None] - 2 * a @ b.T + np.sum(b**2, axis=1)[None, :]
    return np.maximum(squared, 0.0)


def test_registry_names():
    assert set(MANIFOLD_FAMILIES) == {"flat", "sphere", "torus", "swiss_roll", "sine_sheet", "concentric_spheres"}
    assert set(MANIFOLD_FAMILIES) == set(FAMILY_NAMES)  # the registry and the scene schema's tags agree
    for name, cls in MANIFOLD_FAMILIES.items():
        assert cls.family == name


@pytest.mark.parametrize("spec_class, family", list(zip(MANIFOLD_SPECS, FAMILY_NAMES)), ids=FAMILY_NAMES)
def test_every_schema_family_builds_its_class_with_the_spec_values(spec_class, family):
    spec = spec_class(family=family, ambient_dim=5, embedding_seed=2)
    manifold = spec.build()
    assert type(manifold) is MANIFOLD_FAMILIES[family]
    assert (manifold.dim, manifold.ambient_dim) == (spec.host_dim() - 1, 5)
    # every field the spec sets reaches the manifold (unset optional ones take the family's own)
    for name, value in spec.model_dump(exclude={"family"}, exclude_none=True).items():
        assert f"{name}={value!r}" in repr(manifold), name
    u = manifold.sample_chart(50, np.random.default_rng(0))
    assert manifold.belongs(manifold.immersion(u)).all()


def test_samples_belong_and_stay_in_box(case):
    manifold, _ = case
    u = manifold.sample_chart(500, _rng(manifold))
    assert u.shape == (500, manifold.dim)
    assert np.all(u >= manifold.chart_low) and np.all(u <= manifold.chart_high)
    x = manifold.immersion(u)
    assert x.shape == (500, manifold.ambient_dim)
    assert manifold.belongs(x, atol=1e-9).all()


def test_batching_over_leading_dims(case):
    manifold, _ = case
    u = _interior_chart(manifold, 12, _rng(manifold)).reshape(3, 4, manifold.dim)
    n, k = manifold.ambient_dim, manifold.dim
    assert manifold.immersion(u).shape == (3, 4, n)
    assert manifold.jacobian(u).shape == (3, 4, n, k)
    assert manifold.tangent_basis(u).shape == (3, 4, n, k)
    assert manifold.unit_normal(u).shape == (3, 4, n)
    assert manifold.chart(manifold.immersion(u)).shape == (3, 4, k)
    assert manifold.belongs(manifold.immersion(u)).shape == (3, 4)
    assert manifold.component(u).shape == (3, 4)
    np.testing.assert_allclose(manifold.immersion(u)[1, 2], manifold.immersion(u[1, 2]))


def test_jacobian_and_tangent_basis_match_finite_differences(case):
    manifold, _ = case
    u = _interior_chart(manifold, 40, _rng(manifold))
    fd = _fd_jacobian(manifold, u)
    jacobian = manifold.jacobian(u)
    np.testing.assert_allclose(jacobian, fd, atol=1e-6 * (1 + np.abs(fd).max()))

    basis = manifold.tangent_basis(u)
    gram = np.swapaxes(basis, -1, -2) @ basis
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(manifold.dim), gram.shape), atol=1e-12)
    # Same span as the finite-difference Jacobian, and each column follows its chart direction.
    outside = fd - basis @ (np.swapaxes(basis, -1, -2) @ fd)
    assert np.linalg.norm(outside, axis=(-2, -1)).max() <= 1e-6 * np.linalg.norm(fd, axis=(-2, -1)).max()
    assert np.all(np.einsum("...ni,...ni->...i", basis, jacobian) > 0)


def test_unit_normal(case):
    manifold, _ = case
    u = _interior_chart(manifold, 40, _rng(manifold))
    normal = manifold.unit_normal(u)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("...n,...nk->...k", normal, manifold.tangent_basis(u)), 0.0, atol=1e-12)
    embedding = manifold.embedding_matrix
    np.testing.assert_allclose(normal @ embedding @ embedding.T, normal, atol=1e-12)


def test_tangent_and_normal_parts_are_complementary(case):
    manifold, _ = case
    rng = _rng(manifold)
    u = _interior_chart(manifold, 30, rng)
    vector = rng.standard_normal((30, manifold.ambient_dim))
    tangent, normal = manifold.to_tangent(vector, u), manifold.to_normal(vector, u)
    np.testing.assert_allclose(tangent + normal, vector, atol=1e-12)
    np.testing.assert_allclose(manifold.to_tangent(tangent, u), tangent, atol=1e-12)
    np.testing.assert_allclose(manifold.to_normal(normal, u), normal, atol=1e-12)
    np.testing.assert_allclose(np.sum(tangent * normal, axis=-1), 0.0, atol=1e-12)
    # The hypersurface normal is the part of the normal space inside range(E).
    unit_normal = manifold.unit_normal(u)
    np.testing.assert_allclose(manifold.to_normal(unit_normal, u), unit_normal, atol=1e-12)
    np.testing.assert_allclose(manifold.to_tangent(unit_normal, u), 0.0, atol=1e-12)


def test_normal_offsets_project_back(case):
    manifold, offset = case
    rng = _rng(manifold)
    u = _interior_chart(manifold, 60, rng)
    base = manifold.immersion(u)
    t = rng.uniform(-offset, offset, size=(60, 1))
    point = base + t * manifold.unit_normal(u) + _off_host(manifold, 60, rng, 0.3)
    np.testing.assert_allclose(manifold.projection(point), base, atol=1e-9)
    chart = manifold.chart(point)
    assert np.array_equal(manifold.component(chart), manifold.component(u))
    difference = chart - u
    for i, periodic in enumerate(manifold.periodic):
        if periodic:
            difference[:, i] = (difference[:, i] + math.pi) % (2 * math.pi) - math.pi
    np.testing.assert_allclose(difference, 0.0, atol=1e-8)


def test_projection_is_idempotent_and_belongs(case):
    manifold, _ = case
    rng = _rng(manifold)
    x = manifold.immersion(manifold.sample_chart(100, rng))
    point = x + 0.5 * rng.standard_normal(x.shape)
    if isinstance(manifold, SineSheet):  # its nearest point is exact only within the reach
        point = x + manifold.to_normal(0.2 * rng.standard_normal(x.shape), manifold.chart(x))
    projected = manifold.projection(point)
    assert manifold.belongs(projected, atol=1e-9).all()
    np.testing.assert_allclose(manifold.projection(projected), projected, atol=1e-9)


def test_projection_is_nearest_against_brute_force(case):
    manifold, offset = case
    rng = _rng(manifold)
    n_queries = 20
    u = _interior_chart(manifold, n_queries, rng)
    t = rng.uniform(-2 * offset, 2 * offset, size=(n_queries, 1))
    point = manifold.immersion(u) + t * manifold.unit_normal(u) + _off_host(manifold, n_queries, rng, 0.5)
    # A dense cloud of manifold points: a grid refined by samples.
    resolution = {1: 4000, 2: 160, 3: 40}[manifold.dim]
    cloud = manifold.immersion(np.concatenate([manifold.chart_grid(resolution), manifold.sample_chart(20000, rng)]))
    brute = np.sqrt(_squared_distances(point, cloud).min(axis=1))
    distance = np.linalg.norm(point - manifold.projection(point), axis=1)
    assert np.all(distance <= brute + 1e-9)
    # The check has teeth: the brute-force minimum is within the cloud's covering radius
    # (estimated from fresh manifold points) of the true one.
    fresh = manifold.immersion(manifold.sample_chart(300, rng))
    covering = np.sqrt(_squared_distances(fresh, cloud).min(axis=1)).max()
    assert np.all(brute - distance <= 1.5 * covering)


def test_embedding_is_an_isometry(case):
    manifold, _ = case
    rng = _rng(manifold)
    embedding = manifold.embedding_matrix
    assert embedding.shape == (manifold.ambient_dim, manifold.host_dim)
    np.testing.assert_allclose(embedding.T @ embedding, np.eye(manifold.host_dim), atol=1e-12)
    u1, u2 = manifold.sample_chart(50, rng), manifold.sample_chart(50, rng)
    host = manifold._host_immersion(u1) - manifold._host_immersion(u2)
    ambient = manifold.immersion(u1) - manifold.immersion(u2)
    np.testing.assert_allclose(np.linalg.norm(ambient, axis=1), np.linalg.norm(host, axis=1), atol=1e-12)


def test_embedding_seed():
    same = [Sphere(dim=2, ambient_dim=7, embedding_seed=5).embedding_matrix for _ in range(2)]
    np.testing.assert_array_equal(*same)
    other = Sphere(dim=2, ambient_dim=7, embedding_seed=6).embedding_matrix
    assert np.abs(same[0] - other).max() > 0.1
    np.testing.assert_array_equal(Torus(ambient_dim=5, embedding="identity").embedding_matrix, np.eye(5, 3))


def test_chart_grid():
    torus = Torus()
    grid = torus.chart_grid(8)
    assert grid.shape == (64, 2)
    assert grid.max() < 2 * math.pi  # periodic: the upper end repeats the lower one
    flat = Flat(dim=3, extent=2.0)
    grid = flat.chart_grid(5)
    assert grid.shape == (125, 3)
    assert grid.min() == -2.0 and grid.max() == 2.0


# --------------------------------------------------------------------------- closed forms


def test_sphere_projection_closed_form():
    sphere = Sphere(dim=3, radius=1.7, ambient_dim=6, embedding_seed=2)
    point = np.random.default_rng(0).standard_normal((50, 6))
    host = point @ sphere.embedding_matrix
    expected = 1.7 * host / np.linalg.norm(host, axis=1, keepdims=True) @ sphere.embedding_matrix.T
    np.testing.assert_allclose(sphere.projection(point), expected, atol=1e-12)
    identity = Sphere(dim=2, radius=1.7, embedding="identity")
    x = point[:, :3]
    np.testing.assert_allclose(identity.projection(x), 1.7 * x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-12)


def test_sphere_angles_round_trip_including_k1():
    circle = Sphere(dim=1, embedding="identity")
    np.testing.assert_allclose(circle.immersion([[0.0], [math.pi / 2]]), [[1.0, 0.0], [0.0, 1.0]], atol=1e-15)
    np.testing.assert_allclose(circle.chart([[0.0, -3.0]]), [[1.5 * math.pi]])


def test_flat_chart_closed_form():
    flat = Flat(dim=2, ambient_dim=5, embedding_seed=4)
    point = np.random.default_rng(1).standard_normal((30, 5)) * 3
    host = point @ flat.embedding_matrix
    np.testing.assert_allclose(flat.chart(point), host[:, :2], atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.norm(point - flat.projection(point), axis=1) ** 2,
        np.sum(point**2, axis=1) - np.sum(host[:, :2] ** 2, axis=1),
        atol=1e-10,
    )


def test_torus_distance_closed_form():
    torus = Torus(major_radius=1.5, minor_radius=0.5, ambient_dim=4, embedding="identity")
    rng = np.random.default_rng(2)
    point = np.concatenate([rng.uniform(-2.5, 2.5, (200, 3)), np.zeros((200, 1))], axis=1)
    rho = np.hypot(point[:, 0], point[:, 1])
    expected = np.abs(np.sqrt((rho - 1.5) ** 2 + point[:, 2] ** 2) - 0.5)
    np.testing.assert_allclose(np.linalg.norm(point - torus.projection(point), axis=1), expected, atol=1e-12)


def test_torus_sampling_is_area_uniform():
    torus = Torus(major_radius=1.0, minor_radius=0.5)
    theta = torus.sample_chart(40000, np.random.default_rng(3))[:, 0]
    # E[cos theta] under density (R + r cos theta) is (r / 2) / R = 0.25.
    assert abs(np.cos(theta).mean() - 0.25) < 0.015


def test_concentric_spheres_components_and_sampling():
    spheres = ConcentricSpheres(dim=2, inner_radius=1.0, outer_radius=1.5, ambient_dim=5)
    u = spheres.sample_chart(4000, np.random.default_rng(4))
    component = spheres.component(u)
    radius = np.linalg.norm(spheres.immersion(u), axis=1)
    np.testing.assert_allclose(radius, np.where(component == 1, 1.5, 1.0), atol=1e-12)
    assert abs(component.mean() - 0.5) < 0.04
    # The nearer sphere is decided by the mid radius 1.25.
    direction = spheres.unit_normal(u[:5])
    assert np.all(spheres.component(spheres.chart(1.2 * direction)) == 0)
    assert np.all(spheres.component(spheres.chart(1.3 * direction)) == 1)
    circles = ConcentricSpheres(dim=1, embedding="identity")
    np.testing.assert_allclose(circles.immersion([[0.5 * math.pi], [2.5 * math.pi]]), [[0, 1.0], [0, 1.3]], atol=1e-12)
    np.testing.assert_allclose(circles.chart([[0.0, 2.0], [-1.0, 0.0]]), [[2.5 * math.pi], [math.pi]])


def test_swiss_roll_nearest_point_against_dense_search():
    # Everywhere in the roll's bounding box, far from the sheet and midway between turns
    # (where two turns tie) included; s is exact, so the search is over t alone.
    roll = SwissRoll(t_min=0.5, t_max=20.0, ambient_dim=4, embedding="identity")
    rng = np.random.default_rng(6)
    # Half the points midway between two turns, at polar angle t and radius scale * (t + pi).
    angle = rng.uniform(roll.t_min, roll.t_max - 2 * math.pi, 150)
    midway = roll.scale * (angle + math.pi)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    point = rng.uniform(-1.2, 1.2, (300, 4))
    point[:150, [0, 2]] = midway
    t = np.linspace(roll.t_min, roll.t_max, 100001)
    spiral = roll.scale * np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    in_plane = np.sqrt(_squared_distances(point[:, [0, 2]], spiral).min(axis=1))
    brute = np.sqrt(in_plane**2 + point[:, 3] ** 2)
    distance = np.linalg.norm(point - roll.projection(point), axis=1)
    assert np.all(distance <= brute + 1e-12)
    assert np.all(brute - distance <= 1e-5)


def test_sine_sheet_nearest_point_within_half_reach():
    # The reach is at most 1 / (amplitude frequency^2) = 0.83 (curvature radius at the bump
    # tops); offsets in random directions of length up to 0.4 stay within about half of it.
    sheet = SineSheet(dim=2, amplitude=0.3, frequency=2.0, embedding="identity")
    rng = np.random.default_rng(8)
    direction = rng.standard_normal((30, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    point = sheet.immersion(sheet.sample_chart(30, rng)) + rng.uniform(0, 0.4, (30, 1)) * direction
    distance = np.linalg.norm(point - sheet.projection(point), axis=1)
    # Brute force on a dense grid of the window where the nearest point must lie (its chart
    # coordinates are within the distance, < 0.4, of the point's own first two coordinates).
    offsets = np.stack(np.meshgrid(*2 * [np.linspace(-0.42, 0.42, 301)], indexing="ij"), axis=-1).reshape(-1, 2)
    for x, d in zip(point, distance):
        cloud = sheet.immersion(x[:2] + offsets)
        brute = np.sqrt(_squared_distances(x[None], cloud).min())
        assert d <= brute + 1e-12
        # The grid's nearest point is within a spacing (0.0028, stretched at most 1.2 times by
        # the slope) of the true foot, so the squared distances differ by less than 2 spacing^2.
        assert brute**2 - d**2 <= 2 * 0.0028**2


def test_swiss_roll_defaults_fit_unit_scale():
    roll = SwissRoll(embedding="identity")
    x = roll.immersion(roll.sample_chart(2000, np.random.default_rng(5)))
    assert np.hypot(x[:, 0], x[:, 2]).max() <= 1.0 + 1e-12
    assert np.ptp(x[:, 1]) == pytest.approx(2.0, abs=0.05)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: Flat(dim=0), "dim"),
        (lambda: Flat(dim=2, extent=0.0), "extent"),
        (lambda: Sphere(dim=2, radius=-1.0), "radius"),
        (lambda: Sphere(dim=2, ambient_dim=2), "ambient_dim"),
        (lambda: Sphere(dim=1.5), "dim"),
        (lambda: Sphere(dim=2, embedding="orthogonal"), "embedding"),
        (lambda: Torus(major_radius=1.0, minor_radius=1.0), "minor_radius"),
        (lambda: Torus(major_radius=-1.0), "major_radius"),
        (lambda: Torus(dim=3), "dim"),
        (lambda: SwissRoll(t_min=5.0, t_max=4.0), "t_max"),
        (lambda: SwissRoll(t_min=-1.0), "t_min"),
        (lambda: SwissRoll(width=0.0), "width"),
        (lambda: SwissRoll(scale=-2.0), "scale"),
        (lambda: SwissRoll(ambient_dim=2), "ambient_dim"),
        (lambda: SineSheet(amplitude=-0.1), "amplitude"),
        (lambda: SineSheet(frequency=0.0), "frequency"),
        (lambda: ConcentricSpheres(dim=2, inner_radius=1.3, outer_radius=1.0), "outer_radius"),
        (lambda: ConcentricSpheres(dim=2, inner_radius=0.0), "inner_radius"),
    ],
)
def test_invalid_parameters_name_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_wrong_shapes_are_rejected():
    sphere = Sphere(dim=2, ambient_dim=4)
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        sphere.immersion(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        sphere.projection(np.zeros((3, 3)))


def test_repr_names_family_parameters():
    text = repr(Torus(major_radius=2.0, minor_radius=0.5, ambient_dim=5, embedding_seed=7))
    assert text == "Torus(major_radius=2.0, minor_radius=0.5, ambient_dim=5, embedding='random', embedding_seed=7)"
