"""`sim run` writes only its own folders: a user's file or folder in the way, or an unusable run
name, is a clean error before any work, and leftovers of killed runs are cleaned up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import cli
from simulator.runs.io import OWNER_FILE, RUN_MARKER, check_run_target, is_run_folder, remove_leftovers

from conftest import SCENES

SCENE = SCENES / "sheet_two_class.yaml"


def _run(tmp_path, *extra, scene=SCENE, out=None):
    arguments = ["run", str(scene), "--out", str(out or tmp_path / "out"), "--quiet",
                 "--set", "train.steps=20", "--set", "data.n_train=100", "--set", "data.n_test=60",
                 "--set", "measure.n_points=20", "--set", "snapshots.count=2", "--set", "measure.height_resolution=8",
                 "--set", "measure.final_height_resolution=8", "--set", "measure.attacks.bootstrap=10",
                 "--set", "render.three_d=false", "--set", "render.animation=false", "--set", "render.report=false",
                 "--set", "render.first_look=false", *extra]
    return CliRunner().invoke(cli.main, arguments)


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_user_folder_in_the_way_is_not_touched(tmp_path):
    user = tmp_path / "out" / "sheet_two_class"
    user.mkdir(parents=True)
    (user / "thesis.tex").write_text("x")
    result = _run(tmp_path)
    assert result.exit_code == 2 and "not written by `sim run`" in result.output, result.output
    assert "Traceback" not in result.output
    assert _tree(tmp_path / "out") == ["sheet_two_class", "sheet_two_class/thesis.tex"]
    assert (user / "thesis.tex").read_text() == "x"


def test_a_file_in_the_way_and_an_output_folder_that_is_a_file_are_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sheet_two_class").write_text("mine")
    result = _run(tmp_path)
    assert result.exit_code == 2 and "a file (not a run folder)" in result.output, result.output
    assert (tmp_path / "out" / "sheet_two_class").read_text() == "mine"
    (tmp_path / "plain").write_text("also mine")
    result = _run(tmp_path, out=tmp_path / "plain")
    assert result.exit_code == 2 and "the output folder is a file" in result.output, result.output
    assert (tmp_path / "plain").read_text() == "also mine"


@pytest.mark.parametrize("name", ["..", ".", "a\0b", "x" * 201])
def test_unusable_run_names_are_refused_before_any_work(tmp_path, name):
    result = _run(tmp_path, "--set", f"name={json.dumps(name)}")
    assert result.exit_code == 2 and "not usable as a folder name" in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1  # one paragraph
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before anything was written


def test_a_scene_file_whose_name_cannot_name_a_folder_is_refused(tmp_path):
    scene = tmp_path / "..yaml"  # its stem, ".", would name the run
    scene.write_text(SCENE.read_text())
    result = _run(tmp_path, scene=scene)
    assert result.exit_code == 2 and "named after the file" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["..yaml"]  # only the scene file: no output folder


def test_leftovers_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    killed = out / ".sheet_two_class.partial-killed"
    killed.mkdir(parents=True)
    (killed / OWNER_FILE).write_text(dead_pid)
    (killed / "data.npz").write_bytes(b"half")
    unowned = out / ".sheet_two_class.old-unowned"
    unowned.mkdir()
    live = out / ".sheet_two_class.partial-live"
    live.mkdir()
    (live / OWNER_FILE).write_text(str(__import__("os").getpid()))  # this process: still running
    other = out / ".other.partial-x"  # another scene's staging folder
    other.mkdir()
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    # exactly the killed run's leftovers went; the live staging folder and another scene's stayed
    assert sorted(p.name for p in out.iterdir()) == [".other.partial-x", ".sheet_two_class.partial-live",
                                                     "sheet_two_class"]
    assert (live / OWNER_FILE).read_text() == str(__import__("os").getpid())
    run = out / "sheet_two_class"
    assert (run / RUN_MARKER).is_file() and not (run / OWNER_FILE).exists() and is_run_folder(run)
    assert remove_leftovers(run) == []


def test_a_run_folder_is_replaced_and_so_is_one_written_before_the_marker(tmp_path):
    out = tmp_path / "out"
    assert _run(tmp_path).exit_code == 0
    run = out / "sheet_two_class"
    check_run_target(run)  # ours: may be replaced
    (run / RUN_MARKER).unlink()  # as written before the marker existed: metrics.json names the run
    assert is_run_folder(run)
    first = json.loads((run / "metrics.json").read_text())
    result = _run(tmp_path, "--set", "seed=1")
    assert result.exit_code == 0, result.output
    second = json.loads((run / "metrics.json").read_text())
    assert second["training"]["history"] != first["training"]["history"]  # the new run replaced it
    assert [p.name for p in out.iterdir()] == ["sheet_two_class"]
