"""The attack report: minimal adversarial distances per subspace, as brackets; ratios; manifold
specificity.

For the attacked test points and every mode of `measure.attacks.modes` it runs
`MinimalDistanceSearch` (the greedy projected PGD walk, a ray search and a boundary walk for
the upper bound, certified linear-relaxation bounds for the lower one; DESIGN.md section 8),
then reports per mode, over all attacked points: the medians and means of both ends of the
brackets, the share found, certified free of a boundary within reach, or unknown, the median
relative bracket width; the ratios to `free` and the dimension-only prediction for each; and

    MS = (d_on / d_off) / (d_rand_on / d_rand_off)      (medians of the upper ends; DESIGN.md 4.3)

with a bootstrap interval over points, the bracket of MS (the smallest and largest MS the
per-point brackets allow) and an interval covering both. MS ~ 1: the on/off gap is a dimension
effect (the critique); MS >> 1: the manifold is specially robust (dimpled model); MS < 1: the
manifold directions are the weak ones. It also checks `free` against DeepFool and measures how
well the free adversarial direction aligns with the most stretched feature direction v_1.

Points where no adversarial example is found within the reach count as infinitely far in
medians (never silently dropped); a median that is itself "not found" is reported as null, and
so is any ratio built from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from simulator.attacks.bounded_pgd import BoundedProjectedPGD
from simulator.attacks.deepfool import DeepFoolL2
from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.minimal_search import MinimalDistanceSearch
from simulator.attacks.operators import Subspace
from simulator.attacks.statistics import (
    bootstrap_interval,
    covering_interval,
    dimension_only_ratio,
    finite_or_none,
    manifold_specificity,
    median_counting_failures,
    random_alignment_baseline,
    specificity_bracket,
)
from simulator.attacks.subspaces import (
    SPECIFICITY_MODES,
    as_subspace,
    subspace_dim,
    tangent_spaces,
)
from simulator.config.resolve import AttackSettings
from simulator.geometry.stretch import feature_jacobians, spectra
from simulator.progress import counting_bar
from simulator.runs.format import LOWER_BOUND_PREFIX
from simulator.runs.loading import Run
from simulator.seeding import numpy_rng
from simulator.training.loop import one_cpu_thread

# The report's per-point arrays: stored in attack_distances.npz, not in metrics.json.
PER_POINT_ARRAYS = ("distances", "lower_bounds", "free_delta")


@dataclass
class AttackRecord:
    """The attack stage's result for one run: a stored report per attacked snapshot, and the
    last snapshot's per-point arrays (stored in attack_distances.npz)."""

    settings: AttackSettings
    seconds: float
    device: str
    snapshots: list[dict]  # per attacked snapshot, what metrics.json stores (no arrays)
    distances: dict[str, np.ndarray]  # mode -> (N,) minimal distance (upper end), NaN = not found
    lower_bounds: dict[str, np.ndarray]  # mode -> (N,) certified lower end of each bracket
    free_delta: np.ndarray | None  # (N, n) free-mode perturbations, NaN rows where none was found
    point_index: np.ndarray  # (N,) the attacked points' rows in the test set

    def as_record(self) -> dict:
        return {"settings": self.settings.as_record(), "seconds": self.seconds, "device": self.device,
                "final": self.snapshots[-1], "snapshots": self.snapshots}

    def arrays(self) -> dict[str, np.ndarray]:
        return stored_arrays(self.distances, self.lower_bounds, self.free_delta, self.point_index)


def stored_arrays(distances: dict, lower_bounds: dict, free_delta: np.ndarray | None,
                  point_index: np.ndarray) -> dict[str, np.ndarray]:
    """attack_distances.npz's arrays: {mode: upper ends, "lower_bound_<mode>": lower ends,
    "free_delta" (when the free mode ran), "point_index"}."""
    arrays = dict(distances, point_index=point_index)
    arrays |= {LOWER_BOUND_PREFIX + mode: lower for mode, lower in lower_bounds.items()}
    if free_delta is not None:
        arrays["free_delta"] = free_delta
    return arrays


def pop_stored_arrays(report: dict, point_index: np.ndarray) -> dict[str, np.ndarray]:
    """Take the per-point arrays out of an `attack_points` report (metrics.json holds none)
    and return them as attack_distances.npz stores them."""
    return stored_arrays(report.pop("distances"), report.pop("lower_bounds"), report.pop("free_delta", None),
                         point_index)


def attack_snapshots(run: Run, settings: AttackSettings, device: torch.device, feature_directions: dict,
                     progress: bool = False) -> AttackRecord:
    """Attack the first `settings.n_points` test points of a synthetic run with the last
    snapshot's model (every snapshot's with `every_snapshot`). `feature_directions`: the scene's
    named class features at those points ({} when its label rule has none)."""
    count = settings.n_points
    x, labels = run.data.x_test[:count], run.data.y_test[:count]
    bases = tangent_spaces(run.manifold(), run.data.u_test[:count])
    records = run.snapshots if settings.every_snapshot else run.snapshots[-1:]
    started = time.perf_counter()
    reports = []
    # One thread, as in training and measurement (see simulator.stages.measure).
    with one_cpu_thread(device), \
            counting_bar(progress and len(records) > 1, len(records), f"attack {run.scene.name}") as advance:
        for record in records:
            report = attack_arrays(record.model(), x, bases, settings, run.scene.seed, device, labels=labels,
                                   feature_directions=feature_directions)
            report["step"] = record.step
            reports.append(report)
            advance()
    final = reports[-1]
    stored = [{key: value for key, value in report.items() if key not in PER_POINT_ARRAYS} for report in reports]
    return AttackRecord(settings, time.perf_counter() - started, str(device), stored, final["distances"],
                        final["lower_bounds"], final.get("free_delta"), np.arange(len(x)))


def attack_arrays(model: torch.nn.Module, x, bases, settings: AttackSettings, seed: int, device: torch.device,
                  labels=None, feature_directions: dict | None = None, dim: int | None = None) -> dict:
    """`attack_points` for arrays or tensors (any kind of run): moves the model to `device` in
    evaluation mode and the points (N, n), tangent spaces (a Subspace or dense bases (N, n, k))
    and labels (N,) beside it. Without a manifold estimate pass `bases=None` and the random
    subspaces' dimension `dim`."""
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(x, dtype=dtype, device=device)
    bases = None if bases is None else as_subspace(
        bases if isinstance(bases, Subspace) else torch.as_tensor(bases, dtype=dtype)).to(device=device, dtype=dtype)
    labels = None if labels is None else torch.as_tensor(labels, device=device)
    return attack_points(model, x, bases, settings, seed, labels=labels, feature_directions=feature_directions,
                         dim=dim)


def attack_points(model: torch.nn.Module, x: torch.Tensor, bases: Subspace | None, settings: AttackSettings,
                  seed: int, labels: torch.Tensor | None = None, feature_directions: dict | None = None,
                  dim: int | None = None) -> dict:
    """Every mode of `settings.modes` at points x (N, n) with their tangent spaces (or None
    and the subspace dimension `dim`, for runs without a manifold estimate: no on/off modes),
    for any kind of run. `seed`: the scene's seed (the bootstrap's stream). With the points' true
    `labels`, robust accuracy at `settings.robust_epsilons`; with named `feature_directions`
    ({name: (N, n)}), how much of each free perturbation goes along each feature.

    Returns the report: per mode a summary, "distances" {mode: (N,) upper ends}, "lower_bounds"
    {mode: (N,)} and "free_delta" (N, n)."""
    n = x.shape[1]
    k = dim if bases is None else bases.dim
    report: dict = {"modes": {}, "distances": {}, "lower_bounds": {}}
    free_delta = None
    for mode in settings.modes:
        attack = GreedyProjectedPGD(model, mode=mode, step_size=settings.step_size, max_steps=settings.max_steps,
                                    refine_steps=settings.refine_steps, loss=settings.loss, dim=k,
                                    seed=settings.seed, normal_rounds=settings.normal_rounds)
        brackets = MinimalDistanceSearch(attack, settings.search, settings.reach)(x, tangent_bases=bases)
        summary = brackets.summary(settings.search.tolerance)
        summary["subspace_dim"] = subspace_dim(mode, k, n)
        report["modes"][mode] = summary
        report["distances"][mode] = brackets.upper
        report["lower_bounds"][mode] = brackets.lower
        if mode == "free":
            free_delta = brackets.delta.detach()
            report["attack_settings"] = repr(attack)
            found = np.isfinite(brackets.upper)[:, None]
            report["free_delta"] = np.where(found, free_delta.double().cpu().numpy(), np.nan)
    _add_ratios(report, k, n)
    distances, lower_bounds = report["distances"], report["lower_bounds"]
    if all(mode in distances for mode in SPECIFICITY_MODES):
        rng = numpy_rng(seed, "attacks")
        report["manifold_specificity"] = manifold_specificity(distances)
        report["manifold_specificity_interval"] = bootstrap_interval(distances, settings.bootstrap,
                                                                     settings.confidence, rng)
        report["manifold_specificity_confidence"] = settings.confidence
        smallest, largest = specificity_bracket(distances, lower_bounds)
        report["manifold_specificity_bracket"] = [smallest, finite_or_none(largest)]
        report["manifold_specificity_covering"] = covering_interval(distances, lower_bounds, settings.bootstrap,
                                                                    settings.confidence, rng)
    if free_delta is not None:
        if settings.check_with_deepfool:
            report["deepfool_check"] = _deepfool_check(model, x, distances["free"])
        if hasattr(model, "features"):
            report["stretch_alignment"] = _stretch_alignment(model, x, free_delta, distances["free"], n)
        if feature_directions:
            report["feature_alignment"] = feature_alignment(free_delta, distances["free"], feature_directions)
        if labels is not None and settings.robust_epsilons:
            report["robust_accuracy"] = robust_accuracy(model, x, labels, distances["free"], lower_bounds["free"],
                                                        settings.robust_epsilons)
    return report


def feature_alignment(delta: torch.Tensor, distance: np.ndarray, directions: dict[str, np.ndarray]) -> dict:
    """Mean |cos| between each found free perturbation and each named feature direction, with
    the value for a random direction beside it (features are unit vectors (N, n))."""
    found = np.isfinite(distance)
    n = delta.shape[1]
    result = {"random_baseline": random_alignment_baseline(n), "features": {}}
    if not found.any():
        return result
    unit = delta.double().cpu().numpy()[found]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for name, direction in directions.items():
        cosine = np.abs(np.einsum("ij,ij->i", unit, np.asarray(direction, dtype=float)[found]))
        result["features"][name] = {"mean_alignment": float(cosine.mean()),
                                    "median_alignment": float(np.median(cosine))}
    return result


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, free_distance: np.ndarray,
                    free_lower: np.ndarray, epsilons, pgd_steps: int = 20) -> dict:
    """Accuracy under L2 attacks of each radius, bracketed.

    minimal_distance: correct and the free minimal adversarial distance (the bracket's upper
    end) is above epsilon (a "not found" distance counts as above); pgd: correct after a
    fixed-budget PGD with `pgd_steps` steps inside the epsilon ball (an independent attack).
    Both are upper bounds on the true robust accuracy; the smaller one is the better attack.
    certified: correct and the certified lower bound is at least epsilon: a lower bound.
    """
    labels = labels.to(x.device).long()
    with torch.no_grad():
        correct = (model(x).argmax(1) == labels).cpu().numpy()
    farther = ~(free_distance <= np.asarray(epsilons)[:, None])  # NaN compares False: "not found" is farther
    rows = []
    for epsilon, beyond in zip(epsilons, farther):
        delta = BoundedProjectedPGD(model, epsilon, steps=pgd_steps)(x, label=labels)
        with torch.no_grad():
            survives = (model(x + delta).argmax(1) == labels).cpu().numpy()
        rows.append({"epsilon": float(epsilon), "minimal_distance": float(np.mean(correct & beyond)),
                     "pgd": float(np.mean(correct & survives)),
                     "certified": float(np.mean(correct & (free_lower >= epsilon)))})
    return {"clean": float(correct.mean()), "n_points": int(len(correct)), "pgd_steps": pgd_steps, "epsilons": rows}


def _add_ratios(report: dict, dim: int, ambient_dim: int) -> None:
    free = report["modes"].get("free", {}).get("median_distance_counting_failures")
    for mode, summary in report["modes"].items():
        own = summary["median_distance_counting_failures"]
        summary["ratio_to_free"] = (own / free) if (own is not None and free) else None
        if mode in ("random_on", "random_off"):
            summary["dimension_only_ratio"] = dimension_only_ratio(dim, ambient_dim, inside=mode == "random_on")


def _deepfool_check(model, x, pgd_free: np.ndarray) -> dict:
    result = DeepFoolL2(model)(x)
    deepfool = result.distance.double().cpu().numpy()
    both = np.isfinite(deepfool) & np.isfinite(pgd_free)
    relative = (pgd_free[both] - deepfool[both]) / deepfool[both]
    return {
        "median_distance": finite_or_none(median_counting_failures(deepfool)),
        "success_rate": float(np.isfinite(deepfool).mean()),
        "median_relative_difference_pgd_vs_deepfool": float(np.median(relative)) if both.any() else None,
        "share_pgd_within_1pct_or_shorter": float(np.mean(relative <= 0.01)) if both.any() else None,
    }


def _stretch_alignment(model, x, free_delta, free_distance, ambient_dim: int) -> dict:
    found = np.isfinite(free_distance)
    if not found.any():
        return {"mean_alignment": None, "random_baseline": random_alignment_baseline(ambient_dim)}
    index = torch.as_tensor(np.flatnonzero(found), device=x.device)
    top_direction = spectra(feature_jacobians(model, x[index]))[1]
    direction = free_delta[index].double()
    direction = direction / direction.norm(dim=1, keepdim=True)
    alignment = (direction * top_direction).sum(dim=1).abs().cpu().numpy()
    return {"mean_alignment": float(alignment.mean()), "median_alignment": float(np.median(alignment)),
            "random_baseline": random_alignment_baseline(ambient_dim)}
