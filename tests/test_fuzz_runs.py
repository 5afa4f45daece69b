"""Fuzzing `sim run` end to end: shipped scenes with randomly drawn (often unreasonable) settings.

Each case must end in exit 0 with a run that loads and whose numbers are finite, or exit 2 with
a one-paragraph message; never a traceback, never a hang (each case has a time limit), and
nothing written outside the output folder. The cases are drawn by hypothesis from a fixed seed,
so every CI run tries the same ones; the counts are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import json
import math
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import cli
from simulator.runs.loading import load_run

REPO = Path(__file__).resolve().parents[1]
SCENES = ["sheet_two_class", "sine_sheet", "sphere_random_labels", "torus", "swiss_roll", "concentric_spheres",
          "chessboard", "stretchy_fur_off", "subspace_highdim"]
N_CASES = 20
CASE_SECONDS = 120  # far above a tiny run's few seconds: only a hang gets near it

# Small budgets, so that the drawn settings (not the budget) decide each case.
TINY = {"train.steps": 40, "data.n_test": 60, "snapshots.count": 3, "train.device": "cpu", "measure.n_points": 12,
        "measure.height_resolution": 8, "measure.final_height_resolution": 8, "measure.attacks.n_points": 4,
        "measure.attacks.bootstrap": 20, "measure.attacks.max_steps": 200, "render.cross_section_resolution": 16,
        "render.three_d": False,
        "render.animation": False}

# Each field with values from sensible to absurd (wrong sign, zero, huge, wrong type).
FIELDS = {
    "seed": st.one_of(st.integers(0, 2**31), st.just(-1)),
    "data.n_train": st.sampled_from([2, 3, 10, 60, 150]),
    "train.lr": st.sampled_from([1e-4, 3e-3, 0.1, 10.0, 1e4, 0.0, -1.0]),
    "train.optimizer": st.sampled_from(["adam", "sgd", "lbfgs"]),
    "train.batch_size": st.sampled_from([1, 16, 128, 10**6, 0]),
    "model.hidden": st.sampled_from([[8], [32, 32], [], [0], [4, 4, 4, 4]]),
    "model.init_scale": st.sampled_from([0.01, 1.0, 30.0, 0.0]),
    "manifold.ambient_dim": st.sampled_from([1, 2, 3, 5, 12]),
    "labels.n_classes": st.sampled_from([1, 2, 3, 5]),
    "measure.enabled": st.booleans(),
}

counts = {"cases": 0, "exit 0": 0, "exit 2": 0}


@contextmanager
def time_limit(seconds: int):
    def alarm(signum, frame):
        raise TimeoutError(f"the case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def finite_numbers(value) -> bool:
    """Every number in a metrics.json tree is finite (null stands for 'not defined', e.g. an
    attack that found nothing, and is allowed)."""
    if isinstance(value, dict):
        return all(finite_numbers(item) for item in value.values())
    if isinstance(value, list):
        return all(finite_numbers(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.fixture(scope="module", autouse=True)
def print_counts():
    yield
    print(f"\nfuzzed sim run: {counts['cases']} cases, {counts['exit 0']} valid runs, {counts['exit 2']} "
          f"refused with a message")


@seed(20261129)
@settings(max_examples=N_CASES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scene=st.sampled_from(SCENES), changes=st.fixed_dictionaries({}, optional=FIELDS))
def test_sim_run_ends_in_a_valid_run_or_a_clean_refusal(scene, changes, tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(work)
    arguments = ["run", str(REPO / "scenes" / f"{scene}.yaml"), "--out", "out", "--quiet"]
    for key, value in {**TINY, **changes}.items():
        arguments += ["--set", f"{key}={json.dumps(value)}"]
    with time_limit(CASE_SECONDS):
        result = CliRunner().invoke(cli.main, arguments)
    counts["cases"] += 1
    described = f"{scene} with {changes}: exit {result.exit_code}\n{result.output[-1500:]}"
    assert result.exit_code in (0, 2), described
    assert "Traceback" not in result.output, described
    assert result.exception is None or isinstance(result.exception, SystemExit), described
    written = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.parent == work or p.parent.name == "out")
    if result.exit_code == 2:
        counts["exit 2"] += 1
        assert "error:" in result.output and result.output.strip().count("\n\n") == 0, described
        assert written in ([], ["out"]), f"a refused run left {written}"  # at most the (empty) output folder
        return
    counts["exit 0"] += 1
    assert len(written) == 2 and written[0] == "out", f"more than the run folder was written: {written}"
    run = load_run(work / written[1])
    assert finite_numbers(json.loads((run.path / "metrics.json").read_text())), described
