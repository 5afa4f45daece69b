"""The attack report: minimal adversarial distances per subspace, ratios, manifold specificity.

For the attacked test points and every mode of `measure.attacks.modes` it runs
`GreedyProjectedPGD`, then reports per mode the median and mean L2 norm, success rate and
median steps, the ratios to `free`, the dimension-only prediction for each ratio, and

    MS = (d_on / d_off) / (d_rand_on / d_rand_off)      (medians; DESIGN.md section 4, item 3)

with a bootstrap interval over points. MS ~ 1: the on/off gap is a dimension effect (the
critique); MS >> 1: the manifold is specially robust (dimpled model); MS < 1: the manifold
directions are the weak ones. It also checks `free` against DeepFool and measures how well the
free adversarial direction aligns with the most stretched feature direction v_1.

Points where a mode finds no adversarial example within max_steps * step_size count as
infinitely far in medians (never silently dropped); a median that is itself "not found" is
reported as null, and so is any ratio built from it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from simulator.attacks.pgd import BoundedProjectedPGD, DeepFoolL2, GreedyProjectedPGD
from simulator.attacks.statistics import (
    bootstrap_interval,
    dimension_only_ratio,
    finite_or_none,
    manifold_specificity,
    median_counting_failures,
    random_alignment_baseline,
    specificity_bound,
)
from simulator.geometry.stretch import feature_jacobians
from simulator.progress import counting_bar
from simulator.runs.loading import Run
from simulator.runs.io import atomic_path, write_json
from simulator.seeding import numpy_rng, torch_seed
from simulator.training.loop import resolve_device


def attack_model(model: torch.nn.Module, run: Run, settings: dict, device: torch.device,
                 feature_directions: dict | None = None) -> dict:
    """Run every mode on one model of a synthetic run; return the report dict (per-point
    distances included). `feature_directions`: the scene's named class features at the attacked
    points, if already computed (they are the same for every snapshot)."""
    from simulator.stages.measure import class_feature_directions

    count = settings["n_points"]
    if feature_directions is None:
        feature_directions = class_feature_directions(run, count)
    return attack_arrays(model, run.data.x_test[:count], run.data.tangent_test[:count], run.scene.measure.attacks,
                         settings, run.scene.seed, device, labels=run.data.y_test[:count],
                         feature_directions=feature_directions)


def attack_arrays(model: torch.nn.Module, x, bases, spec, settings: dict, seed: int, device: torch.device,
                  labels=None, feature_directions: dict | None = None) -> dict:
    """`attack_points` for arrays or tensors (any kind of run): moves the model to `device` in
    evaluation mode and the points (N, n), bases (N, n, k) and labels (N,) beside it."""
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(x, dtype=dtype, device=device)
    if isinstance(bases, torch.Tensor) and bases.numel() and not any(bases.stride()):
        # A zero stand-in expanded from one number (no manifold estimate): rebuild it on the
        # device instead of copying, which would materialise N x n x k zeros there.
        bases = torch.zeros((), dtype=dtype, device=device).expand(bases.shape)
    else:
        bases = torch.as_tensor(bases, dtype=dtype, device=device)
    labels = None if labels is None else torch.as_tensor(labels, device=device)
    return attack_points(model, x, bases, spec, settings, seed, labels=labels, feature_directions=feature_directions)


def attack_points(model: torch.nn.Module, x: torch.Tensor, bases: torch.Tensor, spec, settings: dict, seed: int,
                  labels: torch.Tensor | None = None, feature_directions: dict | None = None) -> dict:
    """Every mode of `spec` (a measure.attacks section) at points x (N, n) with tangent bases
    (N, n, k), for any kind of run. With the points' true `labels`, robust accuracy at
    settings["robust_epsilons"]; with named `feature_directions` ({name: (N, n)}), how much of
    each free perturbation goes along each feature."""
    k, n = bases.shape[-1], x.shape[1]
    report: dict = {"modes": {}, "distances": {}}
    free_delta = None
    for mode in spec.modes:
        attack = GreedyProjectedPGD(model, mode=mode, step_size=settings["step_size"], max_steps=spec.max_steps,
                                    refine_steps=spec.refine_steps, loss=spec.loss, dim=k, seed=settings["seed"],
                                    normal_rounds=spec.normal_rounds)
        result = attack(x, tangent_bases=bases)
        distance = result.distance.double().cpu().numpy()
        summary = result.summary()
        summary["median_distance_counting_failures"] = finite_or_none(median_counting_failures(distance))
        summary["subspace_dim"] = {"free": n, "on": k, "random_on": k, "coordinate_on": k}.get(mode, n - k)
        report["modes"][mode] = summary
        report["distances"][mode] = distance
        if mode == "free":
            free_delta = result.delta.detach()
            report["attack_settings"] = repr(attack)
    _add_ratios(report, k, n)
    distances = report["distances"]
    if all(mode in distances for mode in ("on", "off", "random_on", "random_off")):
        report["manifold_specificity"] = manifold_specificity(distances)
        interval = bootstrap_interval(distances, spec.bootstrap, spec.confidence, numpy_rng(seed, "attacks"))
        report["manifold_specificity_interval"] = interval
        report["manifold_specificity_confidence"] = spec.confidence
        if report["manifold_specificity"] is None:
            report["manifold_specificity_bound"] = specificity_bound(distances, spec.max_steps * settings["step_size"])
    if free_delta is not None:
        if spec.check_with_deepfool:
            report["deepfool_check"] = _deepfool_check(model, x, distances["free"])
        if hasattr(model, "features"):
            report["stretch_alignment"] = _stretch_alignment(model, x, free_delta, distances["free"], n)
        if feature_directions:
            report["feature_alignment"] = feature_alignment(free_delta, distances["free"], feature_directions)
        if labels is not None and settings.get("robust_epsilons"):
            report["robust_accuracy"] = robust_accuracy(model, x, labels, distances["free"],
                                                        settings["robust_epsilons"])
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
                    epsilons, pgd_steps: int = 20) -> dict:
    """Accuracy under L2 attacks of each radius, by two methods.

    minimal_distance: correct and the free minimal adversarial distance is above epsilon (a
    "not found" distance counts as above); pgd: correct after a fixed-budget PGD with
    `pgd_steps` steps inside the epsilon ball (an independent attack). Both are upper bounds on
    the true robust accuracy; the smaller one is the better attack.
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
                     "pgd": float(np.mean(correct & survives))})
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
    jacobians = feature_jacobians(model, x[index]).double()
    top_direction = torch.linalg.svd(jacobians, full_matrices=False)[2][:, 0, :]
    direction = free_delta[index].double()
    direction = direction / direction.norm(dim=1, keepdim=True)
    alignment = (direction * top_direction).sum(dim=1).abs().cpu().numpy()
    return {"mean_alignment": float(alignment.mean()), "median_alignment": float(np.median(alignment)),
            "random_baseline": random_alignment_baseline(ambient_dim)}


def attack_settings(spec, seed: int, n_points: int, data_radius: float) -> dict:
    """Resolved attack settings (`spec` a scene's measure.attacks) for any kind of run."""
    return {
        "n_points": n_points,
        "step_size": spec.step_size or 0.01 * data_radius,
        "seed": torch_seed(seed, "attacks") % 2**31,
        "max_steps": spec.max_steps,
        "refine_steps": spec.refine_steps,
        "normal_rounds": spec.normal_rounds,
        "loss": spec.loss,
        "modes": list(spec.modes),
        "bootstrap": spec.bootstrap,
        "confidence": spec.confidence,
        "robust_epsilons": sorted(spec.robust_epsilons or [share * data_radius for share in ROBUST_EPSILON_SHARES]),
    }


ROBUST_EPSILON_SHARES = (0.025, 0.05, 0.1, 0.2)  # default robust-accuracy radii, x the data radius


def resolve_attack_settings(run: Run, data_radius: float) -> dict:
    spec = run.scene.measure.attacks
    settings = attack_settings(spec, run.scene.seed, spec.n_points or run.scene.measure.n_points, data_radius)
    # Always report the radius the model was trained for, and a given train.adversarial.epsilon
    # even when adversarial training is off (so a plain baseline is measured at the same radius).
    trained = (run.metrics.get("training", {}).get("adversarial") or {}).get("epsilon")
    for epsilon in (trained, run.scene.train.adversarial.epsilon):
        if epsilon is not None and spec.robust_epsilons is None:
            settings["robust_epsilons"] = sorted(set(settings["robust_epsilons"]) | {epsilon})
    return settings


def attack_run(run: Run, progress: bool = True) -> dict:
    """Attack the last snapshot (every snapshot when asked); write metrics["attacks"],
    attack_norms.png, attack_distances.npz and the verdict with MS."""
    from simulator.geometry.scale import data_radius

    settings = resolve_attack_settings(run, data_radius(run.manifold().immersion(run.data.u_train)))
    device = resolve_device(run.scene.train.device)
    records = run.snapshots if run.scene.measure.attacks.every_snapshot else run.snapshots[-1:]
    started = time.perf_counter()
    per_snapshot = []
    from simulator.stages.measure import class_feature_directions

    directions = class_feature_directions(run, settings["n_points"])
    with counting_bar(progress and len(records) > 1, len(records), f"attack {run.scene.name}") as advance:
        for record in records:
            report = attack_model(record.model(), run, settings, device, directions)
            report["step"] = record.step
            per_snapshot.append(report)
            advance()
    final = per_snapshot[-1]
    seconds = time.perf_counter() - started
    with atomic_path(run.path / "attack_distances.npz") as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **{mode: d for mode, d in final["distances"].items()})
    stored = [{key: value for key, value in report.items() if key != "distances"} for report in per_snapshot]
    run.metrics["attacks"] = {"settings": settings, "seconds": seconds, "device": str(device),
                              "final": stored[-1], "snapshots": stored}
    _update_verdicts(run, stored)
    run.save_metrics()
    from simulator.render.attack_plots import plot_attack_norms

    plot_attack_norms(run, final["distances"], run.path / "attack_norms.png")
    return run.metrics["attacks"]


def _update_verdicts(run: Run, stored: list[dict]) -> None:
    """Fold MS and stretch alignment into the verdict rows of the attacked snapshots."""
    from simulator.stages.verdict import verdict_rows

    geometry = run.metrics.get("geometry")
    if not geometry:
        return
    by_step = {report["step"]: report for report in stored}
    for summary in geometry["snapshots"]:
        if summary["step"] in by_step:
            summary["verdict"] = verdict_rows(summary, geometry["settings"]["thresholds"], by_step[summary["step"]])
    write_json(run.path / "verdict.json", geometry["snapshots"][-1]["verdict"])


