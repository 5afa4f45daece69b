"""Closed forms for the MS statistics, the margins, the data radius and the tau summary.

Every test here checks a function of `simulator.attacks.statistics`, `simulator.geometry.margins`,
`simulator.geometry.scale` or `simulator.geometry.tangent` against numbers worked out by hand or
against an independent plain-Python recomputation of the documented algorithm (sorted lists,
explicit loops, `math`). This covers the cases the end-to-end tests never reach: zero and
"not found" medians, 0/0 and inf/inf in the MS ratio, a single point, an empty input, ties
and two classes in the margins, rounding just above tau = 1, and the exact percentile ends of the
paired bootstrap and the covering interval at a fixed seed. The whole file runs in about a
second (docs/mutation/statistics_margins_tangent.md lists the mutants it kills and those left).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import beta

from simulator.attacks.statistics import (
    bootstrap_interval,
    covering_interval,
    dimension_only_ratio,
    finite_or_none,
    manifold_specificity,
    median_counting_failures,
    random_alignment_baseline,
    specificity_bracket,
    specificity_from_medians,
)
from simulator.geometry.margins import class_margins, predicted_margin
from simulator.geometry.scale import data_radius
from simulator.geometry.tangent import summarize_tangent_fractions, tangent_fractions

MODES = ("on", "off", "random_on", "random_off")


class _NoWarnings:
    """Turn every warning (numpy's RuntimeWarnings included) into an error inside the block."""

    def __enter__(self):
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


# --------------------------------------------------------------------------- plain-Python helpers


def _median_inf(values) -> float:
    """Median of an odd number of values, NaN counted as +inf (sorted list, middle element)."""
    ordered = sorted(math.inf if math.isnan(v) else float(v) for v in values)
    assert len(ordered) % 2 == 1
    return ordered[len(ordered) // 2]


def _smallest_ms(on, off, random_on, random_off) -> float:
    """Lower end of MS from bracket medians: a 0 numerator or an infinite denominator is 0."""
    numerator, denominator = on * random_off, off * random_on
    if numerator == 0 or not math.isfinite(denominator):
        return 0.0
    return numerator / denominator if denominator else math.inf


def _largest_ms(on, off, random_on, random_off) -> float:
    """Upper end of MS from bracket medians: a 0 denominator or an infinite numerator is +inf."""
    numerator, denominator = on * random_off, off * random_on
    if denominator == 0 or not math.isfinite(numerator):
        return math.inf
    return numerator / denominator


def _inverted_cdf(values, q: float) -> float:
    """Empirical quantile without interpolation: the smallest value whose CDF k/R reaches q."""
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def _resample_rows(seed: int, n_points: int, resamples: int, at_once: bool):
    """The paired resampling indices the intervals draw: R rows of n indices in [0, n), drawn
    as one (R, n) block (the covering interval) or a row at a time (the bootstrap)."""
    rng = np.random.default_rng(seed)
    if at_once:
        return list(rng.integers(0, n_points, (resamples, n_points)))
    return [rng.integers(0, n_points, n_points) for _ in range(resamples)]


# --------------------------------------------------------------------------- medians and None


def test_median_counting_failures_counts_not_found_as_infinity():
    """NaN (not found) is +inf: [3, NaN, 1] -> median of (1, 3, inf) = 3; a majority of NaN
    gives inf; an even count averages the middle two ((1 + inf) / 2 = inf)."""
    assert median_counting_failures(np.array([3.0, np.nan, 1.0])) == 3.0
    assert median_counting_failures(np.array([1.0, np.nan, np.nan])) == math.inf
    assert median_counting_failures(np.array([2.0, 4.0])) == 3.0
    assert median_counting_failures(np.array([1.0, np.nan])) == math.inf


def test_median_counting_failures_of_no_points_is_nan_without_a_warning():
    with _NoWarnings():
        value = median_counting_failures(np.array([]))
    assert math.isnan(value)


def test_finite_or_none_keeps_finite_numbers_as_floats_only():
    value = finite_or_none(np.float64(2.5))
    assert value == 2.5 and type(value) is float
    assert finite_or_none(0.0) == 0.0
    for missing in (math.inf, -math.inf, math.nan, np.float64(np.inf), None):
        assert finite_or_none(missing) is None


# --------------------------------------------------------------------------- dimension-only ratios


@pytest.mark.parametrize("k,n,inside,expected", [
    # ||P_B w||^2 ~ Beta(1/2, 1): CDF sqrt(x), median 1/4, ratio 1 / sqrt(1/4) = 2.
    (1, 3, True, 2.0),
    # Complement: Beta(1, 1/2): CDF 1 - sqrt(1 - x), median 3/4, ratio 2 / sqrt(3).
    (1, 3, False, 2 / math.sqrt(3)),
    # Beta(1, 1) is uniform: median 1/2 on both sides, ratio sqrt(2).
    (2, 4, True, math.sqrt(2)),
    (2, 4, False, math.sqrt(2)),
])
def test_dimension_only_ratio_at_beta_medians_known_by_hand(k, n, inside, expected):
    assert dimension_only_ratio(k, n, inside=inside) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k,n", [(3, 10), (7, 9), (1, 50)])
def test_dimension_only_ratio_is_one_over_the_root_beta_median(k, n):
    """The docstring's definition through scipy's Beta quantile function at 1/2."""
    assert dimension_only_ratio(k, n, inside=True) == pytest.approx(
        1 / math.sqrt(beta.ppf(0.5, k / 2, (n - k) / 2)), rel=1e-9)
    assert dimension_only_ratio(k, n, inside=False) == pytest.approx(
        1 / math.sqrt(beta.ppf(0.5, (n - k) / 2, k / 2)), rel=1e-9)


def test_dimension_only_ratio_of_the_whole_space_and_of_no_space():
    """A subspace that is all of R^n keeps w whole (ratio 1) and its complement is {0} (no
    crossing: inf); a 0-dim subspace is the other way round."""
    assert dimension_only_ratio(5, 5, inside=True) == 1.0
    assert dimension_only_ratio(5, 5, inside=False) == math.inf
    assert dimension_only_ratio(0, 5, inside=False) == 1.0
    assert dimension_only_ratio(0, 5, inside=True) == math.inf


@pytest.mark.parametrize("n,expected", [
    (1, 1.0),                    # u = +-1
    (2, 2 / math.pi),            # E |cos theta|, theta uniform
    (3, 0.5),                    # Archimedes: u_1 uniform on [-1, 1]
    (4, 4 / (3 * math.pi)),      # Gamma(2) / (sqrt(pi) Gamma(5/2))
    (5, 3 / 8),                  # Gamma(5/2) / (sqrt(pi) Gamma(3))
])
def test_random_alignment_baseline_closed_forms(n, expected):
    """E |<u, v>| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) for u uniform on S^{n-1}."""
    assert random_alignment_baseline(n) == pytest.approx(expected, rel=1e-12)


def test_random_alignment_baseline_large_n_is_sqrt_two_over_pi_n():
    n = 10_000
    assert random_alignment_baseline(n) == pytest.approx(math.sqrt(2 / (math.pi * n)), rel=1e-4)


# --------------------------------------------------------------------------- MS at the points


def _constant(on, off, random_on, random_off, n=5):
    return {mode: np.full(n, float(value)) for mode, value in
            zip(MODES, (on, off, random_on, random_off))}


def test_manifold_specificity_is_undefined_for_a_zero_or_not_found_median():
    """MS = (4 / 1) / (2 / 1) = 2; a zero median anywhere (points on the boundary) or an
    infinite one (a mode that found nothing) leaves it undefined, never 0."""
    assert manifold_specificity(_constant(4, 1, 2, 1)) == pytest.approx(2.0, rel=1e-12)
    for mode in MODES:
        zero = {**_constant(4, 1, 2, 1), mode: np.zeros(5)}
        assert manifold_specificity(zero) is None, mode
        not_found = {**_constant(4, 1, 2, 1), mode: np.full(5, np.nan)}
        assert manifold_specificity(not_found) is None, mode


# --------------------------------------------------------------------------- MS from medians

# (on, off, random_on, random_off, smallest (lower=True), largest (lower=False)), numerator
# on * random_off, denominator off * random_on.
_MEDIAN_CASES = [
    (2.0, 1.0, 4.0, 3.0, 1.5, 1.5),                     # 6 / 4 on both sides
    (1.0, 2.0, 1.0, 1.0, 0.5, 0.5),                     # numerator exactly 1
    (2.0, 1.0, 1.0, 1.0, 2.0, 2.0),                     # denominator exactly 1
    (0.0, 1.0, 1.0, 1.0, 0.0, 0.0),                     # 0 / 1
    (1.0, 0.0, 1.0, 1.0, math.inf, math.inf),           # 1 / 0
    (0.0, 0.0, 1.0, 1.0, 0.0, math.inf),                # 0 / 0: no bound on either side
    (1.0, math.inf, 1.0, 1.0, 0.0, 0.0),                # 1 / inf
    (math.inf, 1.0, 1.0, 1.0, math.inf, math.inf),      # inf / 1
    (math.inf, math.inf, 1.0, 1.0, 0.0, math.inf),      # inf / inf: no bound on either side
]


@pytest.mark.parametrize("lower", [True, False])
def test_specificity_from_medians_case_by_case(lower):
    column = 4 if lower else 5
    for case in _MEDIAN_CASES:
        value = specificity_from_medians(*case[:4], lower=lower)
        assert float(value) == case[column], (case, lower)
        assert np.asarray(value).dtype == np.float64


@pytest.mark.parametrize("lower", [True, False])
def test_specificity_from_medians_on_arrays_is_silent_and_elementwise(lower):
    """All cases at once as arrays (the covering interval's use), with 0/0, x/0 and inf/inf
    handled without a RuntimeWarning."""
    on, off, random_on, random_off, smallest, largest = (np.array(column) for column in zip(*_MEDIAN_CASES))
    with _NoWarnings():
        value = specificity_from_medians(on, off, random_on, random_off, lower=lower)
    assert value.dtype == np.float64
    np.testing.assert_array_equal(value, smallest if lower else largest)


def test_specificity_bracket_medians_and_min_max_by_hand():
    """Five points; NaN upper ends (not found) count as +inf inside the medians:
    up on (3, NaN, 5, 4, 6) -> 5,  low on (1, 2, 2.5, 3, 0.5) -> 2,
    up off (2, 1, NaN, 1.5, 3) -> 2, low off (1, 0.5, 0.8, 1, 2) -> 1,
    random_on [2, 4] everywhere, random_off [1, 3] everywhere:
    smallest = (2 * 1) / (2 * 4) = 0.25, largest = (5 * 3) / (1 * 2) = 7.5."""
    upper = {"on": np.array([3, np.nan, 5, 4, 6]), "off": np.array([2, 1, np.nan, 1.5, 3]),
             "random_on": np.full(5, 4.0), "random_off": np.full(5, 3.0)}
    lower = {"on": np.array([1, 2, 2.5, 3, 0.5]), "off": np.array([1, 0.5, 0.8, 1, 2]),
             "random_on": np.full(5, 2.0), "random_off": np.full(5, 1.0)}
    smallest, largest = specificity_bracket(upper, lower)
    assert smallest == pytest.approx(0.25, rel=1e-12)
    assert largest == pytest.approx(7.5, rel=1e-12)


def test_specificity_bracket_and_covering_interval_of_points_on_the_boundary():
    """Every distance 0 (a collapsed model): MS is 0 / 0, so neither end is bounded: the
    bracket is (0, inf) and the covering interval (0, None)."""
    zeros = {mode: np.zeros(5) for mode in MODES}
    assert specificity_bracket(zeros, zeros) == (0.0, math.inf)
    assert covering_interval(zeros, zeros, 7, 0.9, np.random.default_rng(0)) == (0.0, None)


# --------------------------------------------------------------------------- intervals


def _single_point():
    upper = {"on": np.array([4.0]), "off": np.array([1.0]), "random_on": np.array([2.0]),
             "random_off": np.array([1.0])}
    lower = {"on": np.array([2.0]), "off": np.array([0.5]), "random_on": np.array([1.0]),
             "random_off": np.array([0.5])}
    return upper, lower


def test_intervals_with_no_resamples_are_none():
    upper, lower = _single_point()
    assert covering_interval(upper, lower, 0, 0.9, np.random.default_rng(0)) is None
    assert bootstrap_interval(upper, 0, 0.9, np.random.default_rng(0)) is None


def test_intervals_of_a_single_point_and_a_single_resample():
    """One point: every resample is that point, so the covering interval is its bracket
    ((2 * 0.5) / (1 * 2), (4 * 1) / (0.5 * 1)) = (0.5, 8) and the bootstrap interval its MS
    (4 / 1) / (2 / 1) = 2, already with one resample."""
    upper, lower = _single_point()
    for resamples in (1, 5):
        assert covering_interval(upper, lower, resamples, 0.9, np.random.default_rng(0)) == \
            (pytest.approx(0.5, rel=1e-12), pytest.approx(8.0, rel=1e-12))
        assert bootstrap_interval(upper, resamples, 0.9, np.random.default_rng(0)) == \
            (pytest.approx(2.0, rel=1e-12), pytest.approx(2.0, rel=1e-12))


def test_bootstrap_of_a_point_never_found_off_the_manifold_has_no_ends():
    """Every resample's MS is undefined ('not found' off the manifold): each counts as +inf,
    so both percentile ends are unbounded (None)."""
    upper, _ = _single_point()
    upper["off"] = np.array([np.nan])
    assert bootstrap_interval(upper, 4, 0.9, np.random.default_rng(0)) == (None, None)


def _bracketed_distances(seed: int, n_points: int = 25):
    """Lower ends lognormal around per-mode scales, upper ends 1-2x above; three 'not found'
    (NaN) upper ends in every mode, at different points."""
    rng = np.random.default_rng(seed)
    lower, upper = {}, {}
    for offset, (mode, scale) in enumerate(zip(MODES, (3.0, 1.0, 2.0, 1.0))):
        lower[mode] = rng.lognormal(0.0, 0.5, n_points) * scale
        upper[mode] = lower[mode] * rng.uniform(1.0, 2.0, n_points)
        upper[mode][[offset, offset + 7, offset + 14]] = np.nan
    return upper, lower


# 103 resamples at confidence 0.8: the ends sit at ranks ceil(0.1 * 103) = 11 and
# ceil(0.9 * 103) = 93, where no interpolation between neighbours lands exactly.
_RESAMPLES, _CONFIDENCE = 103, 0.8


@pytest.mark.parametrize("seed", [0, 1])
def test_covering_interval_against_a_plain_python_recomputation(seed):
    """Per resample (paired rows of point indices): the bracket's smallest MS from lower
    on/random_off and upper off/random_on medians, the largest from the other ends (NaN upper
    ends as +inf); the interval runs from the (1 - c)/2 quantile of the smallest to the
    (1 + c)/2 quantile of the largest, read without interpolation."""
    upper, lower = _bracketed_distances(seed + 10)
    smallest, largest = [], []
    for rows in _resample_rows(seed, 25, _RESAMPLES, at_once=True):
        up = {mode: _median_inf(upper[mode][rows]) for mode in MODES}
        low = {mode: _median_inf(lower[mode][rows]) for mode in MODES}
        smallest.append(_smallest_ms(low["on"], up["off"], up["random_on"], low["random_off"]))
        largest.append(_largest_ms(up["on"], low["off"], low["random_on"], up["random_off"]))
    expected = (_inverted_cdf(smallest, (1 - _CONFIDENCE) / 2), _inverted_cdf(largest, (1 + _CONFIDENCE) / 2))
    assert all(math.isfinite(value) for value in expected)
    # The ends differ from their neighbours, so any other rank or an interpolation would show.
    for values, end in ((smallest, expected[0]), (largest, expected[1])):
        assert sorted(values).count(end) == 1
    low, high = covering_interval(upper, lower, _RESAMPLES, _CONFIDENCE, np.random.default_rng(seed))
    assert (low, high) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_interval_against_a_plain_python_recomputation(seed):
    """Per resample (the same paired rows in every mode): MS from the medians with NaN as +inf,
    undefined MS as +inf; percentile ends (1 -+ c)/2 without interpolation."""
    upper, _ = _bracketed_distances(seed + 20)
    values = []
    for rows in _resample_rows(seed, 25, _RESAMPLES, at_once=False):
        d = {mode: _median_inf(upper[mode][rows]) for mode in MODES}
        ms = (d["on"] / d["off"]) / (d["random_on"] / d["random_off"])
        values.append(ms if all(math.isfinite(v) and v > 0 for v in d.values()) else math.inf)
    expected = (_inverted_cdf(values, (1 - _CONFIDENCE) / 2), _inverted_cdf(values, (1 + _CONFIDENCE) / 2))
    assert all(math.isfinite(value) for value in expected)
    for end in expected:
        assert sorted(values).count(end) == 1
    low, high = bootstrap_interval(upper, _RESAMPLES, _CONFIDENCE, np.random.default_rng(seed))
    assert (low, high) == (pytest.approx(expected[0], rel=1e-12), pytest.approx(expected[1], rel=1e-12))


# --------------------------------------------------------------------------- margins


def _margins_by_loop(logits: torch.Tensor) -> torch.Tensor:
    """d_c = z_c - max_{j != c} z_j, one class at a time."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty_like(flat)
    for row in range(len(flat)):
        values = flat[row].tolist()
        for c, z in enumerate(values):
            out[row, c] = z - max(v for j, v in enumerate(values) if j != c)
    return out.reshape(logits.shape)


def test_class_margins_by_hand():
    """(3, 1, 2): class 0 wins by 3 - 2 = 1, class 1 trails the winner by 1 - 3, class 2 by 2 - 3.
    A tie (2, 2, 0) puts both tied classes on the boundary (0). Two classes: d = (z0 - z1, z1 - z0)."""
    logits = torch.tensor([[3.0, 1.0, 2.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(class_margins(logits), torch.tensor([[1.0, -2.0, -1.0], [0.0, 0.0, -2.0]],
                                                                   dtype=torch.float64), rtol=0, atol=0)
    two = torch.tensor([[1.0, 4.0], [-0.5, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(class_margins(two), torch.tensor([[-3.0, 3.0], [1.5, -1.5]], dtype=torch.float64),
                               rtol=0, atol=0)


def test_class_and_predicted_margins_of_a_batch_of_batches():
    """(..., C) inputs with two leading dims, against the per-class loop; the predicted-label
    margin is the largest class margin (the winner's lead over the runner-up)."""
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = _margins_by_loop(logits)
    torch.testing.assert_close(class_margins(logits), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(predicted_margin(logits), expected.max(dim=-1).values, rtol=0, atol=1e-15)
    assert predicted_margin(logits).shape == (2, 3)


def test_predicted_margin_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [2.0, 2.0, 0.0], [1.0, 4.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(predicted_margin(logits), torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64),
                               rtol=0, atol=0)


# --------------------------------------------------------------------------- data radius


def test_data_radius_is_the_largest_distance_from_the_centroid():
    """Points (1,2,3) three times and (5,2,3): centroid (2,2,3), distances 1, 1, 1, 3."""
    points = np.array([[1.0, 2.0, 3.0], [5.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert data_radius(points) == pytest.approx(3.0, rel=1e-12)
    assert data_radius(points + 100.0) == pytest.approx(3.0, rel=1e-12)
    square = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 2.0], [4.0, 2.0], [2.0, 1.0]])  # centroid (2, 1)
    assert data_radius(square) == pytest.approx(math.sqrt(5.0), rel=1e-12)


# --------------------------------------------------------------------------- tangent fraction


def test_tangent_fraction_of_a_zero_vector_is_nan_and_the_basis_takes_the_vectors_dtype():
    """Shared basis e1 in R^3 (stored in float32): (3, 4, 0) -> 3/5, (0, 0, 5) -> 0, the zero
    vector has no direction (NaN); the result is in the vectors' float64."""
    vectors = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    basis = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float32)
    tau = tangent_fractions(vectors, basis)
    assert tau.dtype == torch.float64
    assert tau[0].item() == 0.6 and math.isnan(tau[1].item()) and tau[2].item() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_tangent_fraction_moves_a_cpu_basis_to_the_vectors_device():
    vectors = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64, device="cuda")
    basis = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)
    tau = tangent_fractions(vectors, basis)
    assert tau.device.type == "cuda"
    assert tau.cpu().tolist() == [0.6, 0.0]


def test_tau_summary_with_fractions_other_than_zero_and_one():
    """tau = (0.6, 0.8) (NaN left out) at k = 2, n = 8: mean 0.7, RMS sqrt((0.36 + 0.64) / 2)
    = sqrt(1/2), baseline sqrt(2/8) = 1/2, ratio sqrt(2); acos 0.6 + acos 0.8 = 90 deg, so the
    mean angle is 45 deg."""
    summary = summarize_tangent_fractions(np.array([0.6, np.nan, 0.8]), dim=2, ambient_dim=8)
    assert summary["n_points"] == 2
    assert summary["mean_tau"] == pytest.approx(0.7, rel=1e-12)
    assert summary["rms_tau"] == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert summary["baseline_rms_tau"] == pytest.approx(0.5, rel=1e-12)
    assert summary["ratio_to_baseline"] == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert summary["mean_angle_deg"] == pytest.approx(45.0, rel=1e-12)


def test_tau_summary_of_float32_fractions_is_computed_in_float64():
    """A float32 model gives float32 tau: the summary still averages in float64 (math.fsum over
    the same 1000 values agrees to 1e-12; float32 averaging is off by about 1e-7)."""
    tau = np.random.default_rng(0).uniform(0.0, 1.0, 1000).astype(np.float32)
    values = [float(v) for v in tau]
    summary = summarize_tangent_fractions(tau, dim=1, ambient_dim=4)
    assert summary["mean_tau"] == pytest.approx(math.fsum(values) / 1000, rel=1e-12)
    assert summary["rms_tau"] == pytest.approx(math.sqrt(math.fsum(v * v for v in values) / 1000), rel=1e-12)
    assert summary["mean_angle_deg"] == pytest.approx(
        math.fsum(math.degrees(math.acos(v)) for v in values) / 1000, rel=1e-12)


def test_tau_rounded_just_above_one_reads_as_zero_degrees():
    """||P_T g|| / ||g|| can round one ulp above 1 when g lies in the tangent space: the angle
    is then 0 deg, not NaN."""
    summary = summarize_tangent_fractions(np.array([np.nextafter(1.0, 2.0), 1.0]), dim=1, ambient_dim=4)
    assert summary["mean_angle_deg"] == 0.0
    assert summary["n_points"] == 2


@pytest.mark.parametrize("tau", [np.array([]), np.array([np.nan, np.inf])])
def test_tau_summary_of_no_usable_points_is_nan_without_a_warning(tau):
    with _NoWarnings():
        summary = summarize_tangent_fractions(tau, dim=1, ambient_dim=4)
    assert summary["n_points"] == 0
    for key in ("mean_tau", "rms_tau", "mean_angle_deg", "ratio_to_baseline"):
        assert math.isnan(summary[key]), key
    assert summary["baseline_rms_tau"] == 0.5
