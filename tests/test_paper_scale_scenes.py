"""The paper-scale scenes (n = 784 and 3072) at a tiny budget: they validate, run end to end,
store no dense tangent bases, and measure against the exact tangent spaces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulator import load_run, load_scene, run_scene

from conftest import SCENES

PAPER_SCALE = ["paper_sphere50_784", "cifar_sphere32_3072"]


@pytest.fixture(scope="module", params=PAPER_SCALE)
def tiny_run(request, tmp_path_factory):
    overrides = {"train.steps": 40, "data.n_train": 200, "data.n_test": 60, "measure.n_points": 12,
                 "snapshots.count": 3, "train.device": "cpu", "measure.height_resolution": 6,
                 "measure.final_height_resolution": 8, "measure.attacks.bootstrap": 20,
                 "render.first_look": False, "render.three_d": False, "render.animation": False,
                 "render.report": False, "measure.attacks.search.starts": 1, "measure.attacks.search.walk_rounds": 2}
    scene = load_scene(SCENES / f"{request.param}.yaml", overrides=overrides)
    summary = run_scene(scene, tmp_path_factory.mktemp(request.param), progress=False)
    return scene, load_run(summary.path)


def test_the_scene_runs_and_stores_no_dense_tangent_bases(tiny_run):
    scene, run = tiny_run
    with np.load(run.path / "data.npz") as data:
        assert not any(name.startswith("tangent") for name in data.files)
        assert data["u_test"].shape == (60, scene.manifold.dim)  # what recomputes the bases
    n, k = scene.manifold.ambient_dim, scene.manifold.dim
    # data.npz holds the points (N x n floats) and little else
    assert (run.path / "data.npz").stat().st_size < 1.2 * 260 * (n + k + 1) * 8


def test_the_tangent_baseline_and_the_dimension_of_every_mode_are_exact(tiny_run):
    scene, run = tiny_run
    n, k = scene.manifold.ambient_dim, scene.manifold.dim
    metrics = json.loads((run.path / "metrics.json").read_text())
    tangent = metrics["geometry"]["snapshots"][-1]["tangent"]
    assert tangent["baseline_rms_tau"] == pytest.approx(math.sqrt(k / n), rel=1e-12)
    assert 0 <= tangent["rms_tau"] <= 1
    modes = metrics["attacks"]["final"]["modes"]
    expected = {"free": n, "on": k, "off": n - k, "random_on": k, "random_off": n - k,
                "coordinate_on": k, "coordinate_off": n - k}
    assert {mode: modes[mode]["subspace_dim"] for mode in expected} == expected
    stretch = metrics["geometry"]["snapshots"][-1]["stretch"]
    assert stretch["normal_energy_baseline"] == pytest.approx((n - k) / n, rel=1e-12)
