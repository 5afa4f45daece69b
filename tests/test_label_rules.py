"""Label rules checked against hand-computed values (complements tests/test_labels.py).

Every rule is built directly from its spec on a manifold with the identity embedding, so chart
boxes, cell centres, Jacobian columns and normals are known in closed form:

- PLANE: the flat chart box [-1, 1]^2 (width 2, centre 0), no periodic axis.
- TORUS: (theta, phi) in [0, 2 pi)^2, both periodic, centre (pi, pi); R = 1, r = 0.4, so the
  Jacobian columns have lengths r and R + r cos(theta) (not unit) and the outward normal is
  (cos theta cos phi, cos theta sin phi, sin theta).
- SPHERE: (theta, phi) in [0, pi] x [0, 2 pi), only phi periodic: an anisotropic box.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config.scene import (
    CheckerboardLabels,
    ClustersLabels,
    HalfSpaceLabels,
    RandomLabels,
    ShapeAndFurLabels,
    StripesLabels,
)
from simulator.errors import SceneError
from simulator.labels import Checkerboard, Clusters, HalfSpace, RandomPerPoint, ShapeAndFur, Stripes, _unit
from simulator.manifolds.flat import Flat
from simulator.manifolds.sphere import Sphere
from simulator.manifolds.torus import Torus

PI = np.pi
PLANE = Flat(2, extent=1.0, ambient_dim=3, embedding="identity")
TORUS = Torus(major_radius=1.0, minor_radius=0.4, ambient_dim=3, embedding="identity")
SPHERE = Sphere(2, radius=1.0, ambient_dim=3, embedding="identity")
DEFAULT_FIX = "raise data.n_train so that every class gets points"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def is_integer(labels) -> bool:
    return np.asarray(labels).dtype.kind in "iu"


# --------------------------------------------------------------------------- _cell and _unit


def test_cell_index_counts_slabs_and_clips_to_the_box():
    rule = Stripes(StripesLabels(rule="stripes", n_stripes=4), PLANE, rng())
    # position * cells = 2 (u + 1): slabs of width 0.5 starting at -1; the far edge u = 1 and
    # points outside the box belong to the nearest end slab.
    u = np.array([[-1.0, -0.75], [-0.5, 0.49], [1.0, 0.999], [-3.0, 5.0]])
    cells = rule._cell(u, 4)
    np.testing.assert_array_equal(cells, [[0, 0], [1, 2], [3, 3], [0, 3]])
    assert is_integer(cells)


def test_unit_normalises_along_the_last_axis_for_any_batch_shape():
    vectors = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]],
                        [[1.0, 1.0, 1.0], [0.0, -5.0, 0.0]]])
    third = 1 / np.sqrt(3)
    np.testing.assert_allclose(_unit(vectors), [[[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]],
                                                [[third, third, third], [0.0, -1.0, 0.0]]])


# --------------------------------------------------------------------------- Clusters


def test_clusters_grid_centres_spread_and_checkerboard_classes():
    spec = ClustersLabels(rule="clusters", n_clusters=9, n_classes=3, spread=0.05)
    rule = Clusters(spec, PLANE, rng())
    # 3 blobs per axis at the centres of the thirds of [-1, 1]: -2/3, 0, 2/3; first axis slowest.
    third = 2 / 3
    expected = [[a, b] for a in (-third, 0.0, third) for b in (-third, 0.0, third)]
    np.testing.assert_allclose(rule.centers, expected, atol=1e-12)
    # Class (i + j) mod 3 of grid cell (i, j): neighbouring blobs always differ.
    np.testing.assert_array_equal(rule.center_labels, [0, 1, 2, 1, 2, 0, 2, 0, 1])
    # Blob standard deviation: spread times the box width 2.
    np.testing.assert_allclose(rule.std, [0.1, 0.1])


def test_clusters_random_layout_and_assignment_draw_from_the_rule_rng():
    spec = ClustersLabels(rule="clusters", n_clusters=5, n_classes=3, layout="random", assignment="random")
    rule = Clusters(spec, PLANE, rng(7))
    draws = rng(7)
    np.testing.assert_allclose(rule.centers, -1 + 2 * draws.random((5, 2)))  # uniform in the box
    np.testing.assert_array_equal(rule.center_labels, draws.integers(0, 3, 5))

    # Grid layout with random classes: the grid is fixed, the classes are the rng's first draw.
    spec = ClustersLabels(rule="clusters", n_clusters=4, n_classes=5, assignment="random")
    rule = Clusters(spec, PLANE, rng(5))
    np.testing.assert_allclose(rule.centers, [[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(rule.center_labels, rng(5).integers(0, 5, 4))  # [3, 4, 0, 4]


def test_clusters_sample_is_gaussian_around_every_centre():
    spec = ClustersLabels(rule="clusters", n_clusters=4, spread=0.05)  # std 0.1, centres at +-0.5
    rule = Clusters(spec, PLANE, rng())
    u, y = rule.sample(4000, rng(3))
    centres = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    blob = np.argmin(np.linalg.norm(u[:, None, :] - centres, axis=-1), axis=1)  # 5 sigma apart
    np.testing.assert_array_equal(y, np.array([0, 1, 1, 0])[blob])
    assert is_integer(y)
    for b in range(4):
        points = u[blob == b]
        assert abs(len(points) - 1000) < 120  # every blob equally likely
        np.testing.assert_allclose(points.mean(axis=0), centres[b], atol=0.02)
        np.testing.assert_allclose(points.std(axis=0), [0.1, 0.1], rtol=0.1)


def test_into_box_wraps_periodic_axes_and_keeps_the_closed_box():
    spec = ClustersLabels(rule="clusters", n_clusters=4, spread=0.01)
    torus_rule = Clusters(spec, TORUS, rng())
    u = np.array([[-0.5, 7.0], [2 * PI + 0.25, 1.0], [3.0, -2 * PI - 1.0]])
    wrapped = torus_rule._into_box(u.copy(), np.zeros(3, dtype=int), rng())
    np.testing.assert_allclose(wrapped, [[2 * PI - 0.5, 7.0 - 2 * PI], [0.25, 1.0], [3.0, 2 * PI - 1.0]],
                               atol=1e-12)

    sphere_rule = Clusters(spec, SPHERE, rng())  # theta in [0, pi] bounded, phi periodic
    # Inside, or on the (closed) edges of the theta range: only phi is wrapped, nothing redrawn.
    u = np.array([[0.0, 2 * PI + 0.25], [PI, -0.5], [2.0, 3.0]])
    kept = sphere_rule._into_box(u.copy(), np.zeros(3, dtype=int), rng())
    np.testing.assert_allclose(kept, [[0.0, 0.25], [PI, 2 * PI - 0.5], [2.0, 3.0]], atol=1e-12)


def test_into_box_redraws_points_that_left_a_bounded_axis_from_their_own_blob():
    spec = ClustersLabels(rule="clusters", n_clusters=4, spread=0.01)
    rule = Clusters(spec, SPHERE, rng())  # blob 0 at (pi/4, pi/2), std (0.01 pi, 0.02 pi)
    u = np.array([[-0.2, 7.0], [3.5, 1.0], [-0.1, 2.0]])
    redrawn = rule._into_box(u.copy(), np.zeros(3, dtype=int), rng())
    # The periodic coordinate is only wrapped; the bounded one is a fresh draw of blob 0.
    np.testing.assert_allclose(redrawn[:, 1], [7.0 - 2 * PI, 1.0, 2.0], atol=1e-12)
    assert np.all(np.abs(redrawn[:, 0] - PI / 4) < 6 * 0.01 * PI)
    assert len(set(redrawn[:, 0])) == 3  # independent draws


def test_blobs_much_wider_than_the_box_end_clipped_onto_it():
    # std = 200 box widths: a redraw lands inside with probability ~1e-5, so after the 1000
    # redraws almost every point is clipped onto the box boundary.
    spec = ClustersLabels(rule="clusters", n_clusters=4, spread=100.0)
    rule = Clusters(spec, PLANE, rng())
    u, y = rule.sample(20, rng(1))
    assert u.shape == (20, 2) and y.shape == (20,)
    assert np.all((u >= -1) & (u <= 1))
    assert np.sum(np.any(np.abs(u) == 1, axis=1)) >= 15


def test_clusters_label_of_measures_distance_in_box_widths():
    # On the sphere's chart box (width pi along theta, 2 pi along phi) a step of 0.5 along phi
    # is shorter (0.5 / 2 pi) than a step of 0.3 along theta (0.3 / pi).
    spec = ClustersLabels(rule="clusters", n_clusters=2, layout="random")
    rule = Clusters(spec, SPHERE, rng())
    rule.centers = np.array([[1.3, 3.0], [1.0, 3.5]])
    rule.center_labels = np.array([0, 1])
    np.testing.assert_array_equal(rule.label_of(np.array([[1.0, 3.0]])), [1])


def test_label_maps_keep_the_batch_shape_of_a_chart_grid():
    clusters = Clusters(ClustersLabels(rule="clusters", n_clusters=4), PLANE, rng())  # classes [0, 1, 1, 0]
    checkerboard = Checkerboard(CheckerboardLabels(rule="checkerboard", cells_per_axis=4), PLANE, rng())
    grid = np.array([[[-0.9, -0.9], [-0.9, -0.4], [-0.9, 0.1]],
                     [[0.1, 0.6], [0.9, -0.9], [0.6, 0.6]]])  # (2, 3, k): a ground-truth map's chart grid
    # nearest centres (-,-), (-,-), (-,+) and (+,+), (+,-), (+,+)
    np.testing.assert_array_equal(clusters.label_of(grid), [[0, 0, 1], [0, 1, 0]])
    # cells (0, 0), (0, 1), (0, 2) and (2, 3), (3, 0), (3, 3): sums 0, 1, 2 and 5, 3, 6
    np.testing.assert_array_equal(checkerboard.label_of(grid), [[0, 1, 0], [1, 1, 0]])


def test_clusters_fix_names_the_setting_that_left_a_class_out():
    # 2 x 2 grid, alternating classes (i + j) mod 5: sums 0, 1, 1, 2 -> classes 0, 1, 2 only.
    spec = ClustersLabels(rule="clusters", n_clusters=4, n_classes=5)
    rule = Clusters(spec, PLANE, rng())
    assert rule.fix_for_missing_class(1) == "raise data.n_train (the points are shared among 4 blobs)"
    assert rule.fix_for_missing_class(3) == (
        "no blob has class 3 (the 4 blobs alternate through classes [0, 1, 2] only); lower labels.n_classes "
        "to 3 or raise labels.n_clusters")

    spec = ClustersLabels(rule="clusters", n_clusters=4, n_classes=5, assignment="random")
    rule = Clusters(spec, PLANE, rng(5))  # blob classes [3, 4, 0, 4]
    assert rule.fix_for_missing_class(4) == "raise data.n_train (the points are shared among 4 blobs)"
    assert rule.fix_for_missing_class(1) == (
        "no blob has class 1 (labels.assignment: random gave the 4 blobs the classes [0, 3, 4]); use "
        "assignment: alternating, more labels.n_clusters, or another seed")


# --------------------------------------------------------------------------- HalfSpace


def test_half_space_defaults_to_the_first_axis_through_the_box_centre():
    rule = HalfSpace(HalfSpaceLabels(rule="half_space"), TORUS, rng())  # centre (pi, pi)
    u = np.array([[PI + 0.1, 0.2], [PI - 0.1, 6.0], [PI, 1.0]])
    labels = rule.label_of(u)
    np.testing.assert_array_equal(labels, [1, 0, 0])  # on the hyperplane: class 0 (strictly beyond: 1)
    assert is_integer(labels)


def test_half_space_offset_moves_the_split_along_the_unit_direction():
    rule = HalfSpace(HalfSpaceLabels(rule="half_space", direction=[0.0, 2.0], offset=0.25), PLANE, rng())
    np.testing.assert_array_equal(rule.label_of(np.array([[0.9, 0.3], [0.9, 0.2], [-0.9, 0.25]])), [1, 0, 0])


def test_half_space_refuses_the_zero_direction():
    with pytest.raises(SceneError, match="labels.direction"):
        HalfSpace(HalfSpaceLabels(rule="half_space", direction=[0.0, 0.0]), PLANE, rng())


def test_half_space_fix_says_when_the_hyperplane_misses_the_box():
    # direction (1, 1) / sqrt 2: the box [-1, 1]^2 reaches sqrt 2 = 1.41 from its centre.
    def fix(offset, direction=(1.0, 1.0)):
        spec = HalfSpaceLabels(rule="half_space", direction=list(direction), offset=offset)
        return HalfSpace(spec, PLANE, rng()).fix_for_missing_class(1)

    assert fix(1.2) == DEFAULT_FIX
    assert fix(2.0) == ("labels.offset 2 puts the splitting hyperplane outside the chart box, which reaches only "
                        "1.41 from its centre along labels.direction; use an offset between -1.41 and 1.41 "
                        "(0 splits the box in half)")
    # offset = reach: the hyperplane is the box's face, and points on it are class 0, so class 1 is empty.
    assert fix(1.0, (1.0, 0.0)).startswith("labels.offset 1 puts the splitting hyperplane outside")
    assert fix(-1.0, (1.0, 0.0)).startswith("labels.offset -1 puts the splitting hyperplane outside")


# --------------------------------------------------------------------------- Stripes, random


def test_stripes_fix_asks_for_more_stripes_than_classes():
    rule = Stripes(StripesLabels(rule="stripes", n_stripes=2, n_classes=3), PLANE, rng())
    assert rule.fix_for_missing_class(1) == DEFAULT_FIX
    assert rule.fix_for_missing_class(2) == ("labels.n_stripes 2 gives only 2 classes; raise it to at least "
                                             "labels.n_classes (3) or lower labels.n_classes")
    assert is_integer(rule.label_of(np.array([[0.0, 0.0], [0.6, 0.0]])))


def test_random_labels_refuse_a_label_map_and_say_why():
    rule = RandomPerPoint(RandomLabels(rule="random"), PLANE, rng())
    with pytest.raises(ValueError, match="no label map"):
        rule.label_of(np.zeros((1, 2)))


# --------------------------------------------------------------------------- Checkerboard


def test_checkerboard_cell_centres_first_axis_slowest():
    rule = Checkerboard(CheckerboardLabels(rule="checkerboard", cells_per_axis=2), SPHERE, rng())
    np.testing.assert_allclose(rule.cell_centres(), [[PI / 4, PI / 2], [PI / 4, 3 * PI / 2],
                                                     [3 * PI / 4, PI / 2], [3 * PI / 4, 3 * PI / 2]])


def test_checkerboard_grid_sampling_puts_the_cell_centres_first():
    # Melamed et al.'s 5 x 5 chessboard: centres -0.8, -0.4, 0, 0.4, 0.8 on each axis.
    spec = CheckerboardLabels(rule="checkerboard", cells_per_axis=5, sampling="grid")
    rule = Checkerboard(spec, PLANE, rng())
    u, y = rule.sample(30, rng(4))
    ticks = (-0.8, -0.4, 0.0, 0.4, 0.8)
    np.testing.assert_allclose(u[:25], [[a, b] for a in ticks for b in ticks], atol=1e-12)
    np.testing.assert_array_equal(y[:25], [(i + j) % 2 for i in range(5) for j in range(5)])
    assert u.shape == (30, 2) and y.shape == (30,) and is_integer(y)
    assert np.all((u[25:] >= -1) & (u[25:] <= 1))  # the rest: uniform in the box
    np.testing.assert_array_equal(y[25:], rule.label_of(u[25:]))

    u, _ = rule.sample(10, rng(4))  # fewer points than cells: a prefix of the grid
    np.testing.assert_allclose(u, [[a, b] for a in ticks for b in ticks][:10], atol=1e-12)

    uniform = Checkerboard(CheckerboardLabels(rule="checkerboard", cells_per_axis=5), PLANE, rng())
    u, _ = uniform.sample(30, rng(4))
    assert not np.any(np.all(np.isclose(u[:, None, :], rule.cell_centres()), axis=-1))


def test_checkerboard_n_axes_uses_only_the_leading_axes():
    spec = CheckerboardLabels(rule="checkerboard", cells_per_axis=4, n_axes=1)
    rule = Checkerboard(spec, PLANE, rng())
    u = np.array([[-0.9, -0.9], [-0.9, 0.9], [-0.4, -0.9], [0.9, 0.1]])  # first-axis cells 0, 0, 1, 3
    np.testing.assert_array_equal(rule.label_of(u), [0, 0, 1, 1])


def test_checkerboard_fix_counts_the_reachable_cell_sums():
    # One axis of 2 cells: cell sums 0..1, so only classes 0 and 1 exist.
    spec = CheckerboardLabels(rule="checkerboard", cells_per_axis=2, n_axes=1, n_classes=3)
    rule = Checkerboard(spec, PLANE, rng())
    assert rule.fix_for_missing_class(1) == DEFAULT_FIX
    assert rule.fix_for_missing_class(2) == ("labels.cells_per_axis 2 over 1 axes gives only 2 classes; raise "
                                             "it or lower labels.n_classes to 2")
    # Both axes of 3 cells: sums 0..4, five classes.
    rule = Checkerboard(CheckerboardLabels(rule="checkerboard", cells_per_axis=3, n_classes=6), PLANE, rng())
    assert rule.fix_for_missing_class(4) == DEFAULT_FIX
    assert rule.fix_for_missing_class(5) == ("labels.cells_per_axis 3 over 2 axes gives only 5 classes; raise "
                                             "it or lower labels.n_classes to 5")


# --------------------------------------------------------------------------- ShapeAndFur


def shape_and_fur(manifold, **settings) -> ShapeAndFur:
    return ShapeAndFur(ShapeAndFurLabels(rule="shape_and_fur", **settings), manifold, rng())


def test_shape_and_fur_sample_with_reliable_features_on_the_torus():
    rule = shape_and_fur(TORUS, shape_reliability=1.0, fur_reliability=1.0, fur_size=0.03)
    u, y = rule.sample(2000, rng(5))
    assert is_integer(y) and 0.45 < y.mean() < 0.55  # a fair coin
    assert np.all((u >= 0) & (u <= 2 * PI))
    np.testing.assert_array_equal(rule.label_of(u), y)  # the shape side is the class
    np.testing.assert_allclose(u[:, 1], PI + 0.03 * (2 * y - 1))  # fur: centre +- fur_size


def test_shape_and_fur_features_agree_with_the_class_at_their_reliabilities():
    rule = shape_and_fur(PLANE, shape_reliability=0.75, fur_reliability=0.6)
    u, y = rule.sample(8000, rng(6))
    assert abs(np.mean(rule.label_of(u) == y) - 0.75) < 0.025
    assert abs(np.mean(np.sign(u[:, 1]) == 2 * y - 1) - 0.6) < 0.025


def test_shape_and_fur_off_leaves_the_fur_axis_uniform():
    rule = shape_and_fur(PLANE, fur_location="off", shape_reliability=1.0)
    u, y = rule.sample(2000, rng(7))
    np.testing.assert_array_equal(rule.label_of(u), y)
    assert 0.5 < u[:, 1].std() < 0.65  # uniform on [-1, 1]: 1 / sqrt 3


def test_shape_and_fur_input_offset_is_the_signed_fur_along_the_normal():
    assert shape_and_fur(TORUS).input_offset(np.zeros((2, 2)), np.array([0, 1]), rng()) is None  # fur on
    rule = shape_and_fur(TORUS, fur_location="off", fur_size=0.05)
    u = np.array([[0.0, 0.0], [PI / 2, 0.0], [PI, PI / 2]])  # normals (1,0,0), (0,0,1), (0,-1,0)
    offset = rule.input_offset(u, np.array([1, 0, 1]), rng())
    np.testing.assert_allclose(offset, [[0.05, 0, 0], [0, 0, -0.05], [0, -0.05, 0]], atol=1e-12)


def test_shape_and_fur_label_of_is_the_shape_side():
    rule = shape_and_fur(TORUS)
    labels = rule.label_of(np.array([[PI + 0.1, 1.0], [PI - 0.1, 1.0], [PI, 5.0]]))
    np.testing.assert_array_equal(labels, [1, 0, 0])
    assert is_integer(labels)


def test_shape_and_fur_feature_directions_are_unit_chart_directions_or_the_normal():
    u = np.array([[PI / 2, 0.0], [0.0, PI / 2]])
    # d/dtheta has length r = 0.4, d/dphi length 1 + 0.4 cos(theta): normalised by _unit.
    d_theta = [[-1, 0, 0], [0, 0, 1]]
    d_phi = [[0, 1, 0], [-1, 0, 0]]
    normal = [[0, 0, 1], [0, 1, 0]]
    on = shape_and_fur(TORUS, shape_axis=1, fur_axis=0).feature_directions(u)
    assert set(on) == {"shape", "fur"}
    np.testing.assert_allclose(on["shape"], d_phi, atol=1e-12)
    np.testing.assert_allclose(on["fur"], d_theta, atol=1e-12)
    off = shape_and_fur(TORUS, shape_axis=1, fur_location="off").feature_directions(u)
    assert set(off) == {"shape", "fur"}
    np.testing.assert_allclose(off["shape"], d_phi, atol=1e-12)
    np.testing.assert_allclose(off["fur"], normal, atol=1e-12)
