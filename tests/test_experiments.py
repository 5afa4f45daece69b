"""The classic experiments of issue 7: stretchy-feature scenes, adversarial training, the
features-not-bugs relabelling, and the bounded attack they share. Numbers are checked against
closed forms or against what each explanation predicts, with budgets small enough for CI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from simulator.stages.attack import robust_accuracy
from simulator.attacks.bounded_pgd import BoundedProjectedPGD
from simulator.attacks.deepfool import DeepFoolL2
from simulator.data import make_dataset
from simulator.formatting import fmt
from simulator.labels import make_label_rule
from simulator.pipeline import run_scene
from simulator.runs.loading import load_run
from simulator.config.loading import load_scene
from simulator.seeding import numpy_rng
from simulator.training.loop import one_cpu_thread, train

from conftest import SCENES
from test_attack_report import check_stored_specificity, stored_brackets

# Enough training for the fur to be learnt, small measurement budgets.
FUR_BUDGET = {"train.steps": 800, "data.n_train": 400, "data.n_test": 200, "snapshots.count": 3,
              "measure.n_points": 80, "measure.height_resolution": 8, "measure.final_height_resolution": 12,
              "measure.attacks.bootstrap": 100, "measure.attacks.check_with_deepfool": False,
              "measure.attacks.modes": ["free", "on", "off", "random_on", "random_off"],
              "measure.attacks.max_steps": 300,  # reach 300 x 0.014 = 4: far beyond the fur (0.03)
              "render.first_look": False, "render.three_d": False, "render.animation": False,
              "render.report": False, "train.device": "cpu"}


# --------------------------------------------------------------------------- stretchy-feature data


@pytest.mark.parametrize("location", ["on", "off"])
def test_shape_and_fur_data_follow_the_spec(location):
    scene = load_scene(SCENES / "stretchy_fur_on.yaml", {"labels.fur_location": location, "data.n_train": 2000})
    manifold = scene.manifold.build()
    data = make_dataset(scene, manifold)
    sign = 2 * data.y_train - 1
    spec = scene.labels
    # Shape: the side along the shape axis agrees with the class with probability 0.9 (5 sd band).
    agreement = np.mean(np.sign(data.u_train[:, spec.shape_axis]) == sign)
    assert abs(agreement - spec.shape_reliability) < 5 * np.sqrt(0.09 / 2000)
    offset = data.x_train - manifold.immersion(data.u_train)
    if location == "on":  # fur = chart coordinate +-fur_size on the fur axis, sign = class
        np.testing.assert_allclose(data.u_train[:, spec.fur_axis], sign * spec.fur_size)
        np.testing.assert_allclose(offset, 0, atol=1e-12)
    else:  # fur = +-fur_size along the unit normal, sign = class
        np.testing.assert_allclose(offset, sign[:, None] * spec.fur_size * manifold.unit_normal(data.u_train),
                                   atol=1e-12)
    rule = make_label_rule(scene.labels, manifold, numpy_rng(scene.seed, "labels"))
    directions = rule.feature_directions(data.u_train[:5])
    for direction in directions.values():
        np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1.0)
    assert np.allclose(np.abs(np.sum(directions["shape"] * directions["fur"], axis=1)), 0.0)


def test_shape_and_fur_rejects_a_fur_axis_on_the_shape_axis():
    from simulator.errors import SceneError

    with pytest.raises(SceneError, match="fur_axis"):
        load_scene(SCENES / "stretchy_fur_on.yaml", {"labels.fur_axis": 0})


@pytest.fixture(scope="module")
def fur_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fur")
    runs = {}
    for location in ("on", "off"):
        scene = load_scene(SCENES / f"stretchy_fur_{location}.yaml", FUR_BUDGET)
        runs[location] = load_run(run_scene(scene, root, progress=False).path)
    return runs


def test_fur_on_the_manifold_gives_ms_below_one_and_free_attacks_follow_the_fur(fur_runs):
    attacks = fur_runs["on"].metrics["attacks"]["final"]
    alignment = attacks["feature_alignment"]["features"]
    assert alignment["fur"]["mean_alignment"] > 0.9 > 0.1 > alignment["shape"]["mean_alignment"]
    assert attacks["manifold_specificity"] is not None and attacks["manifold_specificity"] < 1
    # The fur flips with a perturbation of about its own size (classes sit at +-fur_size).
    fur_size = fur_runs["on"].scene.labels.fur_size
    assert 0.5 * fur_size < attacks["modes"]["free"]["median_distance_counting_failures"] < 2 * fur_size
    # The stretch measurement says the same: the most stretched input direction v_1 is the fur.
    stretch = fur_runs["on"].metrics["geometry"]["snapshots"][-1]["stretch"]["top_direction_feature_alignment"]
    assert stretch["fur"] > 0.9 > 0.1 > stretch["shape"]


def test_fur_off_the_manifold_gives_ms_above_one(fur_runs):
    attacks = fur_runs["off"].metrics["attacks"]["final"]
    assert attacks["feature_alignment"]["features"]["fur"]["mean_alignment"] > 0.9
    # The bracket's lower end is certified: MS is above 1 whatever the search missed.
    assert attacks["manifold_specificity_bracket"][0] > 1


def _correct(model, x, y: np.ndarray) -> np.ndarray:
    """Whether the stored model classifies each point (an array or a float32 tensor) right, (N,) bool."""
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy() == y


def _check_robust_accuracy(run, report: dict) -> None:
    """A run's stored robust accuracies against a recomputation from attack_distances.npz and the
    stored model: minimal-distance = correct and the free upper end beyond eps ("not found"
    counts as beyond), certified = correct and the certified lower end at least eps; PGD-20
    again on the stored model, and the certified share (a lower bound) below both upper bounds."""
    with one_cpu_thread(torch.device("cpu")):  # as the attack stage ran; many threads crawl on a busy machine
        _check_robust_accuracy_rows(run, report)


def _check_robust_accuracy_rows(run, report: dict) -> None:
    upper, lower = stored_brackets(run.path)
    count = len(upper["free"])
    assert count == run.metrics["attacks"]["settings"]["n_points"] == report["n_points"]
    x, y = run.data.x_test[:count], run.data.y_test[:count]
    model = run.final_model()
    correct = _correct(model, x, y)
    assert report["clean"] == np.mean(correct)
    assert [row["epsilon"] for row in report["epsilons"]] == run.metrics["attacks"]["settings"]["robust_epsilons"]
    for row in report["epsilons"]:
        epsilon = row["epsilon"]
        assert row["minimal_distance"] == np.mean(correct & (upper["free"] > epsilon))
        assert row["certified"] == np.mean(correct & (lower["free"] >= epsilon))
        points = torch.as_tensor(x, dtype=torch.float32)
        delta = BoundedProjectedPGD(model, epsilon, steps=report["pgd_steps"])(points, label=torch.as_tensor(y))
        assert np.all(np.linalg.norm(delta.numpy(), axis=1) <= epsilon * (1 + 1e-5))
        assert row["pgd"] == np.mean(correct & _correct(model, points + delta, y))
        assert row["certified"] <= min(row["minimal_distance"], row["pgd"])


@pytest.mark.parametrize("location", ["on", "off"])
def test_fur_runs_stored_figures_match_a_recomputation(fur_runs, location):
    """Every figure the fur tests read, recomputed from the run folder by another route: the flat
    sheet is z = 0 with the identity embedding, so the tangent space is span(e_0, e_1), the shape
    feature is e_0 and the fur e_1 (on) or the normal e_2 (off), all in closed form."""
    run = fur_runs[location]
    model = run.final_model()
    # Accuracy: the stored final model on the stored test set.
    correct = _correct(model, run.data.x_test, run.data.y_test)
    assert round(run.metrics["training"]["final"]["test_accuracy"] * len(correct)) == correct.sum()
    attacks = run.metrics["attacks"]["final"]
    check_stored_specificity(attacks, run.path, run.scene.seed, run.metrics["attacks"]["settings"]["bootstrap"])
    _check_robust_accuracy(run, attacks["robust_accuracy"])
    # Feature alignment: mean |cos| of each found free perturbation with the closed-form feature axes.
    fur_axis = 1 if location == "on" else 2
    with np.load(run.path / "attack_distances.npz") as stored:
        delta, found = stored["free_delta"], np.isfinite(stored["free"])
    unit = delta[found] / np.linalg.norm(delta[found], axis=1, keepdims=True)
    features = attacks["feature_alignment"]["features"]
    assert features["shape"]["mean_alignment"] == pytest.approx(np.abs(unit[:, 0]).mean(), rel=1e-9)
    assert features["fur"]["mean_alignment"] == pytest.approx(np.abs(unit[:, fur_axis]).mean(), rel=1e-9)
    # Tangent fraction of the margin gradient (float64 autograd, tangent space span(e_0, e_1)).
    geometry = run.metrics["geometry"]["snapshots"][-1]
    x = torch.as_tensor(run.data.x_test[:run.scene.measure.n_points], dtype=torch.float64).requires_grad_(True)
    top2 = model.double()(x).topk(2, dim=1).values
    (gradient,) = torch.autograd.grad((top2[:, 0] - top2[:, 1]).sum(), x)
    gradient = gradient.numpy()
    tau = np.linalg.norm(gradient[:, :2], axis=1) / np.linalg.norm(gradient, axis=1)
    assert geometry["tangent"]["rms_tau"] == pytest.approx(np.sqrt(np.mean(tau**2)), rel=1e-4)
    assert geometry["tangent"]["mean_tau"] == pytest.approx(tau.mean(), rel=1e-4)
    assert geometry["tangent"]["baseline_rms_tau"] == pytest.approx(np.sqrt(2 / 3), rel=1e-12)
    # The most stretched input direction v_1: central differences of the features (float64; the
    # network is piecewise linear, so exact unless a ReLU switches within 1e-7) and numpy's SVD
    # (the stage uses forward-mode autodiff and Gram eigenvalues).
    step, points = 1e-7, x.detach()
    with torch.no_grad():
        columns = [(model.features(points + step * e) - model.features(points - step * e)) / (2 * step)
                   for e in torch.eye(3, dtype=torch.float64)]
    top = np.linalg.svd(torch.stack(columns, dim=-1).numpy())[2][:, 0]  # (N, 3): v_1 of each J (N, m, 3)
    alignment = geometry["stretch"]["top_direction_feature_alignment"]
    assert alignment["shape"] == pytest.approx(np.abs(top[:, 0]).mean(), abs=1e-4)
    assert alignment["fur"] == pytest.approx(np.abs(top[:, fur_axis]).mean(), abs=1e-4)
    # Clinging fraction and median |h|: area-weighted, from height_field.npz ("none" = infinitely far).
    height = geometry["height"]
    with np.load(run.path / "height_field.npz") as field:
        magnitude = np.where(np.isnan(field["h"]), np.inf, np.abs(field["h"]))
        weight = field["weight"]
    assert weight.sum() == pytest.approx(1.0)
    assert height["clinging_fraction"] == pytest.approx(weight[magnitude < height["clinging_epsilon"]].sum(), abs=1e-12)
    order = np.argsort(magnitude)
    cumulative = np.cumsum(weight[order] / weight.sum())
    half = magnitude[order][np.argmax(cumulative >= cumulative[-1] / 2)]  # the first past half the area
    if np.isfinite(half):
        assert height["median_abs_h"] == pytest.approx(half, rel=1e-12)
    else:
        assert height["median_abs_h"] is None


# --------------------------------------------------------------------------- the bounded attack


def _linear_model(weight, bias=0.0):
    model = torch.nn.Linear(len(weight), 2)
    with torch.no_grad():  # logits (-f/2, f/2) with f = w.x + b: class 1 where f > 0
        model.weight.copy_(torch.stack([-torch.tensor(weight) / 2, torch.tensor(weight) / 2]).float())
        model.bias.copy_(torch.tensor([-bias / 2, bias / 2]).float())
    return model


def test_bounded_pgd_on_a_linear_model_moves_epsilon_along_minus_the_normal():
    weight = [3.0, 4.0, 0.0]
    model = _linear_model(weight)
    x = torch.tensor([[1.0, 1.0, 0.5], [2.0, -0.5, 1.0]])
    delta = BoundedProjectedPGD(model, epsilon=0.3, steps=10)(x, label=torch.ones(2, dtype=torch.long))
    # The worst case in the ball for a linear margin is -eps w/||w||.
    np.testing.assert_allclose(delta.numpy(), np.tile([-0.18, -0.24, 0.0], (2, 1)), atol=1e-5)
    # Targeted towards class 1 it goes the other way; on-manifold (basis e3 only) it cannot move at all.
    toward = BoundedProjectedPGD(model, epsilon=0.3, steps=10)(x, target=torch.ones(2, dtype=torch.long))
    np.testing.assert_allclose(toward.numpy(), np.tile([0.18, 0.24, 0.0], (2, 1)), atol=1e-5)
    confined = BoundedProjectedPGD(model, 0.3, 10, mode="on")(x, label=torch.ones(2, dtype=torch.long),
                                                              tangent_bases=torch.tensor([[0.0], [0.0], [1.0]]))
    np.testing.assert_allclose(confined.numpy(), 0.0, atol=1e-7)


def test_robust_accuracy_matches_the_closed_form_for_a_linear_model():
    model = _linear_model([1.0, 0.0])
    x = torch.tensor([[0.05, 0.0], [0.2, 1.0], [0.5, -1.0], [-0.3, 0.0]])  # distances 0.05, 0.2, 0.5, 0.3
    labels = torch.tensor([1, 1, 1, 1])  # the last point is misclassified
    distance = DeepFoolL2(model)(x).distance.double().numpy()
    report = robust_accuracy(model, x, labels, distance, distance, [0.1, 0.25, 0.6])
    assert report["clean"] == 0.75
    for row, expected in zip(report["epsilons"], [0.5, 0.25, 0.0]):
        assert row["minimal_distance"] == expected and row["pgd"] == expected and row["certified"] == expected


# --------------------------------------------------------------------------- adversarial training


def test_adversarial_training_raises_robust_accuracy_on_sheet_two_class():
    accuracies = {}
    for adversarial in (False, True):
        scene = load_scene(SCENES / "sheet_two_class_adversarial.yaml",
                           {"train.adversarial.enabled": adversarial, "train.device": "cpu"})
        data = make_dataset(scene)
        model = train(scene, data, progress=False).model.eval()
        x = torch.as_tensor(data.x_test, dtype=torch.float32)
        distance = DeepFoolL2(model)(x).distance.double().numpy()
        epsilon = scene.train.adversarial.epsilon
        row = robust_accuracy(model, x, torch.as_tensor(data.y_test), distance, np.zeros_like(distance),
                              [epsilon])["epsilons"][0]
        # By hand: correct and DeepFool's distance beyond eps ("not found", NaN, counts as beyond).
        correct = model(x).argmax(1).numpy() == data.y_test
        assert row["minimal_distance"] == np.mean(correct & ~(distance <= epsilon))
        assert row["certified"] == 0.0  # zero lower bounds certify nothing
        assert abs(row["minimal_distance"] - row["pgd"]) <= 0.01  # two attacks agree
        accuracies[adversarial] = row["minimal_distance"]
    # Measured: 0.770 -> 0.806 on the 800 test points (seeds 1 and 2: +4.9 and +2.0 points).
    assert accuracies[True] > accuracies[False] + 0.02


def test_compare_baseline_needs_adversarial_training(tmp_path):
    from cli import main

    result = CliRunner().invoke(main, ["run", str(SCENES / "sheet_two_class.yaml"), "--compare-baseline",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "train.adversarial.enabled" in result.output and not any(tmp_path.iterdir())


def test_compare_baseline_writes_both_runs_and_the_table(tmp_path, tiny_overrides):
    from cli import main

    args = ["run", str(SCENES / "sheet_two_class_adversarial.yaml"), "--compare-baseline", "--quiet",
            "--out", str(tmp_path), "--set", "render.three_d=false", "--set", "render.first_look=false",
            "--set", "measure.attacks.check_with_deepfool=false", "--set", 'measure.attacks.modes=["free"]',
            "--set", "measure.height_every=10"]
    for key, value in tiny_overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "sheet_two_class_adversarial_vs_baseline" / "adversarial_training.md").read_text()

    def cells(start: str) -> list[str]:  # the plain and adversarial cells of the row that starts so
        row = next(line for line in table.splitlines() if line.startswith(f"| {start}"))
        return [cell.strip() for cell in row.strip("|").split("|")[1:]]

    runs = [load_run(tmp_path / name) for name in ("sheet_two_class_adversarial_baseline",
                                                   "sheet_two_class_adversarial")]
    assert runs[1].metrics["training"]["adversarial"]["epsilon"] == 0.1
    assert runs[0].metrics["training"]["adversarial"] is None
    clean, by_attack = [], {"minimal-distance attack)": [], "PGD-20)": [], "certified": []}  # row label starts
    for run in runs:
        # Both runs were measured at the training radius; each number recomputed from the run folder.
        report = run.metrics["attacks"]["final"]["robust_accuracy"]
        _check_robust_accuracy(run, report)
        row = next(row for row in report["epsilons"] if row["epsilon"] == pytest.approx(0.1, abs=1e-12))
        for attack, key in zip(by_attack, ("minimal_distance", "pgd", "certified")):
            by_attack[attack].append(fmt(row[key]))
        correct = _correct(run.final_model(), run.data.x_test, run.data.y_test)
        assert round(run.metrics["training"]["final"]["test_accuracy"] * len(correct)) == correct.sum()
        clean.append(fmt(run.metrics["training"]["final"]["test_accuracy"]))
    assert cells("clean test accuracy") == clean
    for attack, expected in by_attack.items():
        assert cells(f"robust accuracy at eps = 0.1 ({attack}") == expected


# --------------------------------------------------------------------------- relabelling


RELABEL_BUDGET = {**FUR_BUDGET, "measure.enabled": False, "experiments.relabel.enabled": True,
                  "experiments.relabel.steps": 30}


def _relabel(tmp_path, overrides):
    """The relabelling record of a run, its figures first recomputed from the run folder."""
    scene = load_scene(SCENES / "stretchy_fur_on.yaml", {**RELABEL_BUDGET, **overrides})
    run = load_run(run_scene(scene, tmp_path, progress=False).path)
    report = run.metrics["relabel"]
    y_test = run.data.y_test
    n_test, n_classes = len(y_test), run.data.n_classes
    assert report["n_train"] == len(run.data.y_train)
    assert report["chance"] == np.bincount(y_test, minlength=n_classes).max() / n_test  # the majority class
    assert report["uniform_chance"] == 1 / n_classes
    correct = _correct(run.final_model(), run.data.x_test, y_test)
    assert round(report["original_model_test_accuracy"] * n_test) == correct.sum()
    # Wilson's 95% score interval written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
    from scipy.stats import norm

    p, z = round(report["fresh_model_clean_test_accuracy"] * n_test) / n_test, norm.ppf(0.975)
    centre, half = p + z**2 / (2 * n_test), z * np.sqrt(p * (1 - p) / n_test + z**2 / (4 * n_test**2))
    assert report["clean_test_accuracy_interval"] == pytest.approx(
        [(centre - half) / (1 + z**2 / n_test), (centre + half) / (1 + z**2 / n_test)], rel=1e-9)
    if report["settings"]["target"] == "next":  # t = (y + 1) mod C is never the true class
        assert report["target_equals_true_class"] == 0.0
    return report


def test_relabelling_with_strong_tiny_features_is_well_above_chance(tmp_path):
    report = _relabel(tmp_path, {})
    assert report["target_reached"] > 0.95
    assert abs(report["target_equals_true_class"] - 0.5) < 0.1  # random targets
    assert report["clean_test_accuracy_interval"][0] > report["chance"] + 0.3


def test_relabelling_without_predictive_features_is_at_chance(tmp_path):
    # A sanity check, not a finding: neither shape nor fur says anything about the class, so
    # neither the original model nor the relabelled set can teach it; the pipeline must not
    # manufacture accuracy from nothing.
    report = _relabel(tmp_path, {"labels.shape_reliability": 0.5, "labels.fur_reliability": 0.5})
    low, high = report["clean_test_accuracy_interval"]
    assert low - 0.05 <= 0.5 <= high + 0.05
    assert abs(report["original_model_test_accuracy"] - 0.5) < 0.1


def test_deterministic_targets_separate_tiny_features_from_robust_ones(tmp_path):
    # D_det (target = the other class): with the fur, the fresh model follows the fur (above
    # chance); with shape only, the shape still points to the original class (below chance).
    with_fur = _relabel(tmp_path / "fur", {"experiments.relabel.target": "next"})
    shape_only = _relabel(tmp_path / "shape", {"experiments.relabel.target": "next",
                                                "labels.fur_reliability": 0.5, "labels.shape_reliability": 1.0})
    assert with_fur["clean_test_accuracy_interval"][0] > with_fur["chance"] + 0.3
    assert shape_only["clean_test_accuracy_interval"][1] < 0.5 - 0.2
    from simulator.report.run_report import relabel_reading

    assert relabel_reading(with_fur).startswith("Above") and relabel_reading(shape_only).startswith("Below")


# --------------------------------------------------------------------------- sweeps


def test_sweep_rejects_a_bad_value_before_training(tmp_path):
    from cli import main

    result = CliRunner().invoke(main, ["sweep", str(SCENES / "sheet_two_class.yaml"), "--param", "model.init_scale",
                                       "--values", "1,-2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "init_scale" in result.output and not any(tmp_path.iterdir())
