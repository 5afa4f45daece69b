"""The reader-facing science summaries against closed forms (DESIGN.md section 4).

Every number a reader sees in the verdict table or the attack table is checked here on tiny
inputs whose answer is known by hand: the tangent-fraction summary (RMS tau and its ratio to the
random baseline sqrt(k/n)), the height-field summary (medians near and far from data, at the
training points, the dimple depth and its sign), the paired bootstrap of the manifold
specificity MS, the bisection refinement of the minimal-distance search, the ratios to the free
distance, and each line the verdict table draws from `measure.thresholds`. Each test builds its
inputs directly (no pipeline run) and takes well under a second.

The mutations that once escaped the suite (issue 17), and the tests that now fail on each:
- tau ratio from the mean instead of the RMS tau:
  test_rms_tau_and_its_ratio_use_the_root_mean_square_not_the_mean,
  test_tau_ratio_of_a_linear_model_with_tangent_spaces_along_and_across_its_gradient;
- the near-data mask inverted: test_height_field_of_a_dimpled_plane_measures_the_dimples_near_the_data,
  test_height_summary_of_a_hand_built_field;
- the dimple depth's sign flipped: the same two, and
  test_dimple_depth_is_negative_when_the_boundary_is_nearer_at_the_data;
- the MS bootstrap resampled per mode instead of paired: test_bootstrap_resamples_the_same_points_in_every_mode,
  test_covering_interval_resamples_the_same_points_in_every_mode_and_end;
- the verdict's MS readings swapped: test_verdict_manifold_specificity_reads_each_band_at_its_lines;
- the bisection refinement removed: test_refinement_bisects_the_greedy_overshoot_to_the_closed_form_free_distance,
  test_refinement_reaches_the_closed_form_tangent_space_distance;
- ratio_to_free inverted (once caught only by a slow test): test_ratio_to_free_is_own_median_over_free_median,
  test_attack_report_ratios_to_free_match_the_linear_closed_form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.minimal_search import MinimalDistanceSearch, SearchBudget
from simulator.attacks.statistics import (
    bootstrap_interval,
    covering_interval,
    dimension_only_ratio,
    manifold_specificity,
    specificity_bracket,
)
from simulator.config.resolve import AttackSettings
from simulator.config.scene import ThresholdSpec
from simulator.geometry.height import (
    HeightField,
    boundary_heights,
    measure_height_field,
    probe_directions,
    summarize_heights,
)
from simulator.geometry.tangent import summarize_tangent_fractions
from simulator.manifolds import Flat
from simulator.stages.attack import _add_ratios, attack_arrays
from simulator.stages.measure import tangent_and_stretch
from simulator.stages.verdict import WARNING, verdict_rows

# --------------------------------------------------------------------------- 1. tangent fraction


def test_rms_tau_and_its_ratio_use_the_root_mean_square_not_the_mean():
    """tau = (0, 1) at k = 1, n = 4 (NaN, a vanished gradient, left out): mean tau = 1/2,
    RMS tau = sqrt((0^2 + 1^2) / 2) = sqrt(1/2), baseline sqrt(k/n) = 1/2, so
    ratio = RMS / baseline = sqrt(2) (the mean would give 1), mean angle (90 + 0) / 2 = 45 deg."""
    summary = summarize_tangent_fractions(np.array([0.0, np.nan, 1.0]), dim=1, ambient_dim=4)
    assert summary["n_points"] == 2
    assert summary["mean_tau"] == pytest.approx(0.5, rel=1e-12)
    assert summary["rms_tau"] == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert summary["baseline_rms_tau"] == pytest.approx(0.5, rel=1e-12)
    assert summary["ratio_to_baseline"] == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert summary["mean_angle_deg"] == pytest.approx(45.0, rel=1e-12)


def test_tau_ratio_of_a_linear_model_with_tangent_spaces_along_and_across_its_gradient():
    """A linear margin f = w.x + b has gradient +-w everywhere. With the 1-D tangent space
    span(w) at two points (tau = 1) and span(v), v perpendicular to w, at two (tau = 0), in
    n = 4: RMS tau = sqrt(1/2), mean tau 1/2, sqrt(k/n) = 1/2, ratio sqrt(2), through the
    measurement stage's own path (`tangent_and_stretch`)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double()
    w = (model.weight[1] - model.weight[0]).detach()
    along = w / w.norm()
    across = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    across = across - (across @ along) * along
    across = across / across.norm()
    bases = torch.stack([along, across, along, across])[:, :, None]  # (N, n, k = 1)
    x = torch.randn(4, 4, dtype=torch.float64)
    summary, tau = tangent_and_stretch(model, x, bases, with_stretch=False)
    np.testing.assert_allclose(tau, [1.0, 0.0, 1.0, 0.0], atol=1e-12)
    tangent = summary["tangent"]
    assert tangent["mean_tau"] == pytest.approx(0.5, abs=1e-12)
    assert tangent["rms_tau"] == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert tangent["ratio_to_baseline"] == pytest.approx(math.sqrt(2.0), rel=1e-12)


# --------------------------------------------------------------------------- 2. height field


def _hand_field() -> HeightField:
    """Five far points (|h| 0.1 at weight 0.6 and one "none within t_max" at 0.1) and three
    near-data points (|h| 0.4, 0.4, 0.02 at 0.1 each): weights sum to 1."""
    h = np.array([0.1, -0.1, 0.1, -0.1, np.nan, 0.4, -0.4, 0.02])
    weight = np.array([0.15, 0.15, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1])
    near = np.array([False] * 5 + [True] * 3)
    interface = np.array([True, False, False, False, False, False, True, False])
    return HeightField(u=np.zeros((8, 2)), h=h, weight=weight, label=np.zeros(8, dtype=int), near=near,
                       interface=interface, t_max=1.0, grid_shape=None, interface_axes=2)


def test_height_summary_of_a_hand_built_field():
    """Weighted medians by hand (NaN = none within t_max counts as +inf):
    far |h| = (0.1 x4 at 0.6, inf at 0.1) -> 0.1; near |h| = (0.02, 0.4, 0.4) -> 0.4;
    all -> 0.1 (0.1 and below hold 0.7 of the area); at training points
    |(0.5, -0.5, 0.3, NaN, 0.5)| -> median of (0.3, 0.5, 0.5, 0.5, inf) = 0.5;
    dimple depth = median |h| at training points - median |h| far from data = 0.5 - 0.1 = +0.4
    (positive: the boundary stands farther off the manifold at the data, DESIGN.md 4.2);
    clinging fraction (|h| < 0.2) = 0.1 + 0.6 = 0.7; none 0.1; near 0.3; interface 0.15 + 0.1."""
    summary = summarize_heights(_hand_field(), clinging_epsilon=0.2,
                                heights_at_train=np.array([0.5, -0.5, 0.3, np.nan, 0.5]))
    assert summary["median_abs_h_far_from_data"] == pytest.approx(0.1, rel=1e-12)
    assert summary["median_abs_h_near_data"] == pytest.approx(0.4, rel=1e-12)
    assert summary["median_abs_h"] == pytest.approx(0.1, rel=1e-12)
    assert summary["median_abs_h_at_train_points"] == pytest.approx(0.5, rel=1e-12)
    assert summary["dimple_depth"] == pytest.approx(0.4, rel=1e-12)
    assert summary["dimple_depth"] > 0
    assert summary["clinging_fraction"] == pytest.approx(0.7, rel=1e-12)
    assert summary["none_fraction"] == pytest.approx(0.1, rel=1e-12)
    assert summary["near_data_fraction"] == pytest.approx(0.3, rel=1e-12)
    assert summary["interface_fraction"] == pytest.approx(0.25, rel=1e-12)
    assert summary["n_points"] == 8 and summary["layout"] == "random"


def test_dimple_depth_is_negative_when_the_boundary_is_nearer_at_the_data():
    """Same field, training-point heights |h| = 0.05: depth = 0.05 - 0.1 = -0.05 (no dimples);
    all training points with no boundary within t_max: median inf, so depth None (null)."""
    summary = summarize_heights(_hand_field(), 0.2, np.full(3, -0.05))
    assert summary["dimple_depth"] == pytest.approx(-0.05, rel=1e-12)
    summary = summarize_heights(_hand_field(), 0.2, np.full(3, np.nan))
    assert summary["dimple_depth"] is None and summary["median_abs_h_at_train_points"] is None


class DimpledPlane(nn.Module):
    """Class 1 above the surface x_3 = b(x_1, x_2), class 0 below, with b = h0 + D within
    `radius` (in the (x_1, x_2) plane) of any training point and b = h0 elsewhere: a plane
    boundary at height h0 over the sheet x_3 = 0 with flat-topped dimples of depth D at the data."""

    def __init__(self, centres: np.ndarray, radius: float, h0: float, depth: float):
        super().__init__()
        self.centres = torch.as_tensor(centres, dtype=torch.float64)
        self.radius, self.h0, self.depth = radius, h0, depth

    def forward(self, x):
        nearest = torch.cdist(x[:, :2], self.centres).min(dim=1).values
        b = self.h0 + self.depth * (nearest <= self.radius).to(x.dtype)
        return torch.stack([torch.zeros_like(b), x[:, 2] - b], dim=1)


def test_height_field_of_a_dimpled_plane_measures_the_dimples_near_the_data():
    """On the sheet z = 0 in R^3 (10 x 10 grid of cell centres over [-1, 1]^2, spacing 0.2), two
    training points at grid centres (-0.5, -0.5) and (0.5, 0.5), near-data radius 0.25: each
    has itself and its 4 neighbours (distance 0.2) near, the diagonals (0.28) not, so 10 of 100
    equal-area cells are near data. The boundary is at h0 = 0.1 above the sheet, raised by
    D = 0.3 within the same radius, so exactly: h = +0.4 near data, +0.1 far (positive: along
    the +normal), median near 0.4, far 0.1, all 0.1, at training points 0.4, dimple depth
    +D = 0.3, clinging fraction (eps 0.2) = 0.9, near-data share 0.1, no class interface."""
    flat = Flat(dim=2, ambient_dim=3, embedding="identity")
    centres = np.array([[-0.5, -0.5], [0.5, 0.5]])
    model = DimpledPlane(centres, radius=0.25, h0=0.1, depth=0.3)
    tolerance = 1e-7
    field = measure_height_field(model, flat, flat.host_immersion(centres), resolution=10, max_points=10_000,
                                 t_max=1.0, tolerance=tolerance, bracket_steps=32, near_radius=0.25,
                                 rng=np.random.default_rng(0))
    expected_near = np.linalg.norm(field.u[:, None, :] - centres[None], axis=-1).min(axis=1) <= 0.25
    assert expected_near.sum() == 10
    np.testing.assert_array_equal(field.near, expected_near)
    np.testing.assert_allclose(field.h[field.near], 0.4, atol=10 * tolerance)
    np.testing.assert_allclose(field.h[~field.near], 0.1, atol=10 * tolerance)
    at = torch.as_tensor(flat.immersion(centres))
    heights_at_train = boundary_heights(model, at, probe_directions(model, flat, at, centres), 1.0, tolerance,
                                        32).double().numpy()
    np.testing.assert_allclose(heights_at_train, 0.4, atol=10 * tolerance)
    summary = summarize_heights(field, clinging_epsilon=0.2, heights_at_train=heights_at_train)
    assert summary["median_abs_h_near_data"] == pytest.approx(0.4, abs=10 * tolerance)
    assert summary["median_abs_h_far_from_data"] == pytest.approx(0.1, abs=10 * tolerance)
    assert summary["median_abs_h"] == pytest.approx(0.1, abs=10 * tolerance)
    assert summary["median_abs_h_at_train_points"] == pytest.approx(0.4, abs=10 * tolerance)
    assert summary["dimple_depth"] == pytest.approx(0.3, abs=20 * tolerance)
    assert summary["clinging_fraction"] == pytest.approx(0.9, rel=1e-12)
    assert summary["near_data_fraction"] == pytest.approx(0.1, rel=1e-12)
    assert summary["interface_fraction"] == 0.0 and summary["none_fraction"] == 0.0


# --------------------------------------------------------------------------- 3. paired MS bootstrap


def _proportional_distances(n_points: int = 101):
    """on = 3 s, off = s, random_on = 2 s, random_off = s with s widely spread (lognormal, sigma
    1.5): every mode's median over any set of points is a fixed multiple of the same median of
    s, so MS = (3 / 1) / (2 / 1) = 1.5 over every paired resample."""
    s = np.random.default_rng(7).lognormal(0.0, 1.5, n_points)
    return {"on": 3 * s, "off": s.copy(), "random_on": 2 * s, "random_off": s.copy()}


def test_bootstrap_resamples_the_same_points_in_every_mode():
    """Paired resampling: MS is 1.5 in every resample, so the percentile interval is [1.5, 1.5]
    (an unpaired bootstrap, resampling each mode on its own, would give an interval spanning
    a factor of several around 1.5 here)."""
    distances = _proportional_distances()
    assert manifold_specificity(distances) == pytest.approx(1.5, rel=1e-12)
    low, high = bootstrap_interval(distances, 300, 0.95, np.random.default_rng(0))
    assert low == pytest.approx(1.5, rel=1e-12)
    assert high == pytest.approx(1.5, rel=1e-12)


def test_covering_interval_resamples_the_same_points_in_every_mode_and_end():
    """Brackets [lower, upper] with lower = upper / 2 in every mode: per paired resample with
    median m of s, the smallest MS is (lo_on lo_roff) / (up_off up_ron) = (1.5 m 0.5 m) / (m 2 m)
    = 0.375 and the largest (up_on up_roff) / (lo_off lo_ron) = (3 m m) / (0.5 m m) = 6, the
    same as the bracket at the points themselves; so the covering interval is [0.375, 6].
    With lower = upper it collapses to MS = 1.5."""
    upper = _proportional_distances()
    lower = {mode: value / 2 for mode, value in upper.items()}
    smallest, largest = specificity_bracket(upper, lower)
    assert (smallest, largest) == (pytest.approx(0.375, rel=1e-12), pytest.approx(6.0, rel=1e-12))
    low, high = covering_interval(upper, lower, 300, 0.95, np.random.default_rng(0))
    assert low == pytest.approx(0.375, rel=1e-12)
    assert high == pytest.approx(6.0, rel=1e-12)
    low, high = covering_interval(upper, upper, 300, 0.95, np.random.default_rng(1))
    assert (low, high) == (pytest.approx(1.5, rel=1e-12), pytest.approx(1.5, rel=1e-12))


# --------------------------------------------------------------------------- 4. verdict readings

THRESHOLD_SETS = {
    "defaults": ThresholdSpec().model_dump(),
    "custom": ThresholdSpec(clinging_fraction=0.3, tangent_ratio=0.8, tangent_along=0.25, stretch_alignment=0.4,
                            specificity=4.0).model_dump(),
}
UP, DOWN = 1 + 1e-9, 1 - 1e-9  # just above / just below a line


def test_threshold_defaults_are_the_documented_ones():
    """README: clinging fraction 0.5, tangent ratio 0.5, 'along' halfway from k/n to 1,
    specificity 2.0 (and stretch alignment 0.7 in the schema)."""
    assert THRESHOLD_SETS["defaults"] == {"clinging_fraction": 0.5, "tangent_ratio": 0.5, "tangent_along": 0.5,
                                          "stretch_alignment": 0.7, "specificity": 2.0}


def _rows(summary: dict, thresholds: dict, attacks: dict | None = None) -> dict:
    rows = verdict_rows(summary, thresholds, attacks)
    assert all(row["measurement"] != WARNING for row in rows)  # nothing here triggers a warning
    return {row["measurement"]: row for row in rows}


def _height(clinging: float = 0.0, depth: float | None = 0.0) -> dict:
    return {"height": {"clinging_fraction": clinging, "clinging_epsilon": 0.05, "dimple_depth": depth}}


@pytest.mark.parametrize("name", THRESHOLD_SETS)
def test_verdict_clinging_fraction_reads_at_its_threshold(name):
    """clinging fraction >= line: 'clings (dimpled)'; just below: 'does not cling'."""
    thresholds = THRESHOLD_SETS[name]
    line = thresholds["clinging_fraction"]
    at = _rows(_height(clinging=line), thresholds)["clinging fraction"]
    assert at["reading"] == "clings (dimpled)"
    assert at["dimpled"] == f">= {line:g}" and at["measured"] == f"{line:.3g} (eps = 0.05)"
    assert _rows(_height(clinging=line * UP), thresholds)["clinging fraction"]["reading"] == "clings (dimpled)"
    below = _rows(_height(clinging=line * DOWN), thresholds)["clinging fraction"]
    assert below["reading"] == "does not cling (against dimpled)"


@pytest.mark.parametrize("depth, reading", [
    (1e-9, "deeper at data (dimples)"), (0.3, "deeper at data (dimples)"),
    (0.0, "not deeper at data (no dimples)"), (-1e-9, "not deeper at data (no dimples)"),
    (None, "n/a: no boundary within t_max"),
])
def test_verdict_dimple_depth_reads_its_sign(depth, reading):
    """The dimple depth's line is 0: positive (boundary farther off at the data) = dimples."""
    row = _rows(_height(depth=depth), THRESHOLD_SETS["defaults"])["dimple depth"]
    assert row["reading"] == reading
    assert row["measured"] == ("n/a" if depth is None else f"{depth:.3g}")


def _tangent(ratio: float, baseline: float = math.sqrt(20 / 784)) -> dict:
    return {"tangent": {"ratio_to_baseline": ratio, "rms_tau": ratio * baseline, "baseline_rms_tau": baseline}}


def _tangent_reading(ratio: float, thresholds: dict, baseline: float = math.sqrt(20 / 784)) -> str:
    return _rows(_tangent(ratio, baseline), thresholds)["RMS tau / sqrt(k/n)"]["reading"]


@pytest.mark.parametrize("name", THRESHOLD_SETS)
def test_verdict_tangent_ratio_reads_each_band_at_its_lines(name):
    """k/n = 20/784: ratio <= line 'perpendicular'; RMS tau^2 >= k/n + along (1 - k/n) 'along
    the manifold'; else ratio >= 1/line 'towards the manifold'; else 'like a random direction'.
    Each line is probed just above and just below."""
    thresholds = THRESHOLD_SETS[name]
    line, baseline = thresholds["tangent_ratio"], math.sqrt(20 / 784)
    random_share = 20 / 784
    along_ratio = math.sqrt(random_share + thresholds["tangent_along"] * (1 - random_share)) / baseline
    assert 1 / line < along_ratio  # the "towards" band exists at these thresholds
    assert _tangent_reading(line, thresholds) == "perpendicular (dimpled)"
    assert _tangent_reading(line * DOWN, thresholds) == "perpendicular (dimpled)"
    assert _tangent_reading(line * UP, thresholds) == "like a random direction"
    assert _tangent_reading(1.0, thresholds) == "like a random direction"
    assert _tangent_reading(1 / line * DOWN, thresholds) == "like a random direction"
    assert _tangent_reading(1 / line, thresholds) == "towards the manifold (more than random)"
    assert _tangent_reading(along_ratio * DOWN, thresholds) == "towards the manifold (more than random)"
    assert _tangent_reading(along_ratio * UP, thresholds) == "along the manifold"
    row = _rows(_tangent(2.0), thresholds)["RMS tau / sqrt(k/n)"]
    assert row["measured"] == f"2 (tau {2 * baseline:.3g}, random {baseline:.3g})"
    assert row["dimpled"] == f"<= {line:g}" and row["stretchy"] == "~1"


def test_verdict_tangent_along_line_is_inclusive():
    """k/n = 1/4 (sqrt exact: 1/2) and tangent_along = 3/16: the 'along' line is
    RMS tau^2 = 1/4 + 3/16 * 3/4 = 25/64 = (5/8)^2, exact in binary, so RMS tau = 5/8
    (ratio 1.25, below 1/line = 2) sits on the line and reads 'along the manifold'; just
    below reads 'like a random direction'."""
    thresholds = ThresholdSpec(tangent_along=0.1875).model_dump()
    assert 0.625**2 == 0.25 + 0.1875 * (1 - 0.5**2)  # the line is hit exactly in floating point
    assert _tangent_reading(1.25, thresholds, baseline=0.5) == "along the manifold"
    assert _tangent_reading(1.25 * DOWN, thresholds, baseline=0.5) == "like a random direction"


def test_verdict_tangent_ratio_without_a_towards_band_and_without_a_measurement():
    """A tangent-ratio line >= 1 has no symmetric 'towards' band: above it is random until the
    'along' line. A NaN ratio reads n/a; no tangent summary (no manifold estimate) too."""
    thresholds = ThresholdSpec(tangent_ratio=1.5).model_dump()
    assert _tangent_reading(1.5, thresholds) == "perpendicular (dimpled)"
    assert _tangent_reading(1.5 * UP, thresholds) == "like a random direction"
    assert _tangent_reading(3.0, thresholds) == "like a random direction"
    assert _tangent_reading(math.nan, THRESHOLD_SETS["defaults"]) == "n/a"
    row = _rows({}, THRESHOLD_SETS["defaults"])["RMS tau / sqrt(k/n)"]
    assert (row["measured"], row["reading"]) == ("no manifold estimate", "n/a")


def _ms_row(thresholds: dict, attacks: dict | None) -> dict:
    return _rows({}, thresholds, attacks)["manifold specificity MS"]


@pytest.mark.parametrize("name", THRESHOLD_SETS)
def test_verdict_manifold_specificity_reads_each_band_at_its_lines(name):
    """MS >= line 'manifold specially robust (dimpled)'; MS <= 1/line 'manifold directions are
    the weak ones'; in between 'dimension effect only (critique)'."""
    thresholds = THRESHOLD_SETS[name]
    line = thresholds["specificity"]

    def reading(value):
        return _ms_row(thresholds, {"manifold_specificity": value})["reading"]

    assert reading(line) == "manifold specially robust (dimpled)"
    assert reading(line * UP) == "manifold specially robust (dimpled)"
    assert reading(line * DOWN) == "dimension effect only (critique)"
    assert reading(1.0) == "dimension effect only (critique)"
    assert reading(1 / line * UP) == "dimension effect only (critique)"
    assert reading(1 / line) == "manifold directions are the weak ones"
    assert reading(1 / line * DOWN) == "manifold directions are the weak ones"
    row = _ms_row(thresholds, {"manifold_specificity": 1.5, "manifold_specificity_interval": [1.25, 1.75]})
    assert row["measured"] == "1.5 [1.25, 1.75]"
    assert row["dimpled"] == f">= {line:g}" and row["stretchy"] == f"{1 / line:.3g} to {line:g}"


@pytest.mark.parametrize("name", THRESHOLD_SETS)
def test_verdict_manifold_specificity_from_the_covering_interval_alone(name):
    """No MS median (a distance not found) but a covering interval [low, high]: low >= line
    bounds MS above the line (robust), high <= 1/line below it (weak); otherwise, or with no
    interval, MS is undefined (n/a). Without attacks: 'attacks not run'."""
    thresholds = THRESHOLD_SETS[name]
    line = thresholds["specificity"]

    def row(covering):
        return _ms_row(thresholds, {"manifold_specificity": None, "manifold_specificity_covering": covering})

    robust = row([line, None])
    assert robust["reading"] == "manifold specially robust (dimpled)"
    assert robust["measured"] == f">= {line:.3g} (certified bracket; a median not found)"
    assert row([line * DOWN, None])["reading"] == "n/a"
    weak = row([0.0, 1 / line])
    assert weak["reading"] == "manifold directions are the weak ones"
    assert weak["measured"] == f"<= {1 / line:.3g} (certified bracket; a median not found)"
    assert row([0.0, 1 / line * UP])["reading"] == "n/a"
    between = row([0.5 / line, None])
    assert between["reading"] == "n/a"
    assert between["measured"] == f"undefined (a distance not found; bracket [{0.5 / line:.3g}, inf])"
    none = _ms_row(thresholds, {"manifold_specificity": None, "manifold_specificity_covering": None})
    assert (none["measured"], none["reading"]) == ("undefined (a distance not found)", "n/a")
    not_run = _ms_row(thresholds, None)
    assert (not_run["measured"], not_run["reading"]) == ("attacks not run", "n/a")


@pytest.mark.parametrize("name", THRESHOLD_SETS)
def test_verdict_stretch_alignment_reads_at_its_threshold(name):
    """Mean |<delta_free/||delta_free||, v_1>| >= line: 'pushes the most stretched feature
    (stretchy)'; just below: 'not along v_1'. No alignment measured: no row."""
    thresholds = THRESHOLD_SETS[name]
    line = thresholds["stretch_alignment"]

    def row(value):
        attacks = {"stretch_alignment": {"mean_alignment": value, "random_baseline": 0.25}}
        return _rows({}, thresholds, attacks).get("free attack along v_1")

    assert row(line)["reading"] == "pushes the most stretched feature (stretchy)"
    assert row(line)["measured"] == f"{line:.3g} (random 0.25)" and row(line)["stretchy"] == f">= {line:g}"
    assert row(line * UP)["reading"] == "pushes the most stretched feature (stretchy)"
    assert row(line * DOWN)["reading"] == "not along v_1"
    assert row(None) is None
    assert "free attack along v_1" not in _rows({}, thresholds, {"stretch_alignment": None})


@pytest.mark.parametrize("share, baseline, reading", [
    (0.5 * UP, 0.5, "above baseline"), (0.5, 0.5, "at or below baseline"), (0.5 * DOWN, 0.5, "at or below baseline"),
    (0.9, 2 / 3, "above baseline"), (math.nan, 2 / 3, "undefined (no feature energy)"),
    (None, 2 / 3, "undefined (no feature energy)"),
])
def test_verdict_off_manifold_feature_energy_reads_against_the_isotropic_share(share, baseline, reading):
    """||J P_N||^2 / ||J||^2 strictly above the isotropic (n-k)/n: 'above baseline'; at or
    below: 'at or below baseline'; NaN or missing: undefined."""
    summary = {"stretch": {"normal_energy_share": share, "normal_energy_baseline": baseline}}
    row = _rows(summary, THRESHOLD_SETS["defaults"])["off-manifold feature energy"]
    assert row["reading"] == reading
    assert row["dimpled"] == "> (n-k)/n"


def test_verdict_rows_come_in_the_documented_order():
    """Clinging, dimple depth, RMS tau, MS, free attack along v_1, off-manifold energy."""
    summary = {**_height(0.6, 0.1), **_tangent(1.0), "stretch": {"normal_energy_share": 0.9,
                                                                 "normal_energy_baseline": 0.5}}
    attacks = {"manifold_specificity": 1.0, "stretch_alignment": {"mean_alignment": 0.9, "random_baseline": 0.2}}
    assert list(_rows(summary, THRESHOLD_SETS["defaults"], attacks)) == [
        "clinging fraction", "dimple depth", "RMS tau / sqrt(k/n)", "manifold specificity MS",
        "free attack along v_1", "off-manifold feature energy"]


# --------------------------------------------------------------------------- 5. bisection refinement

# Distances to the boundary and step 0.1: the greedy walk alone overshoots each to the next
# multiple of the step, by 0.063, 0.0655, 0.0877, 0.04 and 0.09.
DISTANCES = np.array([0.537, 0.2345, 1.0123, 0.66, 0.31])
STEP = 0.1


def _linear_model_and_points(distances: np.ndarray, n: int = 5, seed: int = 3):
    """nn.Linear(n, 2) in float64 with margin f = z_1 - z_0 = w.x + b, and points x_i with
    f(x_i) = -d_i ||w|| (class 0), so the free distance to the boundary is |f| / ||w|| = d_i."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(n, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, n, generator=generator, dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    model.eval().requires_grad_(False)
    w = model.weight[1] - model.weight[0]
    b = model.bias[1] - model.bias[0]
    y = torch.randn(len(distances), n, generator=generator, dtype=torch.float64)
    target = -torch.as_tensor(distances, dtype=torch.float64) * w.norm()
    x = y + ((target - (y @ w + b)) / (w @ w))[:, None] * w
    return model, x, w, b


def test_refinement_bisects_the_greedy_overshoot_to_the_closed_form_free_distance():
    """Free mode on a linear model: d = |w.x + b| / ||w||. With refine_steps = 40 and no normal
    rounds the search's upper end (greedy walk, no rays, no boundary walk) matches d within
    1e-9; with refine_steps = 0 it is the greedy overshoot ceil(d / step) step, off by >= 0.04,
    so the match depends on the bisection."""
    model, x, w, b = _linear_model_and_points(DISTANCES)
    exact = ((x @ w + b).abs() / w.norm()).numpy()
    np.testing.assert_allclose(exact, DISTANCES, rtol=1e-12)
    budget = SearchBudget(starts=0, walk_rounds=0, certify=False)

    def upper(refine_steps):
        pgd = GreedyProjectedPGD(model, mode="free", step_size=STEP, max_steps=100, refine_steps=refine_steps,
                                 normal_rounds=0)
        brackets = MinimalDistanceSearch(pgd, budget)(x)
        assert brackets.search == "random starts"  # no exhaustive ray search to hide the overshoot
        return brackets.upper

    np.testing.assert_allclose(upper(40), exact, atol=1e-9)
    unrefined = upper(0)
    np.testing.assert_allclose(unrefined, np.ceil(exact / STEP) * STEP, atol=1e-9)
    assert np.all(unrefined - exact > 0.03)


def test_refinement_reaches_the_closed_form_tangent_space_distance():
    """Mode 'on' with a fixed 2-D subspace T of R^5: d_on = |f| / ||P_T w||. The greedy walk
    along P_T w overshoots by up to one step (0.1); 40 bisections bring it within 1e-9."""
    model, x, w, b = _linear_model_and_points(DISTANCES)
    basis = torch.linalg.qr(torch.randn(5, 2, generator=torch.Generator().manual_seed(9),
                                        dtype=torch.float64))[0]
    exact = ((x @ w + b).abs() / (basis @ (basis.T @ w)).norm()).numpy()

    def distance(refine_steps):
        pgd = GreedyProjectedPGD(model, mode="on", step_size=STEP, max_steps=2000, refine_steps=refine_steps,
                                 normal_rounds=0)
        result = pgd(x, basis)
        assert bool(result.success.all())
        return result.distance.numpy()

    np.testing.assert_allclose(distance(40), exact, atol=1e-9)
    unrefined = distance(0)
    np.testing.assert_allclose(unrefined, np.ceil(exact / STEP - 1e-9) * STEP, atol=1e-9)
    assert np.max(unrefined - exact) > 1e-3


# --------------------------------------------------------------------------- 6. ratios to free


def test_ratio_to_free_is_own_median_over_free_median():
    """ratio_to_free = median d_mode / median d_free: 6 / 2 = 3 (on), 0.5 / 2 = 0.25 (off),
    5 / 2 = 2.5 (coordinate_on), free itself 1, a mode whose median was not found (None) None;
    no free median: every ratio None. (No random modes: their dimension-only ratio needs scipy,
    checked below.)"""
    report = {"modes": {mode: {"median_distance_counting_failures": value} for mode, value in
                        (("free", 2.0), ("on", 6.0), ("off", 0.5), ("coordinate_on", 5.0), ("coordinate_off", None))}}
    _add_ratios(report, 2, 8)
    modes = report["modes"]
    assert modes["free"]["ratio_to_free"] == pytest.approx(1.0)
    assert modes["on"]["ratio_to_free"] == pytest.approx(3.0, rel=1e-12)
    assert modes["off"]["ratio_to_free"] == pytest.approx(0.25, rel=1e-12)
    assert modes["coordinate_on"]["ratio_to_free"] == pytest.approx(2.5, rel=1e-12)
    assert modes["coordinate_off"]["ratio_to_free"] is None
    assert all("dimension_only_ratio" not in summary for summary in modes.values())
    no_free = {"modes": {"free": {"median_distance_counting_failures": None},
                         "on": {"median_distance_counting_failures": 1.0}}}
    _add_ratios(no_free, 2, 8)
    assert no_free["modes"]["on"]["ratio_to_free"] is None


def test_random_mode_ratios_sit_beside_the_beta_median_dimension_only_ratios():
    """For k = 2, n = 8, ||P_B w_hat||^2 ~ Beta(1, 3) in a random 2-D subspace (CDF
    1 - (1 - x)^3, median 1 - 2^(-1/3)) and Beta(3, 1) in its complement (CDF x^3, median
    2^(-1/3)): dimension-only ratios 1 / sqrt(1 - 2^(-1/3)) and 2^(1/6); the measured ratios
    beside them are median d_mode / median d_free (5 / 2 and 3 / 2)."""
    report = {"modes": {mode: {"median_distance_counting_failures": value} for mode, value in
                        (("free", 2.0), ("random_on", 5.0), ("random_off", 3.0))}}
    _add_ratios(report, 2, 8)
    modes = report["modes"]
    assert modes["random_on"]["ratio_to_free"] == pytest.approx(2.5, rel=1e-12)
    assert modes["random_off"]["ratio_to_free"] == pytest.approx(1.5, rel=1e-12)
    assert modes["random_on"]["dimension_only_ratio"] == pytest.approx(1 / math.sqrt(1 - 2 ** (-1 / 3)), rel=1e-9)
    assert modes["random_off"]["dimension_only_ratio"] == pytest.approx(2 ** (1 / 6), rel=1e-9)
    assert dimension_only_ratio(2, 8, inside=True) == modes["random_on"]["dimension_only_ratio"]


def test_attack_report_ratios_to_free_match_the_linear_closed_form():
    """A linear margin on the flat tangent space T (the same at every point): per point
    d_on / d_free = ||w|| / ||P_T w|| and d_off / d_free = ||w|| / ||P_N w||, so the ratios
    of the medians are exactly these, through `attack_arrays` (the attack stage's report)."""
    flat = Flat(dim=2, ambient_dim=5, embedding="random", embedding_seed=1)
    model, x, w, _ = _linear_model_and_points(DISTANCES)
    u = np.zeros((len(x), 2))
    bases = torch.as_tensor(flat.tangent_basis(u))
    tangent = bases[0] @ (bases[0].T @ w)
    settings = AttackSettings(n_points=len(x), step_size=0.05, seed=0, max_steps=2000, refine_steps=40,
                              normal_rounds=0, loss="margin", modes=("free", "on", "off"), bootstrap=0,
                              confidence=0.95, robust_epsilons=(), check_with_deepfool=False, every_snapshot=False,
                              search=SearchBudget(starts=0, walk_rounds=0, certify=False))
    report = attack_arrays(model, x, bases, settings, seed=0, device=torch.device("cpu"))
    modes = report["modes"]
    assert all(modes[mode]["success_rate"] == 1.0 for mode in ("free", "on", "off"))
    assert modes["free"]["median_distance_counting_failures"] == pytest.approx(float(np.median(DISTANCES)), abs=1e-8)
    assert modes["free"]["ratio_to_free"] == pytest.approx(1.0)
    assert modes["on"]["ratio_to_free"] == pytest.approx(float(w.norm() / tangent.norm()), rel=1e-7)
    assert modes["off"]["ratio_to_free"] == pytest.approx(float(w.norm() / (w - tangent).norm()), rel=1e-7)


def test_verdict_reads_a_stored_null_tangent_ratio_as_not_available():
    """metrics.json stores a NaN ratio (no point with a margin gradient) as null; `sim attack`
    rebuilds the verdict from the stored geometry, which once raised TypeError here."""
    from simulator.config.scene import ThresholdSpec
    from simulator.stages.verdict import verdict_rows

    rows = verdict_rows({"tangent": {"n_points": 0, "ratio_to_baseline": None, "rms_tau": None,
                                     "baseline_rms_tau": 0.5}}, ThresholdSpec().model_dump())
    (tangent,) = [row for row in rows if row["measurement"].startswith("RMS tau")]
    assert tangent["reading"] == "n/a"
