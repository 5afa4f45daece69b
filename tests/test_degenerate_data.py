"""Degenerate data is an error, weak data a warning, never a normal-looking verdict.

Errors (`simulator.data.make_dataset`, SceneError naming the cause and the fix): a class with
fewer than MIN_TRAIN_POINTS_PER_CLASS training points, a class missing from the test set, a
manifold collapsed below float32's resolution, non-finite points. Warnings (verdict rows,
`simulator.stages.verdict`): test accuracy at chance, one class above MAX_MAJORITY_SHARE,
measurements over fewer than MIN_MEASURED_POINTS points. Each check is tried on both sides of
its limit; the shipped scenes pass at full and at tiny settings.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SCENES, SYNTHETIC_SCENES

import cli
from simulator import load_scene, run_scene
from simulator.config.loading import scene_from_dict
from simulator.data import (
    MIN_RELATIVE_SPREAD,
    MIN_TRAIN_POINTS_PER_CLASS,
    check_dataset,
    make_dataset,
)
from simulator.errors import SceneError
from simulator.labels import make_label_rule
from simulator.seeding import numpy_rng
from simulator.stages.verdict import (
    MAX_MAJORITY_SHARE,
    MIN_MEASURED_POINTS,
    WARNING,
    data_warnings,
    point_count_warnings,
    snapshot_verdicts,
    split_warnings,
    verdict_rows,
)

SIZES = {"data.n_train": 200, "data.n_test": 100, "measure.n_points": 20}
SHEET = {"manifold": {"family": "flat", "dim": 2, "ambient_dim": 3, "embedding": "identity"}}


def scene_with(labels: dict, **overrides):
    return scene_from_dict({**SHEET, "labels": labels}, overrides={**SIZES, **overrides})


def refusal(scene) -> str:
    with pytest.raises(SceneError) as error:
        make_dataset(scene)
    message = str(error.value)
    assert "\n" not in message  # one paragraph
    return message


# --------------------------------------------------------------------------- errors: classes


def test_a_half_space_outside_the_chart_box_is_refused_with_the_offset_to_change():
    message = refusal(scene_with({"rule": "half_space", "offset": 1.5}))
    assert "half_space rule gave class 1 only 0 of the 200 training points" in message
    assert "labels.offset 1.5" in message and "between -1 and 1" in message
    make_dataset(scene_with({"rule": "half_space", "offset": 0.9}))  # a thin class, but one: accepted


@pytest.mark.parametrize("labels, overrides, fix", [
    ({"rule": "clusters", "n_clusters": 4, "n_classes": 5}, {}, "lower labels.n_classes to 3"),
    ({"rule": "clusters", "n_clusters": 4, "assignment": "random"}, {"seed": 14}, "use assignment: alternating"),
    ({"rule": "stripes", "n_stripes": 2, "n_classes": 3}, {}, "labels.n_stripes 2 gives only 2 classes"),
    ({"rule": "checkerboard", "cells_per_axis": 2, "n_axes": 1, "n_classes": 3}, {}, "gives only 2 classes"),
])
def test_a_rule_that_cannot_reach_a_class_names_its_setting(labels, overrides, fix):
    assert fix in refusal(scene_with(labels, **overrides))


def test_the_same_rules_with_reachable_classes_pass():
    for labels in ({"rule": "clusters", "n_clusters": 4, "n_classes": 3},
                   {"rule": "clusters", "n_clusters": 4, "assignment": "random"},
                   {"rule": "stripes", "n_stripes": 3, "n_classes": 3},
                   {"rule": "checkerboard", "cells_per_axis": 2, "n_axes": 2, "n_classes": 3}):
        make_dataset(scene_with(labels))


def test_two_training_points_ask_for_more():
    message = refusal(scene_with({"rule": "half_space"}, **{"data.n_train": 2}))
    assert message.startswith("data.n_train: 2 training points cannot give 2 classes") and "raise data.n_train" in message


def _dataset_with_counts(train_counts, test_counts):
    """sheet_two_class's data with its labels replaced: class c repeated train_counts[c] times."""
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides=SIZES)
    data = make_dataset(scene)
    data.y_train = np.repeat(np.arange(len(train_counts)), train_counts)
    data.y_test = np.repeat(np.arange(len(test_counts)), test_counts)
    rule = make_label_rule(scene.labels, scene.manifold.build(), numpy_rng(scene.seed, "labels"))
    return data, scene, rule


def test_class_counts_on_both_sides_of_the_limits():
    below = MIN_TRAIN_POINTS_PER_CLASS - 1
    data, scene, rule = _dataset_with_counts([200 - below, below], [50, 50])
    with pytest.raises(SceneError, match=f"class 1 only {below} of the 200 training points"):
        check_dataset(data, scene, data.x_train, rule)
    data, scene, rule = _dataset_with_counts([200 - MIN_TRAIN_POINTS_PER_CLASS, MIN_TRAIN_POINTS_PER_CLASS], [99, 1])
    check_dataset(data, scene, data.x_train, rule)  # two training points and one test point of class 1: enough
    data, scene, rule = _dataset_with_counts([100, 100], [100, 0])
    with pytest.raises(SceneError, match="class 1 has no point among the 100 test points.*raise data.n_test"):
        check_dataset(data, scene, data.x_train, rule)


# --------------------------------------------------------------------------- errors: geometry


def test_a_collapsed_manifold_is_refused_and_a_small_one_is_not():
    message = refusal(scene_with({"rule": "half_space"}, **{"manifold.extent": 1e-7}))
    assert "below float32's resolution" in message and "manifold.extent = 1e-07" in message
    make_dataset(scene_with({"rule": "half_space"}, **{"manifold.extent": 1e-5}))


def test_spread_is_judged_against_the_distance_from_the_origin():
    data, scene, rule = _dataset_with_counts([100, 100], [50, 50])
    unit = data.x_train / np.abs(data.x_train).max()  # spread about 1
    for offset, spread, refused in ((0.0, 0.5 * MIN_RELATIVE_SPREAD, True), (0.0, 2 * MIN_RELATIVE_SPREAD, False),
                                    (1e3, 0.5e3 * MIN_RELATIVE_SPREAD, True), (1e3, 2e3 * MIN_RELATIVE_SPREAD, False)):
        points = offset + spread * unit
        if refused:
            with pytest.raises(SceneError, match="make the manifold larger"):
                check_dataset(data, scene, points, rule)
        else:
            check_dataset(data, scene, points, rule)
    data.x_test[0, 0] = np.nan
    with pytest.raises(SceneError, match="not finite"):
        check_dataset(data, scene, data.x_train, rule)


@pytest.mark.parametrize("path", SYNTHETIC_SCENES, ids=lambda p: p.stem)
def test_shipped_scenes_pass_at_full_and_tiny_sizes(path, tiny_overrides):
    make_dataset(load_scene(path))
    make_dataset(load_scene(path, overrides=tiny_overrides))


def test_cli_refuses_degenerate_data_before_training(tmp_path):
    result = CliRunner().invoke(cli.main, ["run", str(SCENES / "subspace_highdim.yaml"), "--out", str(tmp_path),
                                           "--quiet", "--set", "labels.offset=5"])
    assert result.exit_code == 2 and "labels.offset 5" in result.output
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


# --------------------------------------------------------------------------- warnings in the verdict


THRESHOLDS = {"clinging_fraction": 0.5, "tangent_ratio": 0.5, "tangent_along": 0.5, "specificity": 2.0,
              "stretch_alignment": 0.7}


def _summary(n_points: int, test_accuracy: float = 0.9) -> dict:
    return {"step": 10, "test_accuracy": test_accuracy,
            "tangent": {"n_points": n_points, "rms_tau": 0.5, "baseline_rms_tau": 0.8, "ratio_to_baseline": 0.6}}


def _labels(train_shares: tuple[int, int], test_shares: tuple[int, int]):
    return SimpleNamespace(n_classes=2, y_train=np.repeat([0, 1], train_shares), y_test=np.repeat([0, 1], test_shares))


def test_few_points_warn_below_the_limit_only():
    few, enough = MIN_MEASURED_POINTS - 1, MIN_MEASURED_POINTS
    [warning] = point_count_warnings(_summary(few))
    assert warning["measurement"] == WARNING and f"tangent fraction over {few} points" in warning["measured"]
    assert "raise measure.n_points" in warning["reading"]
    assert point_count_warnings(_summary(enough)) == []
    attacks = {"modes": {"free": {"n_points": few}, "on": {"n_points": enough}}}
    assert f"attacks over {few} points" in point_count_warnings(_summary(enough), attacks)[0]["measured"]
    assert point_count_warnings(_summary(enough), {"modes": {"free": {"n_points": enough}}}) == []


def test_class_imbalance_warns_above_the_share_only():
    over = int(1000 * MAX_MAJORITY_SHARE) + 10  # 96%
    at = int(1000 * MAX_MAJORITY_SHARE)  # 95%
    [warning] = data_warnings(_labels((over, 1000 - over), (500, 500)), 0.99)
    assert warning["check"] == "class_imbalance" and "class 0 holds 96.0% of the training points" in warning["measured"]
    assert data_warnings(_labels((at, 1000 - at), (500, 500)), 0.99) == []
    assert data_warnings(_labels((500, 500), (1000 - over, over)), 0.99)[0]["measured"].startswith("class 1 holds")


def test_few_training_points_warn_below_the_limit_only():
    few = MIN_MEASURED_POINTS - 1
    [warning] = data_warnings(_labels((few // 2, few - few // 2), (50, 50)), 0.99)
    assert warning["check"] == "few_training_points" and warning["measured"] == f"{few} training points"
    assert data_warnings(_labels((10, MIN_MEASURED_POINTS - 10), (50, 50)), 0.99) == []


def test_chance_accuracy_warns_within_two_standard_errors():
    labels = _labels((500, 500), (50, 50))  # chance 50%, standard error 5% at 100 test points
    [warning] = data_warnings(labels, 0.59)
    assert warning["check"] == "chance_accuracy" and "test accuracy 59.0%, chance 50.0%" in warning["measured"]
    assert data_warnings(labels, 0.61) == []
    assert data_warnings(labels, None) == []  # nothing to judge


def test_warnings_follow_the_measurements_and_tables_show_them_first():
    from rich.console import Console

    from simulator.report.run_report import verdict_html
    from simulator.report.verdict_tables import verdict_markdown, verdict_table

    labels = _labels((500, 500), (50, 50))
    rows = verdict_rows(_summary(5, test_accuracy=0.5), THRESHOLDS, data=labels)
    assert rows[0]["measurement"] == "RMS tau / sqrt(k/n)"  # stored tables keep their order
    warnings, _ = split_warnings(rows)
    assert [w["check"] for w in warnings] == ["few_points", "chance_accuracy"] and rows[-2:] == warnings
    assert snapshot_verdicts([_summary(5, 0.5)], THRESHOLDS, data=labels) == [rows]
    assert [r.get("check") for r in snapshot_verdicts([_summary(5, 0.5)], THRESHOLDS)[0]][-1] == "few_points"

    markdown = verdict_markdown(rows)
    assert markdown.index("**Warning:** test accuracy 50.0%") < markdown.index("| measurement |")
    assert "| warning |" not in markdown
    html = verdict_html(rows)
    assert html.index('class="warning"') < html.index("<table>") and html.count('class="warning"') == 2
    console = Console(width=200, record=True)
    console.print(verdict_table(rows, "verdict"))
    printed = console.export_text()
    assert printed.index("warning: tangent fraction over 5 points") < printed.index("measurement")


@pytest.fixture(scope="module")
def chance_run(tmp_path_factory):
    """A tiny run of random labels (accuracy at chance by construction) measured at 10 points."""
    import torch

    overrides = {**SIZES, "measure.n_points": 10, "train.steps": 30, "snapshots.count": 2, "train.device": "cpu",
                 "model.hidden": [16], "measure.height_resolution": 8, "measure.final_height_resolution": 8,
                 "measure.attacks.enabled": False, "render.first_look": False, "render.three_d": False,
                 "render.animation": False}
    scene = load_scene(SCENES / "sphere_random_labels.yaml", overrides=overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_scene(scene, out_root=tmp_path_factory.mktemp("runs"), progress=False).path
    finally:
        torch.set_num_threads(threads)


def test_a_weak_run_says_so_at_the_top_of_its_verdict(chance_run):
    stored = json.loads((chance_run / "verdict.json").read_text())
    assert stored[0]["measurement"] == "clinging fraction"
    assert "few_points" in [row.get("check") for row in stored]
    markdown = (chance_run / "report.md").read_text()
    verdict = markdown[markdown.index("## Verdict"):]
    table = verdict.index("| measurement |")
    assert -1 < verdict.index("tangent fraction over 10 points") < table
    assert -1 < verdict.index("**Warning:** test accuracy") < table  # from the labels, beside the stored rows
    page = (chance_run / "report.html").read_text()
    assert page.count('<p class="warning">') == 2
