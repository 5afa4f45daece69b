"""The `sim` command end to end, with tiny budgets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from simulator import RunError, load_run
from simulator.attacks.subspaces import tangent_spaces

from conftest import SCENES

TINY = ["--set", "train.steps=40", "--set", "data.n_train=120", "--set", "data.n_test=60",
        "--set", "measure.n_points=30", "--set", "snapshots.count=4", "--set", "train.device=cpu",
        "--set", "render.cross_section_resolution=32", "--set", "measure.height_resolution=12",
        "--set", "measure.final_height_resolution=16", "--set", "measure.attacks.bootstrap=50",
        "--set", "render.grid_resolution=16", "--set", "render.window_size=[200, 150]"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def sheet_run(tmp_path_factory):
    """One tiny `sim run sheet_two_class` (3-D render, animation and report included) shared by
    the tests below: (its folder, the command's output). Tests that rewrite a run work on a copy."""
    out = tmp_path_factory.mktemp("sheet")
    result = CliRunner().invoke(cli.main, ["run", str(SCENES / "sheet_two_class.yaml"), "--out", str(out), "--quiet",
                                           *TINY])
    assert result.exit_code == 0, result.output
    return out / "sheet_two_class", result.output


def copy_of(run_dir, tmp_path):
    """A private copy of a shared run folder, for a test that rewrites it."""
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


@pytest.fixture(scope="module")
def real_digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    result = CliRunner().invoke(cli.main, ["run", str(SCENES / "real_digits.yaml"), "--out", str(out), "--quiet",
                                           "--set", "autoencoder.steps=150", "--set", "classifier.steps=150",
                                           "--set", "measure.n_points=20", "--set", "measure.attacks.bootstrap=50",
                                           "--set", "measure.attacks.max_steps=200"])
    assert result.exit_code == 0, result.output
    return out / "real_digits", result.output


def test_run_writes_a_complete_run_directory(sheet_run):
    run_dir, output = sheet_run
    tmp_path = run_dir.parent
    assert "test accuracy" in output and str(run_dir) in output
    run = load_run(run_dir)
    assert run.scene.train.steps == 40  # the override is recorded in the resolved scene
    assert run.metrics["format_version"] == 1
    # The printed accuracy is the one a reader recomputes from the saved final weights.
    with torch.no_grad():
        logits = run.final_model()(torch.tensor(run.data.x_test, dtype=torch.float32))
    accuracy = (logits.argmax(1).numpy() == run.data.y_test).mean()
    assert f"{accuracy:.1%}" in output
    # The first-look figure is a real picture, not an empty canvas.
    import matplotlib.image

    image = matplotlib.image.imread(run_dir / "cross_section.png")
    assert image.shape[0] > 100 and image[..., :3].std() > 0.05
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging leftovers


def test_missing_scene_is_exit_2_without_traceback(runner, tmp_path):
    result = runner.invoke(cli.main, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "scene file not found" in result.output and "Traceback" not in result.output


def test_bad_override_is_exit_2_and_names_the_field(runner, tmp_path):
    result = runner.invoke(cli.main, ["run", str(SCENES / "sheet_two_class.yaml"), "--out", str(tmp_path),
                                      "--set", "train.lr=-1"])
    assert result.exit_code == 2
    assert "train.lr" in result.output and "override" in result.output
    assert list(tmp_path.iterdir()) == []


def test_malformed_set_syntax_is_a_usage_error(runner):
    result = runner.invoke(cli.main, ["run", str(SCENES / "sheet_two_class.yaml"), "--set", "train.steps"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_diverging_run_is_exit_2(runner, tmp_path):
    result = runner.invoke(cli.main, ["run", str(SCENES / "sheet_two_class.yaml"), "--out", str(tmp_path), "--quiet",
                                      *TINY, "--set", "train.optimizer=sgd", "--set", "train.lr=1e12",
                                      "--set", "train.momentum=0.99"])
    assert result.exit_code == 2
    assert "diverged" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_scenes_list_shows_every_shipped_scene(runner):
    result = runner.invoke(cli.main, ["scenes", "list"])
    assert result.exit_code == 0
    for scene in SCENES.glob("*.yaml"):
        assert scene.stem[:15] in result.output


def test_scenes_validate_reports_each_file(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("manifold: {family: flat, dim: 2, ambient_dim: 2}\nlabels: {rule: random}\n")
    result = runner.invoke(cli.main, ["scenes", "validate", str(SCENES / "torus.yaml"), str(bad)])
    assert result.exit_code == 2
    assert "ok:" in result.output and "manifold.ambient_dim: 2 is smaller than the plane's host dimension 3" in result.output
    assert runner.invoke(cli.main, ["scenes", "validate", str(SCENES / "torus.yaml")]).exit_code == 0


def test_scenes_schema_is_json_schema(runner):
    result = runner.invoke(cli.main, ["scenes", "schema"])
    schema = json.loads(result.output)
    assert set(schema["properties"]) >= {"manifold", "labels", "train", "snapshots"}


def test_help_texts(runner):
    for args in (["--help"], ["run", "--help"], ["scenes", "--help"], ["scenes", "list", "--help"]):
        result = runner.invoke(cli.main, args)
        assert result.exit_code == 0 and "Usage:" in result.output


def test_load_run_refuses_unknown_format_versions(sheet_run, tmp_path):
    run_dir = copy_of(sheet_run[0], tmp_path)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["format_version"] = 99
    metrics_file.write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="format version 99"):
        load_run(run_dir)
    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "missing")


def test_run_measures_every_snapshot_and_measure_recomputes(runner, sheet_run, tmp_path):
    run_dir = copy_of(sheet_run[0], tmp_path)
    run = load_run(run_dir)
    geometry = run.metrics["geometry"]
    assert [s["step"] for s in geometry["snapshots"]] == [r.step for r in run.snapshots]
    # the height field runs on every 2nd snapshot plus the last; the cheap ones on all
    assert geometry["snapshots"][-1]["height"]["n_points"] == 16**2
    assert all("tangent" in s and "stretch" in s for s in geometry["snapshots"])
    assert json.loads((run_dir / "verdict.json").read_text())[0]["measurement"] == "clinging fraction"
    import matplotlib.image

    height_map = matplotlib.image.imread(run_dir / "height_map.png")
    assert height_map[..., :3].std() > 0.05  # a drawn heat map, not an empty canvas

    # A second method for tau: plain autograd on the summed margin instead of torch.func.
    model = run.final_model()
    x = torch.tensor(run.data.x_test[:30], dtype=torch.float32, requires_grad=True)
    top2 = model(x).topk(2, dim=1).values
    (gradient,) = torch.autograd.grad((top2[:, 0] - top2[:, 1]).sum(), x)
    bases = tangent_spaces(run.manifold(), run.data.u_test[:30]).basis()  # the exact tangent bases, dense
    tau = torch.einsum("nik,ni->nk", bases, gradient).norm(dim=1) / gradient.norm(dim=1)
    assert geometry["snapshots"][-1]["tangent"]["rms_tau"] == pytest.approx(tau.pow(2).mean().sqrt().item(), rel=1e-4)

    result = runner.invoke(cli.main, ["measure", str(run_dir), "--quiet", "--set", "measure.final_height_resolution=20"])
    assert result.exit_code == 0, result.output
    with np.load(run_dir / "height_field.npz") as field:
        assert field["u"].shape == (400, 2) and field["h"].shape == (400,)
    assert load_run(run_dir).scene.measure.final_height_resolution == 20  # recorded in scene.yaml

    refused = runner.invoke(cli.main, ["measure", str(run_dir), "--set", "train.steps=5"])
    assert refused.exit_code == 2 and "only measure.* settings" in refused.output


def test_attack_command_reruns_attacks_with_new_settings(runner, sheet_run, tmp_path):
    run_dir = copy_of(sheet_run[0], tmp_path)
    first = load_run(run_dir).metrics["attacks"]["final"]
    assert set(first["modes"]) == {"free", "on", "off", "random_on", "random_off", "coordinate_on", "coordinate_off"}
    assert any(row["measurement"] == "manifold specificity MS" and row["measured"] != "attacks not run"
               for row in json.loads((run_dir / "verdict.json").read_text()))
    result = runner.invoke(cli.main, ["attack", str(run_dir), "--quiet", "--set", "measure.attacks.modes=[free, on]"])
    assert result.exit_code == 0, result.output
    report = load_run(run_dir).metrics["attacks"]["final"]
    assert set(report["modes"]) == {"free", "on"} and "manifold_specificity" not in report
    assert "not measured" in result.output
    missing = runner.invoke(cli.main, ["attack", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output


def test_render_and_animate_commands_rerender_without_retraining(runner, sheet_run, tmp_path):
    run_dir = copy_of(sheet_run[0], tmp_path)
    weights_before = (run_dir / "snapshots.pt").read_bytes()
    assert (run_dir / "animation.gif").is_file() and (run_dir / "report.html").is_file()
    result = runner.invoke(cli.main, ["render", str(run_dir), "--set", "render.grid_resolution=20"])
    assert result.exit_code == 0, result.output
    assert load_run(run_dir).scene.render.grid_resolution == 20
    import imageio.v3 as iio

    frames = iio.imread(run_dir / "animation.gif", index=None)
    assert len(frames) == len(load_run(run_dir).snapshots)  # one frame per snapshot
    result = runner.invoke(cli.main, ["animate", str(run_dir), "--quiet", "--set", "render.fps=3"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "snapshots.pt").read_bytes() == weights_before  # nothing retrained
    refused = runner.invoke(cli.main, ["render", str(run_dir), "--set", "train.steps=3"])
    assert refused.exit_code == 2 and "only render.* settings" in refused.output


def test_real_digits_experiment_runs_from_the_cli(real_digits_run):
    """A real-image experiment is a scene file with `kind: real`, run by the same `sim run`."""
    run_dir, output = real_digits_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["kind"] == "real"
    assert set(metrics["attacks"]["final"]["modes"]) >= {"free", "on", "off", "random_on", "random_off"}
    assert "manifold specificity MS" in output


def test_compare_puts_synthetic_and_real_runs_side_by_side(runner, real_digits_run, tmp_path):
    result = runner.invoke(cli.main, ["run", str(SCENES / "subspace_highdim.yaml"), "--out", str(tmp_path), "--quiet",
                                      *TINY, "--set", "render.three_d=false", "--set", "render.animation=false"])
    assert result.exit_code == 0, result.output
    shutil.copytree(real_digits_run[0], tmp_path / "real_digits")
    out = tmp_path / "comparison"
    result = runner.invoke(cli.main, ["compare", str(tmp_path / "subspace_highdim"), str(tmp_path / "real_digits"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    markdown = (out / "comparison.md").read_text()
    for name in ("subspace_highdim", "real_digits"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        ms = metrics["attacks"]["final"]["manifold_specificity"]
        assert f"{ms:.3g}" in markdown  # the table shows each run's own MS
    html = (out / "comparison.html").read_text()
    assert "data:image/png;base64" in html and "https://" not in html
    assert runner.invoke(cli.main, ["compare", str(tmp_path / "nope")]).exit_code == 2
    real = load_run(tmp_path / "real_digits")  # one loader for both kinds of run
    assert real.kind == "real" and real.name == "real_digits" and real.k == 10
    assert real.metrics["attacks"]["final"]["manifold_specificity"] == \
        json.loads((tmp_path / "real_digits" / "metrics.json").read_text())["attacks"]["final"]["manifold_specificity"]
