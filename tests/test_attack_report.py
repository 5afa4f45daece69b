"""The attack report: dimension-only predictions, MS and its interval, end to end on a run."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import load_run, load_scene, run_scene
from simulator.attacks.statistics import covering_interval, finite_or_none, specificity_bracket
from simulator.seeding import numpy_rng
from simulator.stages.attack import (
    bootstrap_interval,
    dimension_only_ratio,
    manifold_specificity,
    random_alignment_baseline,
)

from conftest import SCENES

# --------------------------------------------------------------------------- MS by hand
# DESIGN.md 4.3 and 8 written out again, independently of simulator.attacks.statistics, so that
# every test with a run can recompute the stored MS, its bracket and its intervals from the
# per-point arrays in attack_distances.npz (the other test files import these).

MS_MODES = ("on", "off", "random_on", "random_off")


def stored_brackets(path) -> tuple[dict, dict]:
    """({mode: upper ends, NaN ("not found") as +inf}, {mode: certified lower ends}) of a run folder."""
    with np.load(path / "attack_distances.npz") as stored:
        upper = {mode: np.where(np.isnan(stored[mode]), np.inf, stored[mode]) for mode in stored.files
                 if mode not in ("free_delta", "point_index") and not mode.startswith("lower_bound_")}
        lower = {name.removeprefix("lower_bound_"): stored[name] for name in stored.files
                 if name.startswith("lower_bound_")}
    return upper, lower


def ms_from_medians(on, off, random_on, random_off):
    """MS = (d_on / d_off) / (d_rand_on / d_rand_off); None unless every median is finite and positive."""
    if not all(np.isfinite(d) and d > 0 for d in (on, off, random_on, random_off)):
        return None
    return (on / off) / (random_on / random_off)


def ms_bracket_ends(up: dict, low: dict) -> tuple[float, float]:
    """The smallest MS (lower ends of on and random_off, upper ends of off and random_on; 0 when
    a lower end is 0 or an upper end infinite) and the largest (the other way round; inf when a
    lower end is 0 or an upper end infinite), from per-mode medians."""
    small_top, small_bottom = low["on"] * low["random_off"], up["off"] * up["random_on"]
    smallest = 0.0 if small_top == 0 or not np.isfinite(small_bottom) else small_top / small_bottom
    large_top, large_bottom = up["on"] * up["random_off"], low["off"] * low["random_on"]
    largest = np.inf if large_bottom == 0 or not np.isfinite(large_top) else large_top / large_bottom
    return smallest, largest


def check_stored_specificity(report: dict, path, seed: int, resamples: int) -> None:
    """MS, its bracket, bootstrap interval and covering interval in an attack report, all
    recomputed from the run folder's per-point arrays (`check_specificity`)."""
    check_specificity(report, *stored_brackets(path), seed, resamples)


def check_specificity(report: dict, upper: dict, lower: dict, seed: int, resamples: int) -> None:
    """MS, its bracket, bootstrap interval and covering interval in an attack report, recomputed
    from per-point upper ends ("not found" as +inf) and lower ends (bootstrap: the run's own
    "attacks" stream, paired resamples of the points, percentiles that pick sample values)."""
    n_points = len(upper["on"])
    assert all(len(upper[mode]) == len(lower[mode]) == n_points for mode in MS_MODES)
    assert all(np.all(lower[mode] <= upper[mode]) for mode in upper)  # each bracket is a bracket
    up = {mode: np.median(upper[mode]) for mode in MS_MODES}
    low = {mode: np.median(lower[mode]) for mode in MS_MODES}
    expected = ms_from_medians(up["on"], up["off"], up["random_on"], up["random_off"])
    if expected is None:
        assert report["manifold_specificity"] is None
    else:
        assert report["manifold_specificity"] == pytest.approx(expected, rel=1e-12)
    smallest, largest = ms_bracket_ends(up, low)
    stored_small, stored_large = report["manifold_specificity_bracket"]
    assert stored_small == pytest.approx(smallest, rel=1e-12)
    assert_same_or_missing(stored_large, largest)
    if expected is not None:
        assert smallest <= expected * (1 + 1e-12) and expected <= largest * (1 + 1e-12)

    rng = numpy_rng(seed, "attacks")
    confidence = report["manifold_specificity_confidence"]
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n_points, n_points)
        value = ms_from_medians(*(np.median(upper[mode][index]) for mode in MS_MODES))
        values.append(np.inf if value is None or not np.isfinite(value) else value)
    bootstrap = np.quantile(values, tails, method="inverted_cdf")
    index = rng.integers(0, n_points, (resamples, n_points))  # the covering interval's resamples
    ends = []
    for row in index:
        resampled_up = {mode: np.median(upper[mode][row]) for mode in MS_MODES}
        ends.append(ms_bracket_ends(resampled_up, {mode: np.median(lower[mode][row]) for mode in MS_MODES}))
        value = ms_from_medians(*resampled_up.values())  # each resample's MS lies in its bracket
        assert value is None or ends[-1][0] <= value * (1 + 1e-12) and value <= ends[-1][1] * (1 + 1e-12)
    covering = (np.quantile([end[0] for end in ends], tails[0], method="inverted_cdf"),
                np.quantile([end[1] for end in ends], tails[1], method="inverted_cdf"))
    for stored, recomputed in ((report["manifold_specificity_interval"], bootstrap),
                               (report["manifold_specificity_covering"], covering)):
        for end, value in zip(stored, recomputed):
            assert_same_or_missing(end, value)


def assert_same_or_missing(stored, value) -> None:
    """A stored figure equals a recomputed one; an infinite recomputed one is stored as None."""
    if np.isfinite(value):
        assert stored == pytest.approx(value, rel=1e-12)
    else:
        assert stored is None


@pytest.mark.parametrize("k,n", [(2, 3), (10, 100), (50, 60)])
def test_dimension_only_ratio_matches_monte_carlo(k, n):
    """Second method: project a fixed unit w onto many Haar-random k-dim subspaces."""
    rng = np.random.default_rng(0)
    w = np.zeros(n)
    w[0] = 1.0
    share = []
    for _ in range(4000):
        q, _ = np.linalg.qr(rng.standard_normal((n, k)))
        share.append(np.sum(q[0] ** 2))  # ||P_B w||^2
    share = np.asarray(share)
    assert dimension_only_ratio(k, n, inside=True) == pytest.approx(np.median(1 / np.sqrt(share)), rel=0.03)
    assert dimension_only_ratio(k, n, inside=False) == pytest.approx(np.median(1 / np.sqrt(1 - share)), rel=0.03)


def test_random_alignment_baseline_matches_monte_carlo():
    rng = np.random.default_rng(1)
    for n in (3, 100):
        u = rng.standard_normal((200000, n))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        assert random_alignment_baseline(n) == pytest.approx(np.abs(u[:, 0]).mean(), rel=0.01)


def test_manifold_specificity_closed_form_and_interval():
    distances = {"on": np.full(50, 4.0), "off": np.full(50, 1.0),
                 "random_on": np.full(50, 2.0), "random_off": np.full(50, 1.0)}
    assert manifold_specificity(distances) == pytest.approx(2.0)
    low, high = bootstrap_interval(distances, 200, 0.95, np.random.default_rng(0))
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    # A mode that mostly finds nothing makes MS undefined rather than a wrong number.
    distances["off"] = np.where(np.arange(50) < 30, np.nan, 1.0)
    assert manifold_specificity(distances) is None


def test_bootstrap_interval_covers_the_spread():
    rng = np.random.default_rng(3)
    distances = {mode: rng.lognormal(0, 0.3, 400) * scale
                 for mode, scale in (("on", 3.0), ("off", 1.0), ("random_on", 3.0), ("random_off", 1.0))}
    value = manifold_specificity(distances)
    low, high = bootstrap_interval(distances, 500, 0.95, np.random.default_rng(0))
    assert low < value < high and low < 1.0 < high  # same law on both sides: MS = 1 is plausible


def test_specificity_bracket_and_covering_interval_closed_forms():
    """Constant brackets: every resample is the same, so the covering interval is the bracket,
    smallest = (l_on l_rand_off) / (u_off u_rand_on), largest = (u_on u_rand_off) / (l_off l_rand_on)."""
    upper = {"on": np.full(40, 4.0), "off": np.full(40, 1.0), "random_on": np.full(40, 2.0),
             "random_off": np.full(40, 1.0)}
    lower = {"on": np.full(40, 2.0), "off": np.full(40, 0.5), "random_on": np.full(40, 1.0),
             "random_off": np.full(40, 0.5)}
    assert specificity_bracket(upper, lower) == pytest.approx((2 * 0.5 / (1 * 2), 4 * 1 / (0.5 * 1)))
    assert covering_interval(upper, lower, 50, 0.95, np.random.default_rng(0)) == pytest.approx((0.5, 8.0))
    # No certified radius off the manifold: no upper end; "not found" on it: no upper end either.
    assert specificity_bracket(upper, {**lower, "off": np.zeros(40)}) == (0.5, np.inf)
    assert specificity_bracket({**upper, "on": np.full(40, np.nan)}, lower) == (0.5, np.inf)
    assert covering_interval(upper, {**lower, "off": np.zeros(40)}, 50, 0.95, np.random.default_rng(0)) == (0.5, None)
    # No certified radius on the manifold, or "not found" off it: no lower end (0).
    assert specificity_bracket(upper, {**lower, "on": np.zeros(40)})[0] == 0.0
    assert specificity_bracket({**upper, "off": np.full(40, np.nan)}, lower)[0] == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_hand_written_specificity_matches_the_library_on_random_brackets(seed):
    """The by-hand recomputation the run tests use agrees with simulator.attacks.statistics on
    brackets with failures (NaN upper ends) and uncertified points (zero lower ends)."""
    rng = np.random.default_rng(seed)
    upper, lower = {}, {}
    for mode, scale in (("on", 3.0), ("off", 1.0), ("random_on", 2.0), ("random_off", 1.2)):
        upper[mode] = np.where(rng.random(31) < 0.15, np.nan, rng.lognormal(0, 0.4, 31) * scale)
        lower[mode] = np.where(rng.random(31) < 0.3, 0.0, np.nan_to_num(upper[mode], nan=2 * scale) * rng.random(31))
    stream = numpy_rng(seed, "attacks")
    smallest, largest = specificity_bracket(upper, lower)
    report = {"manifold_specificity": manifold_specificity(upper), "manifold_specificity_confidence": 0.9,
              "manifold_specificity_interval": bootstrap_interval(upper, 64, 0.9, stream),
              "manifold_specificity_bracket": [smallest, finite_or_none(largest)],
              "manifold_specificity_covering": covering_interval(upper, lower, 64, 0.9, stream)}
    as_infinite = {mode: np.where(np.isnan(value), np.inf, value) for mode, value in upper.items()}
    check_specificity(report, as_infinite, lower, seed, 64)


@pytest.mark.slow
def test_subspace_highdim_random_ratio_matches_the_dimension_only_prediction(tmp_path):
    """The issue's bar: a near-linear model on k=10 in n=100 gives d_rand_on/d_free close to
    the linear-margin prediction (median of 1/sqrt(Beta(5, 45)) = 3.25)."""
    scene = load_scene(SCENES / "subspace_highdim.yaml",
                       overrides={"train.device": "cpu", "measure.n_points": 100, "measure.height_every": 12,
                                  "measure.final_height_resolution": 16, "render.first_look": False})
    run = load_run(run_scene(scene, tmp_path, progress=False).path)
    report = run.metrics["attacks"]["final"]
    random_on = report["modes"]["random_on"]
    assert random_on["ratio_to_free"] == pytest.approx(random_on["dimension_only_ratio"], rel=0.15)
    assert report["deepfool_check"]["share_pgd_within_1pct_or_shorter"] > 0.9
    # MS, bracket, bootstrap and covering intervals recomputed by hand from attack_distances.npz.
    check_stored_specificity(report, run.path, scene.seed, run.metrics["attacks"]["settings"]["bootstrap"])
    upper, lower = stored_brackets(run.path)
    assert len(upper["free"]) == run.metrics["attacks"]["settings"]["n_points"]
    for mode, summary in report["modes"].items():  # every mode's medians and ratio to free, by hand
        assert_same_or_missing(summary["median_distance_counting_failures"], np.median(upper[mode]))
        assert summary["median_lower_bound"] == pytest.approx(np.median(lower[mode]), rel=1e-12)
        assert summary["success_rate"] == np.mean(np.isfinite(upper[mode]))
        assert_same_or_missing(summary["ratio_to_free"], np.median(upper[mode]) / np.median(upper["free"]))
    # A subspace can only make the minimal distance longer: d_mode >= d_free up to PGD's 1% slack.
    for mode in MS_MODES:
        assert np.median(upper[mode]) >= 0.99 * np.median(upper["free"])
    # The dimension-only prediction itself, from scipy's Beta median (k = 10 in n = 100).
    from scipy.stats import beta

    assert random_on["dimension_only_ratio"] == pytest.approx(1 / np.sqrt(beta.median(5, 45)), rel=1e-12)
    assert random_on["dimension_only_ratio"] == pytest.approx(3.25, abs=0.005)  # the figure
