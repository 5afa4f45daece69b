"""Which snapshots get which measurement (measure.height_every, measure.stretch_every)."""

from __future__ import annotations

import json

from conftest import SCENES

from simulator import load_scene, run_scene


def _geometry(tmp_path, tiny_overrides, **measure):
    overrides = {**tiny_overrides, "snapshots.count": 7, "measure.attacks.enabled": False,
                 "render.first_look": False, "render.three_d": False,
                 **{f"measure.{key}": value for key, value in measure.items()}}
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides=overrides)
    summary = run_scene(scene, tmp_path / "_".join(f"{k}{v}" for k, v in measure.items()), progress=False)
    return json.loads((summary.path / "metrics.json").read_text())["geometry"]["snapshots"]


def test_stretch_and_height_fields_on_every_kth_snapshot_and_the_last_with_unchanged_values(tmp_path, tiny_overrides):
    """stretch_every 3 and height_every 2 over 7 snapshots: the stretch at 0, 3, 6, the height at
    0, 2, 4, 6, the tangent fraction everywhere; a measured snapshot's numbers are the same as with
    every snapshot measured (the schedule only skips work)."""
    sparse = _geometry(tmp_path, tiny_overrides, stretch_every=3, height_every=2)
    dense = _geometry(tmp_path, tiny_overrides, stretch_every=1, height_every=1)
    assert len(sparse) == len(dense) == 7
    assert [i for i, s in enumerate(sparse) if "stretch" in s] == [0, 3, 6]
    assert [i for i, s in enumerate(sparse) if "height" in s] == [0, 2, 4, 6]
    assert all("tangent" in s for s in sparse)
    for index in (0, 3, 6):
        assert sparse[index]["stretch"] == dense[index]["stretch"]
        assert sparse[index]["tangent"] == dense[index]["tangent"]
    assert sparse[6]["height"] == dense[6]["height"]
