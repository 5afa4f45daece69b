"""Statistics of minimal adversarial distances: medians that count failures, manifold
specificity MS with its bootstrap interval and one-sided bound, dimension-only predictions.

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


def specificity_bound(distances: dict[str, np.ndarray], reach: float) -> dict | None:
    """A one-sided bound on MS when only the on- or only the off-manifold median is "not found".

    The walk gives up after a path of length `reach` (max_steps x step_size); counting each
    "not found" distance of the missing mode as `reach` (its median then is the bound's input)
    gives: "on" missing -> MS >= bound (the manifold directions never crossed the boundary
    within the attack's reach: as robust as this attack can tell), "off" missing -> MS <= bound.
    Like every attack distance, it is what the attack found, not a certificate.
    """
    d = {mode: median_counting_failures(distances[mode]) for mode in SPECIFICITY_MODES}
    missing = [mode for mode, value in d.items() if not np.isfinite(value)]
    if missing not in (["on"], ["off"]):
        return None
    (mode,) = missing
    if min(value for key, value in d.items() if key != mode) <= 0:
        return None
    d[mode] = float(np.median(np.where(np.isnan(distances[mode]), reach, distances[mode])))
    value = (d["on"] / d["off"]) / (d["random_on"] / d["random_off"])
    return {"kind": "lower" if mode == "on" else "upper", "value": float(value), "missing_mode": mode,
            "reach": float(reach), "share_not_found": float(np.mean(np.isnan(distances[mode])))}


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
