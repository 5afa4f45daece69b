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

import numpy as np
import torch
import yaml

from simulator.config.loading import scene_from_dict
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


@dataclass
class Run:
    """A loaded run directory: `scene`, `data`, `metrics`, and `snapshots[i].model()`."""

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

    def stored_attack_distances(self) -> dict[str, np.ndarray]:
        """attack_distances.npz: {mode: (N,) distances} of the last attacked snapshot."""
        return read_arrays(self.path / ATTACK_FILE, exclude=ATTACK_EXTRAS)

    def save_metrics(self) -> None:
        write_json(self.path / "metrics.json", self.metrics)


def load_run(path: str | Path) -> Run:
    """Load a run directory written by `sim run` on a scene (any tool can then re-measure it)."""
    path = Path(path)
    metrics = read_metrics(path)
    if metrics.get("kind", "synthetic") != "synthetic":
        raise RunError(
            f"{path}: this is a {metrics['kind']}-image run; load_run reads synthetic runs. Load it with "
            f"simulator.real.rerun.load_real_run; `sim measure`, `sim attack`, `sim render`, `sim report` "
            f"and `sim compare` handle both kinds."
        )
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
