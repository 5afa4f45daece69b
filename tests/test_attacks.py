"""Attacks against closed forms (a linear margin over a flat k-plane) and against a second method."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from simulator.attacks.bounded_pgd import BoundedProjectedPGD
from simulator.attacks.deepfool import DeepFoolL2
from simulator.attacks.greedy_pgd import LOSSES, GreedyProjectedPGD
from simulator.attacks.subspaces import (
    CONTROL_MODES,
    MANIFOLD_MODES,
    MODES,
    PROJECTIONS,
    coordinate_subset_bases,
    mode_subspace,
    project_off,
    project_onto,
    random_subspace_bases,
)
from simulator.config.scene import AdversarialTrainingSpec, AttackMode, AttackSpec
from simulator.manifolds import Flat

from conftest import fit_full_batch

N_AMBIENT, K = 12, 3
STEP = 1e-3


@pytest.fixture(scope="module")
def plane():
    """Points on a random 3-flat in R^12, their tangent bases, and a linear 2-class model."""
    manifold = Flat(dim=K, ambient_dim=N_AMBIENT, embedding="random", embedding_seed=3)
    u = np.random.default_rng(0).uniform(-1, 1, size=(8, K))
    x = torch.tensor(manifold.immersion(u))
    tangent = torch.tensor(manifold.tangent_basis(u))
    model = linear_model(torch.randn(2, N_AMBIENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
                         torch.tensor([0.3, -0.2], dtype=torch.float64))
    return manifold, x, tangent, model


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    model = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    return model


def margin_and_direction(model: nn.Linear, x: torch.Tensor):
    """|f| at x and w = grad f up to sign, for 2 classes: f = (W1 - W0) x + (b1 - b0)."""
    w = (model.weight[1] - model.weight[0]).detach()
    f = x @ w + (model.bias[1] - model.bias[0]).detach()
    return f.abs(), w.expand_as(x).clone()


def closed_form(mode: str, model, x, basis) -> torch.Tensor:
    """|f| / ||P w|| with P the mode's projector (DESIGN.md 4.3)."""
    f, w = margin_and_direction(model, x)
    if mode == "free":
        projected = w
    elif mode.endswith("_on") or mode == "on":
        projected = project_onto(w, basis)
    else:
        projected = project_off(w, basis)
    return f / projected.norm(dim=1)


# --------------------------------------------------------------------------- projections and subspaces


def test_projections_split_a_vector_into_orthogonal_parts(plane):
    _, x, tangent, _ = plane
    v = torch.randn(len(x), N_AMBIENT, dtype=torch.float64)
    on, off = project_onto(v, tangent), project_off(v, tangent)
    torch.testing.assert_close(on + off, v)
    torch.testing.assert_close(project_onto(on, tangent), on)  # idempotent
    assert (on * off).sum(1).abs().max() < 1e-12
    shared = tangent[0]  # (n, k) broadcasts over the batch
    torch.testing.assert_close(project_onto(v, shared), project_onto(v, tangent[:1].expand_as(tangent)))


def test_the_schema_takes_its_modes_and_losses_from_the_attack_package():
    assert get_args(AttackMode) == MODES and AttackSpec().modes == list(MODES)
    assert get_args(AttackSpec.model_fields["loss"].annotation) == LOSSES
    assert set(get_args(AdversarialTrainingSpec.model_fields["mode"].annotation)) <= set(MODES)
    assert sorted(CONTROL_MODES + MANIFOLD_MODES) == sorted(MODES)


@pytest.mark.parametrize("mode", get_args(AttackMode))
def test_every_schema_mode_has_a_subspace_and_a_projection(plane, mode):
    _, x, tangent, model = plane
    assert GreedyProjectedPGD(model, mode=mode).mode == BoundedProjectedPGD(model, 0.1, mode=mode).mode == mode
    basis, project = mode_subspace(mode, x, tangent, seed=4), PROJECTIONS[mode]
    if mode == "free":
        assert basis is None and project is None
        return
    # orthonormal k-dim bases (the manifold's k: a *_off mode keeps the basis of what it avoids)
    dense = basis.basis()
    torch.testing.assert_close(dense.transpose(1, 2) @ dense, torch.eye(K, dtype=dense.dtype).expand(len(x), K, K))
    v = torch.randn(len(x), N_AMBIENT, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kept = project(v, basis)
    torch.testing.assert_close(project(kept, basis), kept)  # a projector: idempotent ...
    assert (kept * (v - kept)).sum(1).abs().max() < 1e-12  # ... and orthogonal
    inside = project_onto(kept, basis)  # *_on keeps span(B), *_off its complement
    torch.testing.assert_close(inside, kept if mode.endswith("on") else torch.zeros_like(kept))


def test_random_subspaces_are_seeded_per_point_and_orthonormal():
    bases = random_subspace_bases(6, 40, 4, seed=7, dtype=torch.float64)
    assert bases.shape == (6, 40, 4)
    torch.testing.assert_close(bases.transpose(1, 2) @ bases, torch.eye(4, dtype=torch.float64).expand(6, 4, 4))
    torch.testing.assert_close(random_subspace_bases(6, 40, 4, seed=7, dtype=torch.float64), bases)
    assert not torch.allclose(random_subspace_bases(6, 40, 4, seed=8, dtype=torch.float64), bases)
    # point i's subspace does not depend on how many points are requested, nor on chunking
    torch.testing.assert_close(random_subspace_bases(2, 40, 4, seed=7, dtype=torch.float64), bases[:2])
    torch.testing.assert_close(random_subspace_bases(6, 40, 4, seed=7, dtype=torch.float64, chunk=4), bases)
    torch.testing.assert_close(random_subspace_bases(3, 40, 4, seed=7, dtype=torch.float64, first_index=3), bases[3:])
    assert not torch.allclose(bases[0], bases[1])  # a fresh subspace per point


def test_coordinate_subsets_are_one_hot_distinct_and_seeded():
    bases = coordinate_subset_bases(5, 30, 4, seed=2)
    assert bases.shape == (5, 30, 4)
    assert set(bases.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(bases.sum(1), torch.ones(5, 4))  # one coordinate per column
    assert torch.equal(bases.sum(2).amax(1), torch.ones(5))  # k distinct coordinates
    assert torch.equal(coordinate_subset_bases(2, 30, 4, seed=2), bases[:2])
    assert not torch.equal(coordinate_subset_bases(5, 30, 4, seed=3), bases)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("mode", MODES)
def test_distances_match_the_linear_closed_form(plane, mode):
    _, x, tangent, model = plane
    settings = dict(mode=mode, step_size=STEP, max_steps=200_000, seed=5)
    coarse = GreedyProjectedPGD(model, refine_steps=0, **settings)(x, tangent)
    refined = GreedyProjectedPGD(model, refine_steps=30, **settings)(x, tangent)
    expected = closed_form(mode, model, x, coarse.basis)
    assert coarse.success.all() and refined.success.all()
    # the walk overshoots the boundary by less than one step, never undershoots
    assert ((coarse.distance - expected) >= -1e-9).all() and ((coarse.distance - expected) < STEP).all()
    torch.testing.assert_close(refined.distance, expected, rtol=1e-6, atol=0)
    assert (refined.adversarial_label != refined.original_label).all()
    if mode.startswith(("random", "coordinate")):  # the bases are recomputable from the seed, not only returned
        make = random_subspace_bases if mode.startswith("random") else coordinate_subset_bases
        assert torch.equal(coarse.basis.basis(), make(len(x), N_AMBIENT, K, seed=5, dtype=torch.float64))
        assert torch.equal(coarse.basis.basis(), refined.basis.basis())


def test_gradient_without_tangent_component_reports_no_on_manifold_adversarial(plane):
    manifold, x, tangent, _ = plane
    normal = torch.tensor(manifold.unit_normal(np.zeros(K)))  # the same at every point of a flat
    model = linear_model(torch.stack([torch.zeros(N_AMBIENT, dtype=torch.float64), normal]),
                         torch.tensor([0.0, -0.05], dtype=torch.float64))
    on = GreedyProjectedPGD(model, mode="on", step_size=STEP)(x, tangent)
    assert not on.success.any()
    assert torch.isnan(on.distance).all()
    assert (on.steps == 0).all() and (on.delta == 0).all()
    off = GreedyProjectedPGD(model, mode="off", step_size=STEP, refine_steps=30)(x, tangent)
    torch.testing.assert_close(off.distance, closed_form("free", model, x, None), rtol=1e-6, atol=0)


def test_unreachable_boundary_is_a_failure_not_a_number(plane):
    _, x, tangent, model = plane
    result = GreedyProjectedPGD(model, step_size=STEP, max_steps=3)(x)
    far = closed_form("free", model, x, None) > 3 * STEP  # beyond the walk's reach
    assert far.sum() >= len(x) // 2
    assert not result.success[far].any() and torch.isnan(result.distance[far]).all()
    assert (result.steps[far] == 3).all()


def test_early_stop_leaves_finished_samples_untouched(plane):
    _, x, tangent, model = plane
    attack = GreedyProjectedPGD(model, mode="on", step_size=STEP, max_steps=200_000, refine_steps=0)
    batch = attack(x, tangent)
    assert len(batch.steps.unique()) == len(x)  # points at different distances stop at different steps
    torch.testing.assert_close(batch.delta.norm(dim=1), batch.steps.double() * STEP)
    # each finished sample is exactly what it would be if attacked alone
    for i in range(len(x)):
        alone = attack(x[i:i + 1], tangent[i:i + 1])
        assert torch.equal(alone.delta[0], batch.delta[i]) and alone.steps[0] == batch.steps[i]
    # one gradient per step taken, plus at most one per sample for the backward pass that
    # still carried it in the step where its flip was detected
    assert int(batch.steps.sum()) <= batch.gradient_evaluations < int(batch.steps.sum()) + len(x)


class Parabola(nn.Module):
    """Two classes split by the parabola x1 = x0^2 + 1/2 (the other coordinates do not matter)."""

    def forward(self, x):
        g = x[:, 1] - x[:, 0] ** 2 - 0.5
        return torch.stack([torch.zeros_like(g), g], dim=1)


def test_normal_rounds_reach_the_nearest_point_of_a_curved_boundary():
    x = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.2, 0.0], [0.5, 1.5, 0.3], [-0.6, 1.2, 0.0]], dtype=torch.float64)
    s = torch.linspace(-3, 3, 600_001, dtype=torch.float64)  # brute force: a dense sample of the boundary
    nearest = torch.cdist(x[:, :2], torch.stack([s, s**2 + 0.5], dim=1)).amin(1)
    greedy = GreedyProjectedPGD(Parabola(), step_size=0.01, refine_steps=30, normal_rounds=0)(x)
    aligned = GreedyProjectedPGD(Parabola(), step_size=0.01, refine_steps=30, normal_rounds=5)(x)
    assert (greedy.distance / nearest - 1).max() > 5e-3  # the chord of the greedy path is not minimal here
    assert (aligned.distance <= greedy.distance).all()
    assert (aligned.distance / nearest - 1).abs().max() < 1e-4
    assert (aligned.adversarial_label != aligned.original_label).all()


# --------------------------------------------------------------------------- a trained MLP


@pytest.fixture(scope="module")
def trained_mlp():
    """A small smooth MLP fitted to a curved boundary on a 2-sheet in R^6 (a fraction of a second).

    Smooth (softplus), because on a ReLU net's kinked boundary two local searches can stop at
    different local minima of the distance, a few step sizes apart.
    """
    torch.manual_seed(0)
    manifold = Flat(dim=2, ambient_dim=6, embedding="random", embedding_seed=1)
    u = np.random.default_rng(1).uniform(-1, 1, size=(600, 2))
    x = torch.tensor(manifold.immersion(u), dtype=torch.float32)
    y = torch.tensor(u[:, 1] > 0.4 * np.sin(3 * u[:, 0]), dtype=torch.long)
    model = nn.Sequential(nn.Linear(6, 32), nn.Softplus(), nn.Linear(32, 32), nn.Softplus(), nn.Linear(32, 2))
    model = fit_full_batch(model, x, y, steps=300)
    return model, x[:40], torch.tensor(manifold.tangent_basis(u[:40]), dtype=torch.float32)


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "free"])
def test_perturbation_stays_in_the_mode_subspace(trained_mlp, mode):
    model, x, tangent = trained_mlp
    result = GreedyProjectedPGD(model, mode=mode, step_size=0.01, max_steps=2000, refine_steps=5, seed=3)(x, tangent)
    assert result.success.float().mean() > 0.5
    outside = project_off if mode.endswith("on") else project_onto  # the part that must vanish
    residual = outside(result.delta, result.basis).norm(dim=1)
    assert (residual <= 1e-5 * result.delta.norm(dim=1).clamp_min(1e-3)).all()


def test_deepfool_matches_the_closed_form_on_linear_models(plane):
    _, x, _, model = plane
    result = DeepFoolL2(model)(x)
    torch.testing.assert_close(result.distance, closed_form("free", model, x, None), rtol=1e-5, atol=0)
    assert (result.steps == 1).all()  # exact after one linearisation
    # three classes: the nearest of the two rival boundaries
    weight = torch.randn(3, N_AMBIENT, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    three = linear_model(weight, torch.zeros(3, dtype=torch.float64))
    y = three(x).argmax(1)
    rival_distances = torch.stack([(three(x)[:, c] - three(x).gather(1, y[:, None])[:, 0]).abs()
                                   / (weight[c] - weight[y]).norm(dim=1) for c in range(3)], dim=1)
    rival_distances[torch.arange(len(x)), y] = torch.inf
    torch.testing.assert_close(DeepFoolL2(three)(x).distance, rival_distances.amin(1).detach(), rtol=1e-5, atol=0)


def test_deepfool_candidates_bracket_the_closed_form_at_a_fraction_of_the_gradients(plane):
    """30 linear classes: all classes linearised give the closed form (the nearest rival boundary);
    the 5 most likely ones (DeepFool's ImageNet setting) land between it and the nearest boundary
    among those 5, with 6x fewer input gradients per linearisation step."""
    _, x, _, _ = plane
    weight = torch.randn(30, N_AMBIENT, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    many = linear_model(weight, torch.zeros(30, dtype=torch.float64))
    logits = many(x).detach()
    y = logits.argmax(1)
    rival = torch.stack([(logits[:, c] - logits.gather(1, y[:, None])[:, 0]).abs()
                         / (weight[c] - weight[y]).norm(dim=1) for c in range(30)], dim=1)
    rival[torch.arange(len(x)), y] = torch.inf
    every = DeepFoolL2(many, candidates=None)(x)
    torch.testing.assert_close(every.distance, rival.amin(1), rtol=1e-5, atol=0)
    top = DeepFoolL2(many, candidates=5)(x)
    nearest_of_top5 = rival.gather(1, logits.topk(5, dim=1).indices).amin(1)
    assert (top.distance >= rival.amin(1) * (1 - 1e-5)).all() and (top.distance <= nearest_of_top5 * (1 + 1e-5)).all()
    assert top.gradient_evaluations < every.gradient_evaluations / 2  # 5 vs 30 per step; the normals are shared


def test_deepfool_and_pgd_agree_on_a_trained_mlp(trained_mlp):
    model, x, _ = trained_mlp
    step = 0.005
    coarse = GreedyProjectedPGD(model, step_size=step, max_steps=2000, refine_steps=0)(x)
    refined = GreedyProjectedPGD(model, step_size=step, max_steps=2000, refine_steps=20)(x)
    deepfool = DeepFoolL2(model)(x)
    assert coarse.success.all() and deepfool.success.all()
    assert ((coarse.distance - deepfool.distance).abs() < 2 * step).all()
    assert ((refined.distance - deepfool.distance).abs() < step).all()
    assert (refined.distance - deepfool.distance).abs().median() < 0.1 * step


def test_margin_and_cross_entropy_losses_and_repr(plane):
    _, x, tangent, model = plane
    expected = closed_form("on", model, x, tangent)
    for loss in ("margin", "ce"):
        result = GreedyProjectedPGD(model, mode="on", step_size=STEP, max_steps=200_000, loss=loss,
                                    refine_steps=30)(x, tangent)
        torch.testing.assert_close(result.distance, expected, rtol=1e-6, atol=0)
    attack = GreedyProjectedPGD(model, mode="random_off", step_size=0.02, max_steps=50, refine_steps=4, loss="ce",
                                dim=2, seed=9)
    assert repr(attack) == ("GreedyProjectedPGD(mode='random_off', step_size=0.02, max_steps=50, refine_steps=4, "
                            "loss='ce', dim=2, seed=9, normal_rounds=2)")
    assert "overshoot=0.02" in repr(DeepFoolL2(model))


def test_summary_and_input_checks(plane):
    _, x, tangent, model = plane
    result = GreedyProjectedPGD(model, mode="random_on", step_size=0.01, max_steps=20_000, dim=2)(x)
    assert result.basis.basis().shape == (len(x), N_AMBIENT, 2)
    summary = result.summary()
    assert summary["success_rate"] == 1.0 and summary["mode"] == "random_on"
    assert summary["median_distance"] == pytest.approx(float(np.median(result.distance.numpy())))
    assert summary["mean_distance"] == pytest.approx(float(result.distance.mean()))
    assert summary["gradient_evaluations"] == result.gradient_evaluations
    with pytest.raises(ValueError, match="mode"):
        GreedyProjectedPGD(model, mode="sideways")
    with pytest.raises(ValueError, match="tangent_bases"):
        GreedyProjectedPGD(model, mode="on")(x)
    with pytest.raises(ValueError, match="dim"):
        GreedyProjectedPGD(model, mode="random_on")(x)
    with pytest.raises(ValueError, match="tangent_bases"):
        GreedyProjectedPGD(model, mode="off")(x, tangent[:, :5])
