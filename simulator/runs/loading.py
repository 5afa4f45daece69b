"""The run directory: everything one `sim run` produced, in files other tools can open.

    <out>/<scene-name>/
        scene.yaml       the resolved scene (every default filled in)
        data.npz         train/test points, labels, chart coordinates (tangent spaces follow from them)
        snapshots.pt     {"steps": [...], "state_dicts": [...]} (torch.load(weights_only=True))
        metrics.json     format version, training history, per-snapshot scalars, later measurements
        *.png, report.md figures and the report

A new run is written into a hidden staging folder and renamed into place only when complete,
so a failed or interrupted run never leaves a half-written directory. Later commands
(`sim measure`, `sim render`) add files one at a time, each written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from simulator.config.real import RealExperiment
from simulator.config.resolve import AttackSettings
from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.errors import RunError
from simulator.geometry.scale import data_radius
from simulator.models import MLP, build_evaluation_model
from simulator.runs.checks import (
    RERUN,
    check_attack_arrays,
    check_dataset,
    check_examples,
    check_height_field,
    check_models,
    check_points,
    check_snapshots,
    damaged,
    read_npz,
    read_scene,
    read_torch,
)
from simulator.runs.format import (
    ATTACK_EXTRAS,
    ATTACK_FILE,
    LOWER_BOUND_PREFIX,
    RUN_FORMAT_VERSION,
    check_files,
    read_metrics,
)
from simulator.runs.integrity import (
    check_digest,
    content_digest,
    run_integrity,
    scene_digest,
    scene_excludes,
)
from simulator.runs.io import (
    atomic_path,
    write_metrics,
    write_text,
    write_torch,
)
from simulator.runs.provenance import provenance
from simulator.training.loop import TrainingResult, load_snapshot_model

# --------------------------------------------------------------------------- writing


def write_run(folder: Path, scene: Scene, data: Dataset, result: TrainingResult) -> dict:
    """Write scene, data, snapshots and metrics into `folder` (a staging folder). Returns metrics."""
    folder = Path(folder)
    write_text(folder / "scene.yaml", scene.to_yaml())
    with atomic_path(folder / "data.npz") as temporary:
        data.save(temporary)
    write_torch(folder / "snapshots.pt", {"steps": [s.step for s in result.snapshots],
                                          "state_dicts": [s.state_dict for s in result.snapshots]})
    final = result.snapshots[-1]
    metrics = {
        "format_version": RUN_FORMAT_VERSION,
        "kind": "synthetic",
        "scene": scene.name,
        "device": result.device,
        "provenance": provenance(),
        "training": {
            "seconds": result.seconds,
            "steps": final.step,  # steps trained: train.steps, or fewer with train.stop_at_margin
            "final": final.scalars(),
            "history": result.history,
            "adversarial": result.adversarial,  # null for plain training
            # Trained as one of S stacked models (a sweep's seed-only runs): seconds is 1/S of their time.
            **({"stacked_models": result.stacked} if result.stacked else {}),
        },
        "snapshots": [s.scalars() for s in result.snapshots],
        "integrity": run_integrity(folder, "synthetic"),  # digests of the files just written, checked on load
    }
    write_metrics(folder, metrics)
    return metrics


# --------------------------------------------------------------------------- reading


@dataclass
class SnapshotRecord:
    index: int
    step: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    _run: Run

    def model(self) -> MLP:
        """A fresh evaluation-mode MLP with this snapshot's weights (on the CPU)."""
        return self._run.model_at(self.index)


class _RunFiles:
    """What every kind of run directory offers (`path` and `metrics` set by the subclass)."""

    kind: str
    path: Path
    metrics: dict

    def stored_attack_distances(self) -> dict[str, np.ndarray]:
        """attack_distances.npz: {mode: (N,) distances} of the last attacked snapshot."""
        stored = read_npz(self.path / ATTACK_FILE, "Rerun `sim attack` on the run folder.")
        return {mode: values for mode, values in stored.items()
                if mode not in ATTACK_EXTRAS and not mode.startswith(LOWER_BOUND_PREFIX)}

    def stored_lower_bounds(self) -> dict[str, np.ndarray]:
        """attack_distances.npz: {mode: (N,) certified lower bounds} ({} for runs from before them)."""
        stored = read_npz(self.path / ATTACK_FILE, "Rerun `sim attack` on the run folder.")
        return {name.removeprefix(LOWER_BOUND_PREFIX): values for name, values in stored.items()
                if name.startswith(LOWER_BOUND_PREFIX)}

    def attack_settings(self) -> AttackSettings:
        """The resolved attack settings the stored attacks ran with."""
        try:
            return AttackSettings.from_record(self.metrics["attacks"]["settings"])
        except (KeyError, TypeError, ValueError) as error:  # a settings record edited by hand
            raise RunError(f"{self.path / 'metrics.json'}: attacks.settings is not a complete settings record "
                           f"({type(error).__name__}: {error}); rerun `sim attack` on the run folder.") from None

    def save_metrics(self) -> None:
        write_metrics(self.path, self.metrics)


@dataclass
class Run(_RunFiles):
    """A loaded synthetic run: `scene`, `data`, `metrics`, and `snapshots[i].model()`."""

    kind: ClassVar[str] = "synthetic"
    path: Path
    scene: Scene
    data: Dataset
    metrics: dict
    snapshots: list[SnapshotRecord]
    _state_dicts: list[dict]

    def model_at(self, index: int) -> MLP:
        return load_snapshot_model(self.scene, self.data.ambient_dim, self.data.n_classes, self._state_dicts[index])

    def final_model(self) -> MLP:
        return self.model_at(len(self.snapshots) - 1)

    @property
    def name(self) -> str:
        return self.scene.name

    def manifold(self):
        return self.scene.manifold.build()

    def data_radius(self) -> float:
        """The scale of every default length: the training points' exact manifold positions'
        largest distance from their centroid."""
        return data_radius(self.manifold().immersion(self.data.u_train))



@dataclass
class RealRun(_RunFiles):
    """A loaded real-image run: its `experiment`, `metrics`, the measured images and what was
    computed at them (`points`, points.npz) and the trained models' state dicts (`models`,
    models.pt; None when nothing was trained: a pretrained classifier without an autoencoder). simulator.real.rerun rebuilds the models."""

    kind: ClassVar[str] = "real"
    path: Path
    experiment: RealExperiment
    metrics: dict
    points: dict[str, np.ndarray]
    models: dict | None

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def k(self) -> int:
        """The subspace dimension: the autoencoder's latent dimension, or measure.subspace_dim."""
        real = self.metrics["real"]
        return int(real.get("subspace_dim") or real["latent_dim"])

    def data_radius(self) -> float:
        if "data_radius" in self.points:
            return float(self.points["data_radius"])
        return float(self.metrics["geometry"]["settings"]["data_radius"])


def _load_real_run(path: Path, metrics: dict) -> RealRun:
    """A real-image run, every file checked (`simulator.runs.checks`) and its inputs' digests
    compared with those metrics.json recorded (`simulator.runs.integrity`)."""
    check_files(path, "real")
    experiment = _read_checked_scene(path, metrics, "real")
    check_files(path, "real", ("models.pt",) if experiment.trains_models else ())
    fix, real = RERUN["real"], metrics["real"]
    k = None if experiment.manifold == "none" else experiment.autoencoder.latent_dim
    points = _read_checked(path, metrics, "points.npz", read_npz, fix)
    n_points = check_points(path / "points.npz", points, real, k)
    if "data_radius" not in points and metrics["geometry"]["settings"].get("data_radius") is None:
        raise damaged(path / "points.npz", "no data_radius here nor in metrics.json's geometry settings", fix)
    models = None
    if experiment.trains_models:
        models = _read_checked(path, metrics, "models.pt", read_torch, fix)
        check_models(path / "models.pt", models, k is not None, real["ambient_dim"], k,
                     with_classifier=not experiment.pretrained)
    _check_stage_files(path, metrics, n_points, real["ambient_dim"], None)
    return RealRun(path, experiment, metrics, points, models)


def _read_checked_scene(path: Path, metrics: dict, kind: str):
    """scene.yaml validated, its digest checked, and naming the run metrics.json names."""
    scene = read_scene(path, kind)
    check_digest(path, metrics, "scene.yaml", scene_digest(scene, scene_excludes(metrics)), RERUN[kind])
    if scene.name != metrics["scene"]:
        raise RunError(f"{path / 'scene.yaml'}: it names the run {scene.name!r}, but metrics.json names it "
                       f"{metrics['scene']!r}, so one of them was edited or comes from another run. {RERUN[kind]}")
    return scene


def _read_checked(path: Path, metrics: dict, name: str, read, fix: str):
    """File `name` of the run read with `read` (RunError when unreadable), its digest checked."""
    stored = read(path / name, fix)
    check_digest(path, metrics, name, content_digest(stored), fix)
    return stored


def _check_stage_files(path: Path, metrics: dict, n_points: int, ambient_dim: int, k: int | None) -> None:
    """The arrays later stages wrote and later commands read, when present: attack_distances.npz,
    height_field.npz (k: the manifold's dimension) and examples.npz."""
    real = metrics.get("kind") == "real"
    attack = path / ATTACK_FILE
    if attack.is_file():
        fix = RERUN["real"] if real else "Delete it and rerun `sim attack` on the run folder (or `sim run` on the scene)."
        check_attack_arrays(attack, read_npz(attack, fix), metrics, n_points, ambient_dim, fix)
    height = path / "height_field.npz"
    if not real and height.is_file():
        fix = "Delete it and rerun `sim measure` on the run folder (or `sim run` on the scene)."
        check_height_field(height, read_npz(height, fix), k, fix)
    examples = path / "examples.npz"
    if real and examples.is_file():
        fix = "Delete it and rerun `sim render` on the run folder (or `sim run` on the experiment file)."
        check_examples(examples, read_npz(examples, fix), ambient_dim, fix)


def load_run(path: str | Path) -> Run | RealRun:
    """Load a run directory of either kind: a `Run` (scene, data, every snapshot as a torch
    module) for a synthetic run, a `RealRun` (experiment, measured images, state dicts) for a
    real-image one. Both have `kind`, `name`, `path`, `metrics`, `save_metrics()`,
    `data_radius()` and `stored_attack_distances()`."""
    path = Path(path)
    metrics = read_metrics(path)
    if metrics.get("kind", "synthetic") == "real":
        return _load_real_run(path, metrics)
    return _load_synthetic_run(path, metrics)


def _load_synthetic_run(path: Path, metrics: dict) -> Run:
    """A synthetic run, every file checked against its scene (`simulator.runs.checks`) and its
    inputs' digests compared with those metrics.json recorded (`simulator.runs.integrity`)."""
    check_files(path, "synthetic")
    fix = RERUN["synthetic"]
    scene = _read_checked_scene(path, metrics, "synthetic")
    data = check_dataset(path / "data.npz", _read_checked(path, metrics, "data.npz", read_npz, fix), scene)
    with torch.device("meta"):  # names, shapes and dtypes only: no memory, no draw from torch's random state
        template = build_evaluation_model(scene.model, data.ambient_dim, data.n_classes).state_dict()
    stored = _read_checked(path, metrics, "snapshots.pt", read_torch, fix)
    state_dicts = check_snapshots(path / "snapshots.pt", stored, template, [s["step"] for s in metrics["snapshots"]])
    _check_stage_files(path, metrics, scene.data.n_test, data.ambient_dim, scene.manifold_dim())
    run = Run(path, scene, data, metrics, [], state_dicts)
    for index, scalars in enumerate(metrics["snapshots"]):
        run.snapshots.append(SnapshotRecord(index, scalars["step"], scalars.get("loss"),
                                            scalars.get("train_accuracy"), scalars.get("test_accuracy"), run))
    return run
