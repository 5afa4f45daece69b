"""The run directory: everything one `sim run` produced, in files other tools can open.

    <out>/<scene-name>/
        scene.yaml       the resolved scene (every default filled in)
        data.npz         train/test points, labels, chart coordinates, tangent bases
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
import yaml

from simulator.config.loading import scene_from_dict
from simulator.config.real import RealExperiment, real_experiment_from_dict
from simulator.config.resolve import AttackSettings
from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.errors import RunError, SceneError
from simulator.geometry.scale import data_radius
from simulator.models import MLP
from simulator.runs.format import (
    ATTACK_EXTRAS,
    ATTACK_FILE,
    RUN_FORMAT_VERSION,
    check_files,
    read_metrics,
)
from simulator.runs.io import atomic_path, read_arrays, write_json, write_text
from simulator.training.loop import TrainingResult, load_snapshot_model

# --------------------------------------------------------------------------- writing


def write_run(folder: Path, scene: Scene, data: Dataset, result: TrainingResult) -> dict:
    """Write scene, data, snapshots and metrics into `folder` (a staging folder). Returns metrics."""
    folder = Path(folder)
    write_text(folder / "scene.yaml", scene.to_yaml())
    with atomic_path(folder / "data.npz") as temporary:
        data.save(temporary)
    with atomic_path(folder / "snapshots.pt") as temporary:
        torch.save({"steps": [s.step for s in result.snapshots],
                    "state_dicts": [s.state_dict for s in result.snapshots]}, temporary)
    final = result.snapshots[-1]
    metrics = {
        "format_version": RUN_FORMAT_VERSION,
        "kind": "synthetic",
        "scene": scene.name,
        "device": result.device,
        "training": {
            "seconds": result.seconds,
            "steps": scene.train.steps,
            "final": final.scalars(),
            "history": result.history,
            "adversarial": result.adversarial,  # null for plain training
        },
        "snapshots": [s.scalars() for s in result.snapshots],
    }
    write_json(folder / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------- reading


@dataclass
class SnapshotRecord:
    index: int
    step: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    _run: "Run"

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
        return read_arrays(self.path / ATTACK_FILE, exclude=ATTACK_EXTRAS)

    def attack_settings(self) -> AttackSettings:
        """The resolved attack settings the stored attacks ran with."""
        return AttackSettings.from_record(self.metrics["attacks"]["settings"])

    def save_metrics(self) -> None:
        write_json(self.path / "metrics.json", self.metrics)


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
    models.pt; None for a pretrained classifier). simulator.real.rerun rebuilds the models."""

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
    try:
        raw = yaml.safe_load((path / "scene.yaml").read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RunError(f"{path / 'scene.yaml'}: missing or not valid YAML ({error}); rerun `sim run` on the "
                       f"experiment file.") from None
    try:
        experiment = real_experiment_from_dict(raw, source=str(path / "scene.yaml"), default_name=path.name)
    except SceneError as error:
        raise RunError(f"{error} (in a run directory; rerun `sim run` on the original experiment file)") from None
    check_files(path, "real", () if experiment.pretrained else ("models.pt",))
    points = read_arrays(path / "points.npz")
    models = None if experiment.pretrained else torch.load(path / "models.pt", map_location="cpu", weights_only=True)
    return RealRun(path, experiment, metrics, points, models)


def load_run(path: str | Path) -> "Run | RealRun":
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
    check_files(path, "synthetic")
    try:
        scene = scene_from_dict(yaml.safe_load((path / "scene.yaml").read_text()), source=str(path / "scene.yaml"))
    except SceneError as error:
        raise RunError(f"{error} (in a run directory; rerun `sim run` on the original scene)") from None
    data = Dataset.load(path / "data.npz")
    stored = torch.load(path / "snapshots.pt", map_location="cpu", weights_only=True)
    run = Run(path, scene, data, metrics, [], stored["state_dicts"])
    for index, scalars in enumerate(metrics["snapshots"]):
        run.snapshots.append(SnapshotRecord(index, scalars["step"], scalars["loss"], scalars["train_accuracy"],
                                            scalars["test_accuracy"], run))
    if len(run.snapshots) != len(stored["state_dicts"]):
        raise RunError(f"{path}: metrics.json and snapshots.pt disagree on the snapshot count; rerun the scene.")
    return run
