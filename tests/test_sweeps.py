"""Sweep files: expansion and validation, the local and Ray backends, resuming, failures, the
table, and seed-averaged plots.

One 4-run sweep (init scale x seed on sheet_two_class, tiny budgets) runs once on the local
backend for the module; its numbers are checked against each run's own metrics.json and against
the same scene run in this process, and the Ray backend must give the same table.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import cli
from simulator.config.loading import scene_from_dict
from simulator.config.sweep import SweepFile, combinations, load_sweep, run_name
from simulator.errors import SceneError
from simulator.pipeline import run_scene
from simulator.runs.format import read_metrics
from simulator.sweeps.plot import grouped, select_rows
from simulator.sweeps.runner import RUNS_FOLDER, is_finished, run_sweep
from simulator.sweeps.table import MEASUREMENTS, read_sweep_table
from conftest import TINY_OVERRIDES

SCENES = Path(__file__).resolve().parents[1] / "scenes"
HAVE_RAY = importlib.util.find_spec("ray") is not None
HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None


def tiny_settings(tiny_overrides: dict) -> dict:
    return {**tiny_overrides, "render.three_d": False, "render.first_look": False,
            "measure.attacks.modes": ["free", "on", "off", "random_on"], "measure.attacks.n_points": 20}


def write_sweep(folder: Path, tiny_overrides: dict, grid: dict | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_sweep.yaml"
    spec = {"kind": "sweep", "name": "tiny_sweep", "scene": str(SCENES / "sheet_two_class.yaml"),
            "set": tiny_settings(tiny_overrides),
            "grid": grid or {"model.init_scale": [1.0, 0.3], "seed": [0, 1]}, **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The shared tiny sweep: 2 init scales x 2 seeds on the local backend, each init scale's two
    seeds trained as one stacked model (--stack-seeds on; the other sweeps here run unstacked)."""
    folder = tmp_path_factory.mktemp("sweeps")
    path = write_sweep(folder, dict(TINY_OVERRIDES))
    result = CliRunner().invoke(cli.main, ["sweep", str(path), "--out", str(folder / "out"), "--workers", "2",
                                           "--stack-seeds", "on", "--quiet"])
    assert result.exit_code == 0, result.output
    return {"file": path, "folder": folder / "out" / "tiny_sweep", "out": folder / "out", "output": result.output}


# --------------------------------------------------------------------------- expansion and validation


def test_a_grid_expands_to_every_combination_in_a_fixed_order_with_stable_names():
    spec = SweepFile.model_validate({"scene": "x.yaml", "grid": {"manifold.ambient_dim": [3, 10], "seed": [0, 1, 2]},
                                     "list": [{"model.init_scale": 1.0}, {"model.init_scale": 0.1}]})
    runs = combinations(spec)
    assert len(runs) == 2 * 2 * 3
    assert runs[0] == {"model.init_scale": 1.0, "manifold.ambient_dim": 3, "seed": 0}
    assert runs[-1] == {"model.init_scale": 0.1, "manifold.ambient_dim": 10, "seed": 2}
    assert run_name(runs[0]) == "init_scale-1.0__ambient_dim-3__seed-0"
    assert run_name({"model.hidden": [64, 64]}) == "hidden-64-64"
    long = run_name({f"field{i}": "x" * 30 for i in range(8)})
    assert len(long) <= 120 and long == run_name({f"field{i}": "x" * 30 for i in range(8)})


def test_sweep_files_that_cannot_work_are_refused_naming_the_problem(tmp_path, tiny_overrides):
    cases = {
        "the combination model.init_scale = -1": {"grid": {"model.init_scale": [1.0, -1]}},
        "grid.seed: a value repeats": {"grid": {"seed": [0, 0]}},
        "set: seed also varies": {"grid": {"seed": [0, 1]}, "set": {**tiny_settings(tiny_overrides), "seed": 3}},
        "model.init_scale: set both in grid and in list": {"grid": {"model.init_scale": [1.0]},
                                                           "list": [{"model.init_scale": 0.5}]},
        "grid.seed: give at least one value": {"grid": {"seed": []}},
        "unknown_field": {"grid": {"seed": [0]}, "unknown_field": 1},
    }
    for expected, change in cases.items():
        spec = {"kind": "sweep", "scene": str(SCENES / "sheet_two_class.yaml"), "set": tiny_settings(tiny_overrides),
                **change}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(SceneError, match=expected):
            load_sweep(path)
        result = CliRunner().invoke(cli.main, ["sweep", str(path), "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out").exists()  # nothing ran


def test_shipped_sweep_files_validate_and_sim_run_points_to_sim_sweep(tmp_path):
    files = sorted((SCENES / "sweeps").glob("*.yaml"))
    assert [f.name for f in files] == ["dimension.yaml", "optimizer_and_batch_norm.yaml", "training_choices.yaml",
                                      "width_and_length.yaml"]
    result = CliRunner().invoke(cli.main, ["scenes", "validate", *map(str, files)])
    assert result.exit_code == 0, result.output
    assert "sweep dimension_study: 18 runs of sheet_two_class.yaml" in result.output
    assert "sweep training_choices: 24 runs of subspace_highdim.yaml" in result.output
    result = CliRunner().invoke(cli.main, ["run", str(files[0]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "a sweep file (kind: sweep), not a scene; run it with `sim sweep" in result.output


def test_names_and_fields_that_would_collide_are_refused(tmp_path, tiny_overrides):
    path = write_sweep(tmp_path, tiny_overrides)
    with pytest.raises(SceneError, match="--set name: every run is named after its combination"):
        load_sweep(path, {"name": "x"})
    with pytest.raises(SceneError, match="--set seed: the sweep varies this field"):
        load_sweep(path, {"seed": 3})
    for backend, expected in (({"name": "local", "gpus_per_run": 0.5}, "gpus_per_run: only used with name: ray"),
                              ({"name": "ray", "workers": 2}, "workers: only used with name: local")):
        with pytest.raises(SceneError, match=expected):
            load_sweep(write_sweep(tmp_path / backend["name"], tiny_overrides, backend=backend))


def test_command_line_backend_options_that_would_be_ignored_are_refused(tmp_path, tiny_overrides):
    path = write_sweep(tmp_path, tiny_overrides)
    for options, expected in ((["--backend", "ray", "--workers", "2"], "workers: only used with name: local"),
                              (["--address", "auto"], "address: only used with name: ray")):
        result = CliRunner().invoke(cli.main, ["sweep", str(path), "--out", str(tmp_path / "out"), *options])
        assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_table_cells_read_back_as_written(tmp_path):
    from simulator.sweeps.table import write_sweep_table

    rows = [{"run": "a", "model.bias": True, "model.hidden": json.dumps([64, 64]), "mixed": 1, "status": "done",
             "error": "", **dict.fromkeys(MEASUREMENTS, 0.5)},
            {"run": "b", "model.bias": False, "model.hidden": json.dumps([8]), "mixed": "auto", "status": "failed",
             "error": "boom", **dict.fromkeys(MEASUREMENTS)}]
    written = write_sweep_table(tmp_path, rows)
    back = read_sweep_table(tmp_path)
    assert [r["model.bias"] for r in back] == [True, False] and back[0]["model.hidden"] == [64, 64]
    assert back[1]["ms"] is None and back[0]["ms"] == 0.5 and back[1]["mixed"] == "auto"
    if HAVE_PYARROW:
        import pyarrow.parquet as pq

        assert tmp_path / "sweep.parquet" in written
        assert pq.read_table(tmp_path / "sweep.parquet").column("mixed").to_pylist() == ["1", "auto"]


def test_a_real_image_experiment_cannot_be_swept(tmp_path):
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({"kind": "sweep", "scene": str(SCENES / "real_digits.yaml"), "grid": {"seed": [0]}}))
    with pytest.raises(SceneError, match="a sweep varies a synthetic scene"):
        load_sweep(path)


# --------------------------------------------------------------------------- the local backend


def test_local_sweep_tabulates_each_runs_own_numbers(local_sweep):
    rows = read_sweep_table(local_sweep["folder"])
    assert [row["run"] for row in rows] == ["init_scale-1.0__seed-0", "init_scale-1.0__seed-1",
                                            "init_scale-0.3__seed-0", "init_scale-0.3__seed-1"]
    assert all(row["status"] == "done" for row in rows)
    for row in rows:
        metrics = read_metrics(local_sweep["folder"] / RUNS_FOLDER / row["run"])
        assert metrics["training"]["stacked_models"] == 2  # each init scale's two seeds trained together
        assert row["test_accuracy"] == pytest.approx(metrics["training"]["final"]["test_accuracy"], rel=1e-12)
        free = metrics["attacks"]["final"]["modes"]["free"]["median_distance_counting_failures"]
        on = metrics["attacks"]["final"]["modes"]["on"]["median_distance_counting_failures"]
        assert row["d_free"] == pytest.approx(free, rel=1e-12)
        assert row["on_over_free"] == pytest.approx(on / free, rel=1e-12)
        assert row["dimension_only"] == pytest.approx(math.sqrt(row["n"] / row["k"]))
        ms = metrics["attacks"]["final"].get("manifold_specificity")
        assert row["ms"] is None if ms is None else row["ms"] == pytest.approx(ms, rel=1e-12)
    for name in ("sweep.md", "sweep.html", "sweep_model.init_scale.png"):
        assert (local_sweep["folder"] / name).is_file(), name


def test_a_sweep_run_equals_the_same_scene_run_alone(local_sweep, tmp_path, tiny_overrides):
    """The worker's run of one combination (trained stacked with its other seed) against
    `run_scene` in this process with the same thread count: the same training, measurements and
    attacks, number for number."""
    sweep = load_sweep(local_sweep["file"])
    run = sweep.runs[2]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sweep's workers: 2 cores / 2 workers
    try:
        run_scene(scene_from_dict(run.scene.model_dump(mode="json")), out_root=tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    alone = read_metrics(tmp_path / run.name)
    swept = read_metrics(local_sweep["folder"] / RUNS_FOLDER / run.name)
    assert swept["training"]["stacked_models"] == 2 and "stacked_models" not in alone["training"]
    assert alone["training"]["final"] == swept["training"]["final"]
    assert alone["training"]["history"] == swept["training"]["history"]
    assert alone["snapshots"] == swept["snapshots"]
    assert without_seconds(alone["attacks"]["final"]) == without_seconds(swept["attacks"]["final"])
    assert without_seconds(alone["geometry"]["snapshots"]) == without_seconds(swept["geometry"]["snapshots"])


def without_seconds(record):
    """A metrics record with its timings (which differ from run to run) left out."""
    if isinstance(record, dict):
        return {key: without_seconds(value) for key, value in record.items() if "seconds" not in key}
    if isinstance(record, list):
        return [without_seconds(value) for value in record]
    return record


def test_a_rerun_skips_finished_runs_and_an_unfinished_one_is_not_counted(local_sweep, tmp_path):
    copy = tmp_path / "tiny_sweep"
    shutil.copytree(local_sweep["folder"], copy)
    sweep = load_sweep(local_sweep["file"])
    finished = copy / RUNS_FOLDER / sweep.runs[3].name
    staging = copy / RUNS_FOLDER / f".{sweep.runs[3].name}.partial-killed"
    finished.rename(staging)  # as if the sweep had been killed while this run was being written
    (staging / "metrics.json").unlink()
    assert not is_finished(copy / RUNS_FOLDER, sweep.runs[3])
    skipped_only = load_sweep(local_sweep["file"])
    outcome = run_sweep(skipped_only, tmp_path, progress=False)
    assert sorted(outcome.skipped) == sorted(run.name for run in sweep.runs[:3])
    assert outcome.done == [sweep.runs[3].name] and not outcome.failed
    assert (finished / "metrics.json").is_file() and not staging.exists()
    again = run_sweep(load_sweep(local_sweep["file"]), tmp_path, progress=False)
    assert again.done == [] and len(again.skipped) == 4


def test_a_changed_scene_does_not_mix_with_old_runs(local_sweep, tmp_path, tiny_overrides):
    copy = tmp_path / "tiny_sweep"
    shutil.copytree(local_sweep["folder"], copy)
    changed = write_sweep(tmp_path / "changed", tiny_overrides)
    spec = yaml.safe_load(changed.read_text())
    spec["set"]["train.steps"] = 61
    changed.write_text(yaml.safe_dump(spec))
    with pytest.raises(SceneError, match="holds a different scene than the sweep now asks for"):
        run_sweep(load_sweep(changed), tmp_path, progress=False)


def test_a_failing_run_is_recorded_while_the_others_finish(tmp_path, tiny_overrides):
    """SGD at lr 100 diverges (a TrainingError in that run only)."""
    path = write_sweep(tmp_path, tiny_overrides, grid={"train.lr": [0.01, 100.0]},
                       set={**tiny_settings(tiny_overrides), "train.optimizer": "sgd"})
    result = CliRunner().invoke(cli.main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "2",
                                           "--quiet"])
    assert result.exit_code == 1, result.output
    assert "failed lr-100.0" in result.output and "diverged" in result.output
    rows = {row["run"]: row for row in read_sweep_table(tmp_path / "out" / "tiny_sweep")}
    assert rows["lr-0.01"]["status"] == "done" and rows["lr-0.01"]["test_accuracy"] is not None
    assert rows["lr-100.0"]["status"] == "failed" and "diverged" in rows["lr-100.0"]["error"]
    status = json.loads((tmp_path / "out" / "tiny_sweep" / "status.json").read_text())
    assert status["lr-100.0"]["status"] == "failed"
    assert "Failed runs" in (tmp_path / "out" / "tiny_sweep" / "sweep.md").read_text()


def test_one_field_sweep_is_a_sweep_of_one_grid_field(tmp_path, tiny_overrides):
    args = ["sweep", str(SCENES / "sheet_two_class.yaml"), "--param", "model.init_scale", "--values", "1,0.1",
            "--quiet", "--out", str(tmp_path), "--workers", "2"]
    for key, value in tiny_settings(tiny_overrides).items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    rows = read_sweep_table(tmp_path / "sheet_two_class_sweep_init_scale")
    assert [row["model.init_scale"] for row in rows] == [1, 0.1]
    for row in rows:
        run = tmp_path / "sheet_two_class_sweep_init_scale" / RUNS_FOLDER / row["run"]
        assert row["test_accuracy"] == pytest.approx(read_metrics(run)["training"]["final"]["test_accuracy"])


# --------------------------------------------------------------------------- tables and plots


@pytest.mark.skipif(not HAVE_PYARROW, reason="needs pyarrow (the sweeps extra)")
def test_parquet_and_csv_tables_hold_the_same_rows(local_sweep):
    import pyarrow.parquet as pq

    parquet = pq.read_table(local_sweep["folder"] / "sweep.parquet").to_pylist()
    csv_rows = read_sweep_table(local_sweep["folder"])
    assert len(parquet) == len(csv_rows) == 4
    for a, b in zip(parquet, csv_rows):
        for column in ("run", "status", "seed", "n", "k", *MEASUREMENTS):
            if isinstance(a[column], float):
                assert b[column] == pytest.approx(a[column], rel=1e-12), column
            else:
                assert a[column] == b[column] or (a[column] in (None, "") and b[column] is None), column


def test_seed_means_and_standard_errors_equal_the_hand_computation():
    rows = [{"status": "done", "n": 10, "seed": s, "ms": v} for s, v in enumerate([1.0, 2.0, 4.0])] + \
           [{"status": "done", "n": 30, "seed": 0, "ms": 5.0}, {"status": "failed", "n": 30, "seed": 1, "ms": None},
            {"status": "done", "n": 30, "seed": 2, "ms": None}]
    (ten, thirty), = grouped(rows, "n", "ms").values()
    mean = 7 / 3
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)
    assert ten[:4] == (10, pytest.approx(mean), pytest.approx(sd / math.sqrt(3)), 3)
    assert thirty == (30, 5.0, 0.0, 1, 2)  # one value; the failed run and the empty cell left out


def test_list_valued_parameters_group_and_sort_by_their_widths():
    """model.hidden values are lists: they key groups (as tuples) and sort numerically, not as
    text ([128, 128] after [32, 32]); `sim sweep-plot --x model.hidden` once crashed on them."""
    rows = [{"status": "done", "model.hidden": hidden, "ms": value}
            for hidden, value in [([128, 128], 2.0), ([32, 32], 1.0), ([512, 512], 3.0), ([32, 32], 3.0)]]
    (points,) = grouped(rows, "model.hidden", "ms").values()
    assert [(p[0], p[1], p[3]) for p in points] == [((32, 32), 2.0, 2), ((128, 128), 2.0, 1), ((512, 512), 3.0, 1)]


def test_where_keeps_the_matching_runs_and_names_what_matches_none():
    rows = [{"train.optimizer": "sgd", "seed": 0}, {"train.optimizer": "adam", "seed": 0},
            {"train.optimizer": "sgd", "seed": 1}]
    assert select_rows(rows, {"train.optimizer": "sgd"}) == [rows[0], rows[2]]
    with pytest.raises(SceneError, match="no run has train.optimizer = 'rmsprop'"):
        select_rows(rows, {"train.optimizer": "rmsprop"})
    with pytest.raises(SceneError, match="--where model.width: not a column"):
        select_rows(rows, {"model.width": 3})


def test_sweep_plot_cli_draws_and_refuses_unknown_columns(local_sweep, tmp_path):
    out = tmp_path / "plot.png"
    result = CliRunner().invoke(cli.main, ["sweep-plot", str(local_sweep["folder"]), "--x", "model.init_scale",
                                           "--y", "ms", "--y", "random_on_over_free", "--reference", "dimension_only",
                                           "--out", str(out)])
    assert result.exit_code == 0 and out.stat().st_size > 1000, result.output
    result = CliRunner().invoke(cli.main, ["sweep-plot", str(local_sweep["folder"]), "--x", "model.init_scale",
                                           "--y", "nonsense"])
    assert result.exit_code == 2 and "--y nonsense: not a column" in result.output


# --------------------------------------------------------------------------- Ray


@pytest.mark.skipif(not HAVE_RAY, reason="needs Ray (pip install -e '.[ray]')")
def test_ray_backend_gives_the_same_table_as_the_local_one(local_sweep, tmp_path):
    result = CliRunner().invoke(cli.main, ["sweep", str(local_sweep["file"]), "--out", str(tmp_path), "--backend",
                                           "ray", "--quiet"])
    assert result.exit_code == 0, result.output
    ray_rows = {row["run"]: row for row in read_sweep_table(tmp_path / "tiny_sweep")}
    local_rows = {row["run"]: row for row in read_sweep_table(local_sweep["folder"])}
    assert ray_rows.keys() == local_rows.keys()
    for name, row in local_rows.items():
        for column in MEASUREMENTS:
            if column != "seconds":
                assert ray_rows[name][column] == row[column], (name, column)


def test_csv_has_one_column_per_varying_field(local_sweep):
    with open(local_sweep["folder"] / "sweep.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:5] == ["run", "model.init_scale", "seed", "n", "k"]


# --------------------------------------------------------------------------- the published study

GOLDEN_SWEEPS = Path(__file__).resolve().parent / "golden_sweeps.json"
README = Path(__file__).resolve().parents[1] / "README.md"


def rerun_study(name: str, out: Path) -> tuple[dict, dict]:
    """Run scenes/sweeps/<file> again; (its rows by run, the golden values) after checking every
    golden number (exact on a CPU: one torch thread per run)."""
    file = {"dimension_study": "dimension.yaml"}.get(name, f"{name}.yaml")
    result = CliRunner().invoke(cli.main, ["sweep", str(SCENES / "sweeps" / file), "--out", str(out), "--workers", "2",
                                           "--quiet"])
    assert result.exit_code == 0, result.output
    golden = json.loads(GOLDEN_SWEEPS.read_text())[name]
    rows = {row["run"]: row for row in read_sweep_table(out / name)}
    assert rows.keys() == golden.keys()
    moved = [f"{run} {column}: expected {value!r}, measured {rows[run][column]!r}"
             for run, values in golden.items() for column, value in values.items()
             if not (value is None and rows[run][column] is None)
             and (value is None or rows[run][column] is None or not math.isclose(rows[run][column], value, rel_tol=1e-9))]
    assert not moved, "moved (update tests/golden_sweeps.json and the README table together):\n" + "\n".join(moved)
    return rows, golden


def published_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table in the README section under `heading` (cells as text)."""
    section = README.read_text().split(heading)[1].split("\n#### ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[1].startswith("|---"), table[:2]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[2:]]


def seed_mean(runs: list[dict], column: str) -> float | None:
    """The mean over the seeds; None when a seed has no value (a distance not found)."""
    values = [run[column] for run in runs]
    return None if any(value is None for value in values) else sum(values) / len(values)


def distance_cells(runs: list[dict]) -> list[str]:
    """The shared columns of the training studies' tables, as the README prints them."""
    off, ms = seed_mean(runs, "off_over_free"), seed_mean(runs, "ms")
    return [f"{seed_mean(runs, 'test_accuracy'):.3f}", f"{seed_mean(runs, 'clinging_fraction'):.4f}",
            f"{seed_mean(runs, 'd_free'):.3f}", f"{seed_mean(runs, 'd_off_lower'):.2f}",
            "not found" if off is None else f"{off:.1f}", "undefined" if ms is None else f"{ms:.3f}",
            f"{seed_mean(runs, 'normal_energy_share'):.2g}"]


@pytest.mark.slow  # 18 runs: about 75 s on 2 cores
def test_dimension_study_reproduces_the_published_table(tmp_path):
    """The README's dimension-study table is the seed means of the rerun's (golden) values."""
    _, golden = rerun_study("dimension_study", tmp_path)
    published = {int(cells[0]): cells for cells in published_rows("#### The dimension study")}
    assert sorted(published) == [3, 10, 30, 100, 300, 1000]
    columns = {1: ("test_accuracy", 3), 2: ("clinging_fraction", 3), 3: ("rms_tau", 3), 5: ("on_over_free", 2),
               6: ("off_over_free", 2), 7: ("random_on_over_free", 2), 9: ("ms", 3)}
    for n, cells in published.items():
        runs = [values for run, values in golden.items() if run.startswith(f"ambient_dim-{n}__")]
        assert len(runs) == 3
        for index, (column, digits) in columns.items():
            assert cells[index] == f"{sum(r[column] for r in runs) / 3:.{digits}f}", (n, column)
        assert cells[4] == f"{math.sqrt(2 / n):.3f}" and cells[8] == f"{math.sqrt(n / 2):.2f}"


@pytest.mark.slow  # 24 runs: about 100 s on 2 cores
def test_training_choice_study_reproduces_the_published_table(tmp_path):
    """The README's training-choice table is the seed means of the rerun's (golden) values
    ("not found" / "undefined" where a seed has no value)."""
    rows, golden = rerun_study("training_choices", tmp_path)
    published = published_rows("#### The training-choice study")
    assert len(published) == 8
    for cells in published:
        optimizer, init, decay = cells[0], float(cells[1]), float(cells[2])
        runs = [golden[run] for run, row in rows.items() if row["train.optimizer"] == optimizer
                and row["model.init_scale"] == init and row["train.weight_decay"] == decay]
        assert len(runs) == 3, cells
        assert cells[3:] == distance_cells(runs), cells


@pytest.mark.slow  # 18 runs: about 95 s on 2 cores
def test_optimizer_and_batch_norm_study_reproduces_the_published_table(tmp_path):
    """The README's optimizer / batch-norm table is the seed means of the rerun's (golden) values.
    Its SGD and Adam rows without batch norm train exactly as the training-choice study's rows at
    init scale 1 and no weight decay, so those golden values must agree run for run."""
    rows, golden = rerun_study("optimizer_and_batch_norm", tmp_path)
    published = published_rows("#### The optimizer-and-batch-norm study")
    assert len(published) == 6
    for cells in published:
        optimizer, batch_norm = cells[0], {"no": False, "yes": True}[cells[1]]
        runs = [golden[run] for run, row in rows.items()
                if row["train.optimizer"] == optimizer and row["model.batch_norm"] == batch_norm]
        assert len(runs) == 3, cells
        assert cells[2:] == distance_cells(runs), cells
    earlier = json.loads(GOLDEN_SWEEPS.read_text())["training_choices"]
    for optimizer, lr in [("sgd", "0.05"), ("adam", "0.001")]:
        for seed in range(3):
            mine = golden[f"optimizer-{optimizer}__lr-{lr}__batch_size-128__steps-2000__batch_norm-false__seed-{seed}"]
            theirs = earlier[f"optimizer-{optimizer}__lr-{lr}__init_scale-1.0__weight_decay-0.0__seed-{seed}"]
            assert {column: mine[column] for column in theirs} == theirs


@pytest.mark.slow  # 15 runs: about 150 s on 2 cores
def test_width_and_length_study_reproduces_the_published_table(tmp_path):
    """The README's width / training-length table is the seed means of the rerun's (golden) values."""
    rows, golden = rerun_study("width_and_length", tmp_path)
    published = published_rows("#### The width-and-length study")
    assert len(published) == 5
    for cells in published:
        width, steps = int(cells[0]), int(cells[1])
        runs = [golden[run] for run, row in rows.items()
                if row["model.hidden"] == [width, width] and row["train.steps"] == steps]
        assert len(runs) == 3, cells
        assert cells[2:] == distance_cells(runs), cells
