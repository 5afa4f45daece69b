"""The literature scenes (issue #14): Melamed et al. 2023's chessboard with its two fixes, and
Gilmer et al. 2018's adversarial spheres in n = 500; and the options they brought: the flat's
`manifold.offset`, the checkerboard's `labels.sampling: grid` and `train.stop_at_margin`, each
checked against closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SCENES
from threadpoolctl import threadpool_limits  # installed with scikit-learn

import cli
from simulator import load_scene
from simulator.config.scene import FlatSpec, Scene
from simulator.data import make_dataset
from simulator.errors import SceneError
from simulator.manifolds import Flat
from simulator.training.loop import smallest_margin, train

MELAMED = ["melamed_chessboard", "melamed_chessboard_small_init", "melamed_chessboard_weight_decay"]
LITERATURE = [*MELAMED, "gilmer_spheres_500"]

# Renders cost seconds and check nothing these tests are about.
NO_PICTURES = {"render.three_d": False, "render.animation": False, "render.report": False,
               "render.first_look": False}
# Every attack mode still runs, at a few points with a coarse search: the brackets' branch and
# bound is the slowest stage of these runs.
TINY_MEASURE = {"train.device": "cpu", "snapshots.count": 4, "measure.height_resolution": 12,
                "measure.final_height_resolution": 16, "measure.attacks.bootstrap": 50,
                "measure.attacks.n_points": 8, "measure.attacks.search.directions": 64}
TINY = {
    # The chessboard keeps its 25 grid points (the grid is the training set).
    **{name: {"train.steps": 60, "data.n_test": 60, "measure.n_points": 30} for name in MELAMED},
    # n = 500, k = 499: every per-point tangent basis is 500 x 499, so keep the points few.
    "gilmer_spheres_500": {"train.steps": 50, "data.n_train": 200, "data.n_test": 40, "measure.n_points": 20,
                           "measure.height_resolution": 8, "measure.attacks.search.starts": 2},
}


def run_scene(name: str, out, overrides: dict) -> dict:
    """`sim run scenes/<name>.yaml --set ...` into `out`; the run's metrics.json.

    BLAS runs on one thread: on a busy 2-core machine OpenBLAS's own threads made the numpy QRs
    of gilmer_spheres_500's 500 x 499 tangent Jacobians ~100x slower (its tiny run: 177 s against
    20 s), and the measure stage does not limit them the way training limits torch's threads."""
    arguments = ["run", str(SCENES / f"{name}.yaml"), "--out", str(out), "--quiet"]
    for key, value in overrides.items():
        arguments += ["--set", f"{key}={json.dumps(value)}"]
    with threadpool_limits(1, user_api="blas"):
        result = CliRunner().invoke(cli.main, arguments)
    assert result.exit_code == 0, result.output
    return json.loads((out / name / "metrics.json").read_text())


@pytest.fixture(scope="module", params=LITERATURE)
def tiny_run(request, tmp_path_factory):
    """(scene name, metrics.json) of one tiny run per scene, shared by the tests below."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    return name, run_scene(name, out, {**TINY_MEASURE, **TINY[name], **NO_PICTURES})


# --------------------------------------------------------------------------- the scenes


@pytest.mark.parametrize("name", LITERATURE)
def test_scene_validates_and_cites_its_paper(name):
    scene = load_scene(SCENES / f"{name}.yaml")
    text = (SCENES / f"{name}.yaml").read_text()
    assert text.startswith("# ") and ("Melamed" in text or "Gilmer" in text)
    assert scene.description


def _leaves(settings: dict, prefix: str = "") -> dict:
    """{dotted field: value} of a nested scene dump."""
    flat = {}
    for key, value in settings.items():
        flat.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def test_melamed_scenes_differ_only_by_their_fix():
    plain, small, decay = (_leaves(load_scene(SCENES / f"{name}.yaml").model_dump()) for name in MELAMED)
    assert plain["model.hidden"] == [400] and plain["train.optimizer"] == "sgd" and plain["train.lr"] == 0.05
    assert plain["manifold.offset"] == [0.0, 0.0, 0.5] and plain["labels.sampling"] == "grid"
    assert plain["train.stop_at_margin"] == 1.0
    assert small["model.init_scale"] == pytest.approx(1 / 3, abs=1e-15)
    assert decay["train.weight_decay"] == 0.002
    for variant, field in ((small, "model.init_scale"), (decay, "train.weight_decay")):
        assert {key for key in plain if variant[key] != plain[key]} == {"name", "description", field}


def test_gilmer_scene_is_gilmers_geometry():
    scene = load_scene(SCENES / "gilmer_spheres_500.yaml")
    spec = scene.manifold
    assert (spec.family, spec.dim, spec.ambient_dim, spec.embedding) == ("concentric_spheres", 499, 500, "identity")
    assert (spec.inner_radius, spec.outer_radius) == (1.0, 1.3) and scene.labels.rule == "component"


def test_tiny_run_completes_with_measurements_and_attacks(tiny_run):
    name, metrics = tiny_run
    final = metrics["geometry"]["snapshots"][-1]
    assert "tangent" in final and "height" in final
    assert metrics["attacks"]["final"]["modes"]["free"]["n_points"] > 0
    assert metrics["snapshots"][-1]["step"] == metrics["training"]["final"]["step"]


def test_gilmer_data_lie_on_the_two_spheres():
    name = "gilmer_spheres_500"
    data = make_dataset(load_scene(SCENES / f"{name}.yaml", overrides=TINY[name]))
    radius = np.linalg.norm(data.x_train, axis=1)
    np.testing.assert_allclose(radius, np.where(data.y_train == 1, 1.3, 1.0), atol=1e-12)
    assert set(data.y_train) == {0, 1}


# --------------------------------------------------------------------------- labels.sampling: grid


def test_grid_sampling_gives_the_25_cell_centres_with_chessboard_labels():
    scene = load_scene(SCENES / "melamed_chessboard.yaml")
    data = make_dataset(scene)
    centres = np.array([-0.8, -0.4, 0.0, 0.4, 0.8])
    i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    expected_u = np.stack([centres[i.ravel()], centres[j.ravel()]], axis=1)
    np.testing.assert_allclose(data.u_train, expected_u, atol=1e-15)
    np.testing.assert_allclose(data.x_train, np.column_stack([expected_u, np.full(25, 0.5)]), atol=1e-15)
    np.testing.assert_array_equal(data.y_train, (i.ravel() + j.ravel()) % 2)
    # The test points are uniform on the plane, labelled by their chessboard cell.
    assert len(data.x_test) == scene.data.n_test and np.all(data.x_test[:, 2] == 0.5)
    assert np.abs(data.u_test).max() <= 1.0 and len(np.unique(data.u_test[:, 0])) == scene.data.n_test
    cell = np.clip(np.floor((data.u_test + 1) / 0.4), 0, 4).astype(int)
    np.testing.assert_array_equal(data.y_test, cell.sum(axis=1) % 2)


def test_grid_sampling_in_three_chart_dimensions_and_fewer_points_than_the_grid():
    raw = {"manifold": {"family": "flat", "dim": 3, "ambient_dim": 4, "extent": 2.0},
           "labels": {"rule": "checkerboard", "cells_per_axis": 2, "sampling": "grid"},
           "data": {"n_train": 5, "n_test": 20}, "measure": {"n_points": 20}}
    data = make_dataset(Scene.model_validate(raw))
    corners = np.array([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)])
    np.testing.assert_allclose(data.u_train, corners[:5])  # the grid's first 5 points, first axis slowest
    np.testing.assert_allclose(data.u_test[:3], corners[5:])  # the rest of the grid, then random points
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test[:3]]), corners.clip(0).sum(axis=1) % 2)


def test_grid_sampling_too_large_is_refused_with_the_fix():
    with pytest.raises(SceneError, match=r"labels.sampling: grid .* lower labels.cells_per_axis or use sampling: uniform"):
        load_scene(SCENES / "subspace_highdim.yaml",
                   overrides={"labels": {"rule": "checkerboard", "cells_per_axis": 10, "sampling": "grid"}})


def test_uniform_sampling_is_the_default_and_unchanged():
    scene = load_scene(SCENES / "chessboard.yaml")
    assert scene.labels.sampling == "uniform" and scene.manifold.offset is None


# --------------------------------------------------------------------------- manifold.offset


def test_offset_flat_puts_points_at_z_one_half_and_projects_exactly():
    plane = Flat(dim=2, ambient_dim=3, embedding="identity", offset=[0.0, 0.0, 0.5])
    rng = np.random.default_rng(0)
    u = plane.sample_chart(200, rng)
    x = plane.immersion(u)
    np.testing.assert_array_equal(x, np.column_stack([u, np.full(200, 0.5)]))
    assert plane.belongs(x, atol=1e-15).all()
    point = rng.normal(size=(200, 3)) * 3
    np.testing.assert_allclose(plane.projection(point), np.column_stack([point[:, :2], np.full(200, 0.5)]), atol=1e-15)
    np.testing.assert_allclose(plane.chart(point), point[:, :2], atol=1e-15)
    assert not plane.belongs(point[np.abs(point[:, 2] - 0.5) > 1e-3]).any()
    # Directions do not move with the plane.
    np.testing.assert_array_equal(plane.tangent_basis(u), np.broadcast_to(np.eye(3, 2), (200, 3, 2)))
    np.testing.assert_array_equal(plane.unit_normal(u), np.broadcast_to([0.0, 0.0, 1.0], (200, 3)))
    np.testing.assert_allclose(plane.to_normal(point, u), np.column_stack([np.zeros((200, 2)), point[:, 2]]))


def test_offset_flat_in_a_random_embedding_matches_its_closed_form():
    """x = E (u, 0) + c: the nearest point of p is c + E P E^T (p - c), P keeping the chart part."""
    offset = np.random.default_rng(1).normal(size=7)
    flat = Flat(dim=3, ambient_dim=7, embedding_seed=3, offset=offset)
    through_origin = Flat(dim=3, ambient_dim=7, embedding_seed=3)
    point = np.random.default_rng(2).normal(size=(100, 7)) * 2
    host = (point - offset) @ flat.embedding_matrix
    np.testing.assert_allclose(flat.chart(point), host[:, :3], atol=1e-12)
    np.testing.assert_allclose(flat.projection(point), through_origin.projection(point - offset) + offset, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(point - flat.projection(point), axis=1) ** 2,
                               np.sum((point - offset) ** 2, axis=1) - np.sum(host[:, :3] ** 2, axis=1), atol=1e-10)
    u = flat.chart(point)
    np.testing.assert_allclose(flat.projection(flat.projection(point)), flat.projection(point), atol=1e-12)
    np.testing.assert_array_equal(flat.tangent_basis(u), through_origin.tangent_basis(u))
    # The residual p - proj(p) is normal: no tangent part.
    np.testing.assert_allclose(flat.to_tangent(point - flat.projection(point), u), 0.0, atol=1e-12)
    assert "offset=[" in repr(flat) and "offset" not in repr(through_origin)


def test_offset_of_the_wrong_length_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"offset: has 2 entries but manifold.ambient_dim is 3; .* one number per ambient coordinate"):
        FlatSpec(family="flat", offset=[0.0, 0.5])
    with pytest.raises(ValueError, match="offset"):
        Flat(dim=2, offset=[0.0, np.inf, 0.0])
    assert FlatSpec(family="flat", offset=[0, 0, 1]).build().offset.tolist() == [0.0, 0.0, 1.0]


# --------------------------------------------------------------------------- train.stop_at_margin


def _margin_scene(**train):
    """Plain chessboard at a small budget, losses logged (and margins checked) every 10 steps."""
    return load_scene(SCENES / "melamed_chessboard.yaml",
                      overrides={"train.steps": 2000, "train.device": "cpu", "data.n_test": 60,
                                 "measure.n_points": 30, **{f"train.{k}": v for k, v in train.items()}})


@pytest.fixture(scope="module")
def margin_reference():
    """The same training without a stop, snapshotted at every margin check (every 10 steps)."""
    scene = _margin_scene()
    scene = scene.model_copy(update={"snapshots": scene.snapshots.model_copy(update={"schedule": "every", "every": 10})})
    data = make_dataset(scene)
    result = train(scene, data, progress=False)
    x, y = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train)
    margins = []
    for snapshot in result.snapshots:
        result.model.load_state_dict(snapshot.state_dict)
        margins.append(smallest_margin(result.model, x, y))
    return data, result.snapshots, np.array(margins)


def test_stop_at_margin_stops_at_the_first_check_reaching_it(margin_reference):
    data, reference, margins = margin_reference
    threshold = float(np.quantile(margins[margins > 0], 0.5))  # reached about halfway through
    first = int(np.argmax(margins >= threshold))
    assert 0 < reference[first].step < 2000 and margins[first - 1] < threshold
    result = train(_margin_scene(stop_at_margin=threshold), data, progress=False)
    assert result.stopped_at_margin == reference[first].step
    final = result.snapshots[-1]
    assert final.step == reference[first].step
    steps = [s.step for s in result.snapshots]
    assert steps == sorted(set(steps)) and steps[0] == 0
    # The last snapshot is the final model, and the same weights an unstopped run has there.
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(final.state_dict[name], tensor)
        assert torch.equal(reference[first].state_dict[name], tensor)
    assert result.history[-1]["step"] == final.step


def test_stop_at_margin_not_reached_trains_every_step(margin_reference):
    data, reference, margins = margin_reference
    result = train(_margin_scene(stop_at_margin=float(margins.max()) + 100.0), data, progress=False)
    assert result.stopped_at_margin is None and result.snapshots[-1].step == 2000
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(reference[-1].state_dict[name], tensor)


def test_smallest_margin_closed_form():
    model = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))  # logits (a, b, 0)
    x = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    # point 1, class 0: 2 - max(1, 0) = 1; point 2, class 0 (misclassified): 0.5 - 3 = -2.5
    assert smallest_margin(model, x, torch.tensor([0, 1])) == pytest.approx(min(1.0, 2.5))
    assert smallest_margin(model, x, torch.tensor([0, 0])) == pytest.approx(-2.5)


def test_stop_at_margin_must_be_positive():
    with pytest.raises(SceneError, match="stop_at_margin"):
        _margin_scene(stop_at_margin=0.0)
    assert load_scene(SCENES / "sheet_two_class.yaml").train.stop_at_margin is None


# --------------------------------------------------------------------------- Melamed's result


def test_both_fixes_lift_the_boundary_off_the_data_plane(tmp_path):
    """Melamed et al.'s qualitative result at a reduced budget (no attacks, few snapshots, ~12 s):
    the boundary above the training points is lower after plain training than after either fix."""
    heights = {}
    for name in MELAMED:
        metrics = run_scene(name, tmp_path, {"train.device": "cpu", "snapshots.count": 3, "measure.n_points": 50,
                                             "measure.attacks.enabled": False, "measure.height_every": 10,
                                             "measure.final_height_resolution": 48, **NO_PICTURES})
        assert metrics["training"]["final"]["train_accuracy"] == 1.0
        heights[name] = metrics["geometry"]["snapshots"][-1]["height"]
    plain = heights["melamed_chessboard"]
    for fix in MELAMED[1:]:
        for key in ("median_abs_h_at_train_points", "median_abs_h_near_data"):
            assert plain[key] is not None
            assert heights[fix][key] is None or heights[fix][key] > 1.5 * plain[key], (fix, key, heights)
