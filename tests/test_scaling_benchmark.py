"""Smoke tests of benchmarks/scaling.py's helpers (the benchmark itself takes minutes)."""

from __future__ import annotations

import importlib.util
import math

from conftest import REPO

SPEC = importlib.util.spec_from_file_location("scaling_benchmark", REPO / "benchmarks" / "scaling.py")
scaling = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(scaling)


def test_growth_exponent_recovers_a_power_law():
    assert math.isclose(scaling.growth_exponent([1, 10, 100], [2, 200, 20000]), 2.0)
    assert scaling.growth_exponent([10], [1.0]) is None


def test_a_configuration_in_both_sweeps_runs_once():
    settings = dict(scaling.DEFAULTS, k_sweep_n=784, animation=False, scene=scaling.BASE_SCENE, overrides={},
                    profile=False, threads=None)
    configs = scaling.build_configs(settings, "cpu")
    shared = [c for c in configs if c["n"] == 784 and c["k"] == 2]
    assert len(shared) == 1 and shared[0]["sweeps"] == ["n", "k"]
    assert len(configs) == len(settings["n_values"]) + len(settings["k_values"]) - 1


def test_the_overrides_make_a_valid_scene():
    from simulator.config.loading import load_scene

    config = {"n": 20, "k": 5, "points": 100, "measured_points": 20, "steps": 10, "snapshots": 3,
              "device": "cpu", "animation": False, "overrides": {"measure.final_height_resolution": 16}}
    scene = load_scene(REPO / scaling.BASE_SCENE, overrides=scaling.scene_overrides(config))
    assert (scene.manifold.ambient_dim, scene.manifold_dim(), scene.measure.n_points) == (20, 5, 20)


def test_stage_meter_records_time_and_memory():
    with scaling.StageMeter("cpu") as meter:
        block = bytearray(8 * 2**20)
    assert meter.record["seconds"] >= 0 and len(block)
    peak = meter.record["peak_rss_mb"]
    assert peak is None or meter.record["peak_increase_mb"] >= 0


def test_the_report_shows_finished_failed_and_skipped_configurations():
    stage = {"seconds": 1.0, "rss_before_mb": 400.0, "peak_rss_mb": 450.0, "peak_increase_mb": 50.0}
    ok = {"config": {"n": 3, "k": 2, "sweeps": ["n"]}, "status": "ok", "imports": {"torch": 1.0},
          "stages": {name: stage for name in scaling.STAGES}, "sizes": {"folder_mb": 5.0, "data_npz_mb": 0.1}}
    failed = {"config": {"n": 20, "k": 2, "sweeps": ["n"]}, "status": "failed", "error": "attacks: boom",
              "stages": {name: stage for name in scaling.STAGES[:4]} | {"attacks": dict(stage, error="boom")}}
    skipped = {"config": {"n": 100, "k": 2, "sweeps": ["n"]}, "status": "skipped", "error": "n=20 timed out",
               "stages": {}}
    table = scaling.sweep_table([ok, failed, skipped], "n", cuda=False)
    assert "| 3 | 2 | ok |" in table and "failed (attacks)" in table and "| skipped |" in table
    assert "450 (+50)" in table and "n=20: failed: attacks: boom" in table
    assert "Largest stage" in scaling.where_the_time_goes([ok, failed, skipped], "n")


def test_the_markdown_names_machine_command_and_sweeps():
    stage = {"seconds": 2.0, "rss_before_mb": 400.0, "peak_rss_mb": 410.0, "peak_increase_mb": 10.0}
    results = [{"config": {"n": n, "k": 2, "sweeps": ["n"]}, "status": "ok", "imports": {"torch": 1.0},
                "scene": {"labels": "random", "hidden": [8]}, "stages": {s: stage for s in scaling.STAGES}}
               for n in (3, 30)]
    report = {"machine": {"cpu": "test cpu", "cores": 2, "torch": "x", "device": "cpu", "python": "3"},
              "settings": dict(scaling.DEFAULTS, scene="s.yaml", animation=False, overrides={}),
              "results": results, "date": "today", "command": "python benchmarks/scaling.py", "load_before": "0",
              "load_after": "0", "wall_seconds": 1.0, "torch_threads": 1}
    text = scaling.markdown_report(report, "Title")
    assert text.startswith("# Title") and "test cpu" in text and "`python benchmarks/scaling.py`" in text
    assert "## n sweep (k = 2)" in text and "## k sweep" not in text and "Where the time goes" in text
