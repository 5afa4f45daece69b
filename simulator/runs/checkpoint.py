"""Training checkpoints inside a run's staging folder, so `sim run --resume` can continue a
killed run from its last complete snapshot.

    <staging>/checkpoint/
        snapshot_0000.pt ...   one file per snapshot, written once when it is taken
        state.pt               weights, optimiser state, history, running sums after the last
                               snapshot; written last, so it only ever names complete snapshot files

The folder is removed when training ends (the run's snapshots.pt then holds every snapshot).
Every file is written atomically, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from simulator.config.scene import Scene
from simulator.errors import RunError
from simulator.runs.integrity import scene_digest
from simulator.runs.io import write_torch
from simulator.training.loop import Snapshot, TrainingCheckpoint

CHECKPOINT_FOLDER = "checkpoint"
STATE_FILE = "state.pt"


def scene_fingerprint(scene: Scene) -> str:
    """The whole resolved scene's digest (no section left out): a checkpoint, or a staged run,
    continues only the scene that wrote it."""
    return scene_digest(scene, excluded=())


class CheckpointWriter:
    """`train(on_checkpoint=...)`: writes each new snapshot once, then the state that names it."""

    def __init__(self, staging: Path, scene: Scene):
        self.folder = Path(staging) / CHECKPOINT_FOLDER
        self.fingerprint = scene_fingerprint(scene)
        self.folder.mkdir(exist_ok=True)

    def __call__(self, checkpoint: TrainingCheckpoint) -> None:
        for index, snapshot in enumerate(checkpoint.snapshots):
            file = self.folder / _snapshot_file(index)
            if not file.is_file():
                write_torch(file, {"step": snapshot.step, "loss": snapshot.loss,
                                   "train_accuracy": snapshot.train_accuracy,
                                   "test_accuracy": snapshot.test_accuracy, "state_dict": snapshot.state_dict})
        write_torch(self.folder / STATE_FILE, {
            "scene_digest": self.fingerprint, "step": checkpoint.step, "n_snapshots": len(checkpoint.snapshots),
            "model_state": checkpoint.model_state, "optimizer_state": checkpoint.optimizer_state,
            "history": checkpoint.history, "running_loss": checkpoint.running_loss,
            "running_correct": checkpoint.running_correct, "seconds": checkpoint.seconds,
        })


def read_checkpoint(staging: Path, scene: Scene) -> TrainingCheckpoint | None:
    """The last checkpoint in `staging`, or None when training never reached its first snapshot.
    RunError when it belongs to another scene or cannot be read."""
    folder = Path(staging) / CHECKPOINT_FOLDER
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        if state["scene_digest"] != scene_fingerprint(scene):
            raise RunError(f"{staging}: the interrupted run was of a different scene (the scene file or a --set "
                           f"changed since); run without --resume to start afresh.")
        snapshots = [_read_snapshot(folder / _snapshot_file(index)) for index in range(state["n_snapshots"])]
        _remove_orphan_snapshots(folder, state["n_snapshots"])
        return TrainingCheckpoint(int(state["step"]), state["model_state"], state["optimizer_state"], snapshots,
                                  list(state["history"]), state["running_loss"], state["running_correct"],
                                  float(state["seconds"]))
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001  any damage (truncation, foreign content) makes it unusable
        raise RunError(f"{folder}: the training checkpoint cannot be read ({type(error).__name__}: {error}); "
                       f"run without --resume to start afresh.") from None


def remove_checkpoint(staging: Path) -> None:
    shutil.rmtree(Path(staging) / CHECKPOINT_FOLDER, ignore_errors=True)


def _remove_orphan_snapshots(folder: Path, n_named: int) -> None:
    """A kill between writing a snapshot file and the state that names it leaves that file
    unnamed; training redoes that stretch on resume and must write the snapshot afresh."""
    for file in folder.glob("snapshot_*.pt"):
        if int(file.stem.removeprefix("snapshot_")) >= n_named:
            file.unlink()


def _snapshot_file(index: int) -> str:
    return f"snapshot_{index:04d}.pt"


def _read_snapshot(file: Path) -> Snapshot:
    record = torch.load(file, map_location="cpu", weights_only=True)
    return Snapshot(int(record["step"]), float(record["loss"]), float(record["train_accuracy"]),
                    float(record["test_accuracy"]), record["state_dict"])
