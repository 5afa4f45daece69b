"""Killed runs and `sim run --resume`; byte-for-byte reproducible runs.

Real `sim run` subprocesses are killed (SIGKILL: no clean-up code runs) while they train,
measure, attack and draw. After each kill the older run at the target is untouched and the
staging folder holds exactly what the finished stages stored; `sim run --resume` then ends with
files byte-identical to an uninterrupted run's, apart from timings.json (wall-clock durations,
kept out of every other file for this reason).
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "scenes" / "sheet_two_class.yaml"
NAME = "sheet_two_class"
# Long enough training (several checkpoints, ~1.5 s) to be killed in the middle of; tiny elsewhere.
SETTINGS = {"train.steps": 1000, "data.n_train": 200, "data.n_test": 100, "snapshots.count": 8,
            "train.device": "cpu", "measure.n_points": 20, "measure.height_resolution": 8,
            "measure.final_height_resolution": 8, "measure.attacks.n_points": 6, "measure.attacks.bootstrap": 20,
            "measure.attacks.max_steps": 300, "render.cross_section_resolution": 16, "render.grid_resolution": 12,
            "render.window_size": [120, 90], "render.animation": True}  # one animation frame per snapshot
# The kills before drawing need no 3-D pictures (the costliest part of a tiny run).
WITHOUT_3D = {"render.three_d": False, "render.animation": False}
# Files whose bytes may differ between two runs: the wall-clock durations.
TIMINGS = {"timings.json"}


def sim_run(out: Path, *extra: str, **settings) -> list[str]:
    command = [sys.executable, "-m", "cli", "run", str(SCENE), "--out", str(out), "--quiet", *extra]
    for key, value in {**SETTINGS, **settings}.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    return command


def run_to_end(command: list[str]) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def differing_files(first: Path, second: Path) -> list[str]:
    """Names present in only one folder or with different bytes (timings.json aside)."""
    names = {p.name for p in first.iterdir()} | {p.name for p in second.iterdir()}
    return sorted(name for name in names - TIMINGS
                  if not ((first / name).is_file() and (second / name).is_file()
                          and filecmp.cmp(first / name, second / name, shallow=False)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, with every picture: what a resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run_to_end(sim_run(out))
    return out / NAME


@pytest.fixture(scope="module")
def reference_without_3d(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference_without_3d")
    run_to_end(sim_run(out, **WITHOUT_3D))
    return out / NAME


def test_two_complete_runs_are_byte_identical_apart_from_timings(reference, tmp_path):
    run_to_end(sim_run(tmp_path))
    second = tmp_path / NAME
    assert differing_files(reference, second) == []
    timings = json.loads((second / "timings.json").read_text())
    assert timings["training.seconds"] > 0 and timings["attacks.seconds"] > 0
    assert "seconds" not in (second / "metrics.json").read_text()  # every duration is in timings.json
    provenance = json.loads((second / "metrics.json").read_text())["provenance"]
    assert provenance["packages"]["torch"] and provenance["python"]


def staging_folders(out: Path) -> list[Path]:
    return sorted(out.glob(f".{NAME}.partial-*"))


def kill_during(command: list[str], out: Path, stage: str, timeout: float = 300) -> Path:
    """Start `command`, SIGKILL it as soon as its staging folder says `stage`; the staging folder."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            folders = staging_folders(out)
            if folders and _stage(folders[0]) == stage and (stage != "training" or _has_checkpoint(folders[0])):
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return folders[0]
            if process.poll() is not None:
                pytest.fail(f"the run ended (exit {process.returncode}) before it was seen {stage}: "
                            f"{process.stderr.read()[-1000:]}")
            time.sleep(0.005)
        pytest.fail(f"the run was not seen {stage} within {timeout} s")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _stage(folder: Path) -> str | None:
    try:
        return (folder / ".stage").read_text().strip()
    except OSError:
        return None


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoint" / "state.pt").is_file()


def stored_sections(folder: Path) -> set[str]:
    if not (folder / "metrics.json").is_file():
        return set()
    return set(json.loads((folder / "metrics.json").read_text()))


# What a kill in each stage leaves in the staging folder: the files and metrics.json sections
# of every stage that had finished, and nothing of the stage that was cut short.
@pytest.mark.parametrize("stage", ["training", "measuring", "attacking", "drawing"])
def test_a_killed_run_leaves_the_older_run_alone_and_resumes_to_identical_files(stage, request, tmp_path):
    settings = {} if stage == "drawing" else WITHOUT_3D
    reference = request.getfixturevalue("reference" if stage == "drawing" else "reference_without_3d")
    older = tmp_path / NAME
    shutil.copytree(reference, older)
    (older / "notes.txt").write_text("the older run, which a kill must not touch\n")
    before = {p.name: p.read_bytes() for p in older.iterdir()}

    staging = kill_during(sim_run(tmp_path, **settings), tmp_path, stage)

    assert {p.name: p.read_bytes() for p in older.iterdir()} == before
    sections = stored_sections(staging)
    if stage == "training":
        # no run written yet: a checkpoint part-way through, naming the snapshot files beside it (a
        # kill between a snapshot file and the state that names it leaves one unnamed file, which
        # resuming removes and writes afresh)
        assert sections == set() and not (staging / "snapshots.pt").exists()
        state = torch.load(staging / "checkpoint" / "state.pt", weights_only=True)
        assert 0 < state["step"] < SETTINGS["train.steps"]
        snapshot_files = sorted(p.name for p in (staging / "checkpoint").glob("snapshot_*.pt"))
        named = [f"snapshot_{i:04d}.pt" for i in range(state["n_snapshots"])]
        assert snapshot_files[:len(named)] == named and len(snapshot_files) - len(named) in (0, 1)
        assert torch.load(staging / "checkpoint" / named[-1], weights_only=True)["step"] == state["step"]
    elif stage in ("measuring", "attacking"):
        assert {"training", "snapshots"} <= sections and "geometry" not in sections and "attacks" not in sections
        assert (staging / "snapshots.pt").is_file() and not (staging / "checkpoint").exists()
    else:
        assert {"geometry", "attacks"} <= sections and (staging / "verdict.json").is_file()

    resumed = run_to_end(sim_run(tmp_path, "--resume", **settings))
    assert staging_folders(tmp_path) == []
    assert not (older / "notes.txt").exists()  # the finished run replaced the older one
    assert differing_files(reference, tmp_path / NAME) == [], resumed.stdout[-1000:]


def test_without_resume_a_killed_runs_staging_folder_is_removed_and_the_run_starts_afresh(tmp_path):
    staging = kill_during(sim_run(tmp_path, **WITHOUT_3D), tmp_path, "training")
    run_to_end(sim_run(tmp_path, **{"measure.enabled": False, **WITHOUT_3D}))
    assert not staging.exists() and staging_folders(tmp_path) == []


def test_resume_refuses_a_staging_folder_of_a_changed_scene(tmp_path):
    kill_during(sim_run(tmp_path, **WITHOUT_3D), tmp_path, "training")
    completed = subprocess.run(sim_run(tmp_path, "--resume", **{"train.lr": 0.001, **WITHOUT_3D}), cwd=REPO,
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 2, completed.stderr
    assert "different scene" in completed.stderr and "without --resume" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_snapshot_file_the_state_does_not_name_is_removed_on_resume(tmp_path):
    """A kill between writing snapshot i and the state naming it leaves an orphan file, which the
    resumed training must write afresh (the writer skips files that exist)."""
    from simulator.config.loading import load_scene
    from simulator.runs.checkpoint import CHECKPOINT_FOLDER, CheckpointWriter, read_checkpoint
    from simulator.training.loop import Snapshot, TrainingCheckpoint

    scene = load_scene(SCENE)
    weights = {"w": torch.ones(2)}
    snapshots = [Snapshot(step, 1.0 / (step + 1), 0.5, 0.5, weights) for step in (0, 10)]
    checkpoint = TrainingCheckpoint(10, weights, {}, snapshots, [], torch.tensor(0.0), torch.tensor(0), 1.0)
    CheckpointWriter(tmp_path, scene)(checkpoint)
    orphan = tmp_path / CHECKPOINT_FOLDER / "snapshot_0002.pt"
    shutil.copy(tmp_path / CHECKPOINT_FOLDER / "snapshot_0001.pt", orphan)

    restored = read_checkpoint(tmp_path, scene)
    assert [s.step for s in restored.snapshots] == [0, 10] and restored.step == 10
    assert not orphan.exists()
