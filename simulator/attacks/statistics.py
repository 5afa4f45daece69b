"""Statistics of minimal adversarial distances: medians that count failures, manifold
specificity MS with its bootstrap interval, the MS bracket and the interval covering both,
dimension-only predictions.

    MS = (d_on / d_off) / (d_rand_on / d_rand_off)      (medians; DESIGN.md section 4, item 3)

A distance of NaN means "not found within the attack's reach"; medians count it as +inf, so
failures are never silently dropped, and a median that is itself "not found" is None.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.attacks.subspaces import SPECIFICITY_MODES


def median_counting_failures(distance: np.ndarray) -> float:
    """Median where NaN (not found) counts as +inf."""
    return float(np.median(np.where(np.isnan(distance), np.inf, distance))) if len(distance) else math.nan


def finite_or_none(value: float):
    return float(value) if value is not None and np.isfinite(value) else None


def dimension_only_ratio(dim: int, ambient_dim: int, inside: bool) -> float:
    """Median of d_subspace / d_free for a *linear* margin and a random subspace.

    For f = w.x + b, d_sub / d_free = 1 / ||P_B w_hat|| and ||P_B w_hat||^2 ~ Beta(k/2, (n-k)/2)
    for a Haar-random k-dim B (Beta((n-k)/2, k/2) for its complement).
    """
    from scipy.stats import beta

    a, b = (dim / 2, (ambient_dim - dim) / 2) if inside else ((ambient_dim - dim) / 2, dim / 2)
    if a == 0:
        return math.inf
    if b == 0:
        return 1.0
    return float(1 / math.sqrt(beta.median(a, b)))


def random_alignment_baseline(ambient_dim: int) -> float:
    """E |<u, v>| for u uniform on the unit sphere of R^n and a fixed unit v."""
    n = ambient_dim
    return math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)


def manifold_specificity(distances: dict[str, np.ndarray]) -> float | None:
    d = {mode: median_counting_failures(distances[mode]) for mode in SPECIFICITY_MODES}
    # A zero median (points on the boundary itself, e.g. a collapsed model) leaves MS undefined too.
    if not all(np.isfinite(value) and value > 0 for value in d.values()):
        return None
    return finite_or_none((d["on"] / d["off"]) / (d["random_on"] / d["random_off"]))


def specificity_from_medians(on, off, random_on, random_off, lower: bool):
    """(d_on / d_off) / (d_rand_on / d_rand_off) from medians, arrays allowed. With `lower`, the
    arguments are the medians that make MS smallest (lower ends of on and random_off, upper
    ends of off and random_on) and a 0 or an infinite denominator gives 0 (no lower bound);
    otherwise a 0 denominator or an infinite numerator gives +inf (no upper bound)."""
    numerator = np.asarray(on, dtype=float) * np.asarray(random_off, dtype=float)
    denominator = np.asarray(off, dtype=float) * np.asarray(random_on, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    if lower:
        return np.where((numerator == 0) | ~np.isfinite(denominator), 0.0, ratio)
    return np.where((denominator == 0) | ~np.isfinite(numerator), np.inf, ratio)


def specificity_bracket(upper: dict[str, np.ndarray], lower: dict[str, np.ndarray]) -> tuple[float, float]:
    """The smallest and largest MS any distances inside the per-point brackets could give, at
    these points: each point's true distance lies in [lower, upper] (upper NaN: unbounded), and
    a median is monotone in every value. (0, inf) ends mean "no bound on that side"."""
    up = {mode: np.median(np.where(np.isnan(upper[mode]), np.inf, upper[mode])) for mode in SPECIFICITY_MODES}
    low = {mode: np.median(lower[mode]) for mode in SPECIFICITY_MODES}
    smallest = specificity_from_medians(low["on"], up["off"], up["random_on"], low["random_off"], lower=True)
    largest = specificity_from_medians(up["on"], low["off"], low["random_on"], up["random_off"], lower=False)
    return float(smallest), float(largest)


def covering_interval(upper: dict[str, np.ndarray], lower: dict[str, np.ndarray], resamples: int, confidence: float,
                      rng: np.random.Generator) -> tuple[float | None, float | None] | None:
    """An MS interval that covers both the sampling uncertainty and the brackets: points are
    resampled (paired across modes, as in `bootstrap_interval`); each resample gives the
    bracket's smallest and largest MS (`specificity_bracket`); the interval runs from the
    (1 - confidence)/2 quantile of the smallest to the (1 + confidence)/2 quantile of the
    largest. None ends: unbounded on that side (a 0 lower end is kept: a valid, empty bound)."""
    if resamples == 0:
        return None
    n_points = len(upper["on"])
    index = rng.integers(0, n_points, (resamples, n_points))
    ends = {}
    for side, values in (("upper", upper), ("lower", lower)):
        for mode in SPECIFICITY_MODES:
            sample = values[mode][index]
            if side == "upper":
                sample = np.where(np.isnan(sample), np.inf, sample)
            ends[side, mode] = np.median(sample, axis=1)
    smallest = specificity_from_medians(ends["lower", "on"], ends["upper", "off"], ends["upper", "random_on"],
                                        ends["lower", "random_off"], lower=True)
    largest = specificity_from_medians(ends["upper", "on"], ends["lower", "off"], ends["lower", "random_on"],
                                       ends["upper", "random_off"], lower=False)
    low = np.quantile(smallest, (1 - confidence) / 2, method="inverted_cdf")
    high = np.quantile(largest, (1 + confidence) / 2, method="inverted_cdf")
    return float(low), finite_or_none(high)


def bootstrap_interval(distances: dict[str, np.ndarray], resamples: int, confidence: float,
                       rng: np.random.Generator) -> tuple[float, float] | None:
    """Percentile interval of MS over resampled points (paired across modes)."""
    if resamples == 0:
        return None
    n_points = len(distances["on"])
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n_points, n_points)
        value = manifold_specificity({mode: d[index] for mode, d in distances.items()})
        values.append(np.inf if value is None else value)  # "not found" resamples stay in the tail
    # inverted_cdf picks sample values (no interpolation), so infinite resamples stay well-defined
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
    return (finite_or_none(low), finite_or_none(high))
