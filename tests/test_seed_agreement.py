"""Seed agreement (issue 7 item 4): batched training, the disagreement and Chamfer measures, the
pipeline hook, the report section and `sim seeds`, with tiny budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cli
from simulator import load_run, load_scene, run_scene
from simulator.data import make_dataset
from simulator.errors import TrainingError
from simulator.experiments import seed_agreement as sa
from simulator.training import stacked
from simulator.manifolds.sphere import Sphere
from simulator.boundary.frame import RenderFrame
from simulator.seeding import numpy_rng
from simulator.training.loop import train

from conftest import SCENES

TINY = {"train.steps": 60, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 50,
        "snapshots.count": 4, "train.device": "cpu", "render.cross_section_resolution": 32,
        "measure.enabled": False, "render.grid_resolution": 20, "render.window_size": [320, 240],
        "render.animation": False, "render.report": True}


def _linear_two_class(normal, offset: float = 0.0) -> nn.Linear:
    """Logits (f, -f) with f(x) = normal . x - offset: the boundary is the plane f = 0."""
    layer = nn.Linear(len(normal), 2)
    normal = torch.as_tensor(normal, dtype=torch.float32)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([normal, -normal]))
        layer.bias.copy_(torch.tensor([-offset, offset]))
    return layer


# --------------------------------------------------------------------------- batched training


@pytest.mark.parametrize("method", ["auto", "vmap"])
@pytest.mark.parametrize("optimiser", [{"train.optimizer": "adam", "train.weight_decay": 1e-3},
                                       {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9,
                                        "model.activation": "tanh", "model.bias": False}])
def test_batched_training_equals_sequential_train(optimiser, method, monkeypatch):
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides={**TINY, "train.steps": 40, **optimiser})
    data = make_dataset(scene)
    chosen = []
    original = stacked.stacked_forward
    monkeypatch.setattr(stacked, "stacked_forward", lambda template: chosen.append(method) or original(template, method))
    seeds = [scene.seed, 7, scene.seed]
    batched = stacked.train_seeds(scene, data, seeds)
    assert batched.batched and "batched" in batched.note
    x = torch.as_tensor(data.x_test, dtype=torch.float32)
    for seed, model in zip(seeds, batched.models):
        reference = train(scene.model_copy(update={"seed": seed}), data, progress=False).model
        for (name, expected), actual in zip(reference.named_parameters(), model.parameters()):
            torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7, msg=name)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x), rtol=1e-6, atol=1e-6)
    assert chosen == [method]
    # Different seeds really train different models (the comparison above is not vacuous).
    assert not torch.equal(batched.models[0].head.weight, batched.models[1].head.weight)


def test_batched_training_stops_each_model_where_train_stops_at_its_margin():
    """Melamed's chessboard (trained until every point has margin 1): each stacked model is the
    model `train()` returns for its seed, stopped at its own step, and the seeds stop at
    different steps (so keeping one model while the others train on is exercised)."""
    scene = load_scene(SCENES / "melamed_chessboard.yaml", overrides={"train.device": "cpu", "train.steps": 8000,
                                                                       "measure.enabled": False})
    data = make_dataset(scene)
    seeds = [0, 1, 2]
    batched = stacked.train_seeds(scene, data, seeds)
    assert batched.batched
    stops = []
    for seed, model in zip(seeds, batched.models):
        reference = train(scene.model_copy(update={"seed": seed}), data, progress=False)
        stops.append(reference.stopped_at_margin)
        for (name, expected), actual in zip(reference.model.named_parameters(), model.parameters()):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert all(step is not None for step in stops) and len(set(stops)) > 1, stops


def test_sequential_fallback_matches_and_says_why(monkeypatch):
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides={**TINY, "train.steps": 30})
    data = make_dataset(scene)
    assert stacked.batching_blocker(scene) is None
    adversarial = scene.model_copy(update={"train": scene.train.model_copy(update={
        "adversarial": scene.train.adversarial.model_copy(update={"enabled": True})})})
    assert "train.adversarial" in stacked.batching_blocker(adversarial)
    monkeypatch.setattr(stacked, "batching_blocker", lambda scene: "forced for the test")
    sequential = stacked.train_seeds(scene, data, [0, 1])
    monkeypatch.undo()
    batched = stacked.train_seeds(scene, data, [0, 1])
    assert not sequential.batched and "forced for the test" in sequential.note
    for one, other in zip(sequential.models, batched.models):
        for a, b in zip(one.parameters(), other.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_diverging_seed_is_a_training_error_naming_it():
    scene = load_scene(SCENES / "sheet_two_class.yaml",
                       overrides={**TINY, "train.steps": 20, "train.optimizer": "sgd", "train.lr": 1e9})
    with pytest.raises(TrainingError, match=r"seed agreement, seed \d+: Training diverged"):
        stacked.train_seeds(scene, make_dataset(scene), [0, 1])


# --------------------------------------------------------------------------- the measures, closed forms


def test_disagreement_of_great_circles_on_the_sphere_is_their_angle_over_pi():
    # Planes through the centre of a sphere: a uniform point is classified differently by two of
    # them with probability (angle between the normals) / pi, and by any of three coplanar normals
    # with probability (largest angle among them) / pi.
    sphere = Sphere(dim=2, ambient_dim=3, embedding="identity")
    angles = [0.0, 0.3, 1.1]
    models = [_linear_two_class([math.cos(a), math.sin(a), 0.0]) for a in angles]
    points = sa.manifold_probes(sphere, 40000, numpy_rng(0, "seed_agreement"))
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-9)
    result = sa.disagreement(sa.predictions(models, points))
    tolerance = 4 * math.sqrt(0.25 / 40000)  # four standard errors of a share
    expected = np.abs(np.subtract.outer(angles, angles)) / math.pi
    np.testing.assert_allclose(result["pairwise"], expected, atol=tolerance)
    assert abs(result["mean_pairwise"] - expected[np.triu_indices(3, 1)].mean()) < tolerance
    assert abs(result["not_all_agree"] - 1.1 / math.pi) < tolerance
    assert result["n_points"] == 40000


def test_parallel_planes_chamfer_is_their_distance_and_frame_disagreement_its_share():
    frame = RenderFrame(np.zeros(3), np.eye(3), -np.ones(3), np.ones(3))
    distance, resolution = 0.37, 21  # nodes every 0.1; the planes x = 0.05 and 0.42 lie between nodes
    models = [_linear_two_class([1.0, 0.0, 0.0], 0.05), _linear_two_class([1.0, 0.0, 0.0], 0.05 + distance)]
    meshes, spacing = sa.seed_boundary_meshes(models, frame, resolution, n_classes=2)
    np.testing.assert_allclose(spacing, 0.1)
    vertices = [np.asarray(mesh.points) for mesh in meshes]
    assert all(len(v) > 100 for v in vertices)
    np.testing.assert_allclose(vertices[0][:, 0], 0.05, atol=1e-5)  # the extraction places the plane exactly
    matrix = sa.chamfer_matrix(vertices)
    assert abs(matrix[0, 1] - distance) < spacing.max()  # the promised bound: one grid spacing
    assert abs(matrix[0, 1] - distance) < 1e-4  # both meshes share the lateral lattice: exact here
    assert matrix[0, 0] == 0 and matrix[1, 0] == matrix[0, 1]
    # Uniform points of the box [-1, 1]^3 between the planes: distance / 2 of the volume.
    points = sa.frame_probes(frame, 40000, numpy_rng(0, "seed_agreement"))
    assert frame.inside(points).all()
    share = sa.disagreement(sa.predictions(models, points))["mean_pairwise"]
    assert abs(share - distance / 2) < 4 * math.sqrt(0.25 / 40000)


def test_disagreement_profile_over_distance():
    # Two models that agree below distance 0.5 and disagree from there on: equal-count bins of
    # uniform distances on [0, 1] give 0, 0, 1, 1.
    distance = np.linspace(0, 1, 1001)[1:-1]
    predicted = np.stack([np.zeros(distance.size, int), (distance >= 0.5).astype(int)])
    rows = sa.disagreement_by_distance(predicted, distance, n_bins=4)
    assert [row["mean_pairwise"] for row in rows] == [0, 0, 1, 1]
    assert [row["not_all_agree"] for row in rows] == [0, 0, 1, 1]
    assert sum(row["n_points"] for row in rows) == distance.size
    np.testing.assert_allclose([row["to"] for row in rows], [0.25, 0.5, 0.75, 0.999], atol=2e-3)


def test_chamfer_distance_edge_cases():
    points = np.random.default_rng(0).normal(size=(50, 3))
    assert sa.chamfer_distance(points, points) == 0.0
    shifted = np.array([[0.0, 0.0, 0.0]]), np.array([[3.0, 4.0, 0.0]])  # one point each: their distance
    assert sa.chamfer_distance(*shifted) == pytest.approx(5.0)
    assert sa.chamfer_distance(np.empty((0, 3)), np.empty((0, 3))) == 0.0
    assert math.isnan(sa.chamfer_distance(points, np.empty((0, 3))))


# --------------------------------------------------------------------------- the run, the report, the CLI


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """A tiny sheet_two_class run whose seed-agreement experiment trains the same seed twice."""
    out = tmp_path_factory.mktemp("seeds")
    overrides = {**TINY, "experiments.seed_agreement.enabled": True, "experiments.seed_agreement.seeds": [3, 3],
                 "experiments.seed_agreement.n_points": 500}
    summary = run_scene(load_scene(SCENES / "sheet_two_class.yaml", overrides=overrides), out_root=out,
                        progress=False)
    return summary.path


def test_identical_seeds_give_zero_disagreement_and_zero_chamfer(seed_run):
    result = load_run(seed_run).metrics["seed_agreement"]
    assert result["seeds"] == [3, 3] and result["training"]["batched"]
    assert [row["mean_pairwise"] for row in result["manifold"]["by_distance_to_data"]] == [0] * 4
    assert [row["not_all_agree"] for row in result["frame"]["by_distance_to_manifold"]] == [0] * 4
    for key, count in (("manifold", 500), ("frame", 500), ("test", 100)):
        assert result[key]["n_points"] == count
        assert result[key]["mean_pairwise"] == 0 and result[key]["not_all_agree"] == 0
        assert np.array_equal(result[key]["pairwise"], np.zeros((2, 2)))
    chamfer = result["chamfer"]
    assert chamfer["mean"] == 0 and chamfer["vertices"][0] == chamfer["vertices"][1] > 0
    assert chamfer["grid_resolution"] == 20 and chamfer["grid_spacing"] > 0
    assert result["files"] == ["seed_boundary_0.vtp", "seed_boundary_1.vtp"]  # the stored meshes
    for name in ("seed_boundaries.png", *result["files"]):  # and the picture drawn from them
        assert (seed_run / name).is_file()
    import matplotlib.image

    image = matplotlib.image.imread(seed_run / "seed_boundaries.png")
    assert image.shape[:2] == (240, 640)  # two views side by side
    for view in (image[:, :320, :3], image[:, 320:, :3]):
        assert view.std() > 0.05  # each a picture, not a blank canvas
    report = (seed_run / "report.md").read_text()
    assert "## Seed agreement" in report and "seed_boundaries.png" in report
    assert "mean pairwise 0.00%" in report


def test_sim_seeds_on_an_existing_run(seed_run):
    before = load_run(seed_run)
    result = CliRunner().invoke(cli.main, ["seeds", str(seed_run), "--seeds", f"{before.scene.seed},11", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "seed agreement" in result.output and "Chamfer" in result.output
    run = load_run(seed_run)
    metrics = run.metrics["seed_agreement"]
    assert metrics["seeds"] == [before.scene.seed, 11]
    assert metrics["test"]["mean_pairwise"] > 0 and metrics["chamfer"]["mean"] > 0  # two seeds, two boundaries
    # Model 0 has the scene's own seed, so it is the run's main model: same test accuracy.
    assert metrics["training"]["test_accuracy"][0] == pytest.approx(before.snapshots[-1].test_accuracy, abs=1e-6)
    assert run.snapshots[-1].step == before.snapshots[-1].step  # the main model was not retrained
    assert json.loads((seed_run / "metrics.json").read_text())["seed_agreement"]["seeds"] == [before.scene.seed, 11]


@pytest.mark.parametrize("arguments, message", [
    (["seeds", "{missing}"], "no such run directory"),
    (["seeds", "{run}", "--seeds", "1,x"], "comma-separated list of integers"),
    (["seeds", "{run}", "--count", "1"], "--count"),
])
def test_sim_seeds_bad_input_is_exit_2_with_a_message(seed_run, tmp_path, arguments, message):
    arguments = [a.format(missing=tmp_path / "nope", run=seed_run) for a in arguments]
    result = CliRunner().invoke(cli.main, arguments)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
