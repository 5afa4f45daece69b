"""Every shipped scene runs end to end (tiny budgets) and its measurements are well-formed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator import load_run, load_scene, run_scene

from conftest import SCENES, SYNTHETIC_SCENES


@pytest.mark.parametrize("scene_file", SYNTHETIC_SCENES, ids=lambda p: p.stem)
def test_scene_runs_and_measures(scene_file, tmp_path, tiny_overrides):
    scene = load_scene(scene_file, overrides=tiny_overrides)
    summary = run_scene(scene, tmp_path, progress=False)
    run = load_run(summary.path)
    geometry = run.metrics["geometry"]
    assert len(geometry["snapshots"]) == len(run.snapshots)
    final = geometry["snapshots"][-1]
    k, n = run.manifold().dim, scene.manifold.ambient_dim
    assert final["tangent"]["baseline_rms_tau"] == pytest.approx(math.sqrt(k / n))
    assert 0 <= final["tangent"]["rms_tau"] <= 1 + 1e-6
    height = final["height"]
    assert 0 <= height["clinging_fraction"] <= 1 and 0 <= height["none_fraction"] <= 1
    with np.load(summary.path / "height_field.npz") as field:
        assert field["weight"].sum() == pytest.approx(1.0)
        finite = np.isfinite(field["h"])
        # Heights are bisected in float32: allow its rounding (~1e-7 relative) at the search limit.
        assert np.all(np.abs(field["h"][finite]) <= field["t_max"] * (1 + 1e-6))
    assert final["verdict"][0]["measurement"] == "clinging fraction"
