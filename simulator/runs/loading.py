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

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from simulator.data import Dataset
from simulator.errors import RunError, SceneError
from simulator.runs.io import atomic_path, write_json, write_text
from simulator.models import MLP
from simulator.config.scene import Scene, scene_from_dict
from simulator.training.loop import TrainingResult, load_snapshot_model

# Bump when the layout or the meaning of a stored field changes; load_run refuses newer ones.
RUN_FORMAT_VERSION = 1


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

    def manifold(self):
        return self.scene.manifold.build()

    def save_metrics(self) -> None:
        write_json(self.path / "metrics.json", self.metrics)


def load_run(path: str | Path) -> Run:
    """Load a run directory written by `sim run` (any tool can then re-measure it)."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory. Create one with `sim run SCENE.yaml` (default renders/<scene-name>/).")
    if (path / "metrics.json").is_file() and '"kind": "real"' in (path / "metrics.json").read_text()[:2000]:
        raise RunError(
            f"{path}: this is a real-image run (kind: real); load_run reads synthetic runs. Load it with "
            f"simulator.real.rerun.load_real_run; `sim measure`, `sim attack`, `sim render`, `sim report` "
            f"and `sim compare` handle both kinds."
        )
    missing = [name for name in ("scene.yaml", "data.npz", "snapshots.pt", "metrics.json") if not (path / name).is_file()]
    if missing:
        raise RunError(f"{path}: not a complete run directory (missing {', '.join(missing)}); rerun `sim run` on its scene.")
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path / 'metrics.json'}: not valid JSON ({error}); rerun `sim run` on its scene.") from None
    version = metrics.get("format_version")
    if not isinstance(version, int) or version > RUN_FORMAT_VERSION or version < 1:
        raise RunError(
            f"{path}: run format version {version!r} is not one this simulator reads (it reads "
            f"1..{RUN_FORMAT_VERSION}); it was written by a newer or unknown version. Upgrade the "
            f"simulator or rerun the scene with this one."
        )
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
