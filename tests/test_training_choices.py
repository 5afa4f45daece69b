"""Batch norm and the second-order optimizer (L-BFGS): what the training-choice studies vary
beyond initialisation and weight decay. Each checked against a closed form or a second method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from simulator import load_run, load_scene, run_scene
from simulator.config.resources import ADAM_COPIES, LBFGS_COPIES, estimate_memory, mlp_parameters
from simulator.data import make_dataset
from simulator.models import MLP, build_evaluation_model, build_model, evaluation_network
from simulator.training.loop import train
from simulator.training.optimizers import make_optimizer, optimizer_step
from simulator.training.stacked import batching_blocker, train_seeds

from conftest import SCENES


def trained_batch_norm_mlp(bias: bool) -> tuple[MLP, torch.Tensor]:
    """A batch-norm MLP whose running statistics, scales and shifts are far from their defaults."""
    torch.manual_seed(0)
    model = MLP(6, [9, 7], 3, activation="tanh", bias=bias, batch_norm=True)
    x = torch.randn(256, 6) * 2.5 + 0.7
    with torch.no_grad():
        for _ in range(20):
            model(x)  # training-mode passes move the running statistics
        for module in model.body:
            if isinstance(module, nn.BatchNorm1d):
                module.weight.uniform_(0.3, 3.0)
                module.bias.normal_()
    return model, x


@pytest.mark.parametrize("bias", [True, False])
def test_folded_batch_norm_is_the_evaluation_mode_network(bias):
    """Second method: the unfolded network in evaluation mode. The folded one is a plain MLP
    whose weights load into the model snapshots are stored as."""
    model, x = trained_batch_norm_mlp(bias)
    folded = evaluation_network(model)
    assert not any(isinstance(module, nn.BatchNorm1d) for module in folded.modules())
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(folded.features(x).numpy(), model.features(x).numpy(), rtol=1e-5, atol=1e-5)
    spec = load_scene(SCENES / "sheet_two_class.yaml",
                      overrides={"model.batch_norm": True, "model.bias": bias, "model.hidden": [9, 7]}).model
    build_evaluation_model(spec, 6, 3).load_state_dict(folded.state_dict())  # strict: same names and shapes
    first = folded.body[0]
    norm = model.body[1]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # the closed form, written out
    expected_bias = scale * ((model.body[0].bias if bias else 0) - norm.running_mean) + norm.bias
    torch.testing.assert_close(first.weight, scale[:, None] * model.body[0].weight)
    torch.testing.assert_close(first.bias, expected_bias)


def test_init_scale_leaves_batch_norm_at_its_identity():
    spec = load_scene(SCENES / "sheet_two_class.yaml", overrides={"model.batch_norm": True,
                                                                   "model.init_scale": 0.1}).model
    model = build_model(spec, 3, 2)
    norms = [module for module in model.body if isinstance(module, nn.BatchNorm1d)]
    assert len(norms) == len(spec.hidden)
    assert all(torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any() for norm in norms)


@pytest.fixture(scope="module")
def batch_norm_run(tmp_path_factory):
    from conftest import TINY_OVERRIDES

    overrides = {**TINY_OVERRIDES, "model.batch_norm": True, "train.batch_size": 32}
    summary = run_scene(load_scene(SCENES / "sheet_two_class.yaml", overrides=overrides),
                        tmp_path_factory.mktemp("bn"), progress=False)
    return load_run(summary.path)


def test_batch_norm_run_measures_the_evaluation_mode_network(batch_norm_run):
    """Snapshots hold the folded network; its recorded loss and accuracy are those of the
    evaluation-mode network, recomputed here from a retrained copy (same seed, same batches)."""
    run = batch_norm_run
    assert "batch_norm: true" in (run.path / "scene.yaml").read_text()
    data = make_dataset(run.scene)
    result = train(run.scene, data, progress=False)
    x = torch.tensor(data.x_train, dtype=torch.float32)
    y = torch.tensor(data.y_train)
    final = run.snapshots[-1]
    with torch.no_grad():
        loss = nn.functional.cross_entropy(final.model()(x), y).item()
        stored = final.model()(x)
        retrained = result.model(x)
    assert loss == pytest.approx(final.loss, rel=1e-6)
    torch.testing.assert_close(stored, retrained)
    assert final.train_accuracy > 0.6  # learning, not chance (0.5), after 60 steps


def test_old_scene_files_keep_their_digest_without_batch_norm():
    """model.batch_norm is left out of the resolved scene at its default (older runs' digests)."""
    scene = load_scene(SCENES / "sheet_two_class.yaml")
    assert "batch_norm" not in yaml.safe_load(scene.to_yaml())["model"]
    with_norm = load_scene(SCENES / "sheet_two_class.yaml", overrides={"model.batch_norm": True})
    assert yaml.safe_load(with_norm.to_yaml())["model"]["batch_norm"] is True


# --------------------------------------------------------------------------- L-BFGS


def test_lbfgs_with_weight_decay_reaches_the_ridge_solution():
    """Closed form: minimising 0.5 mean (X w - y)^2 with coupled weight decay lambda (gradient
    + lambda w) gives w = (X^T X / N + lambda I)^-1 X^T y / N. Full-batch L-BFGS, through the
    same optimizer_step the training loop uses, reaches it; so does SGD with torch's weight decay."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 3, 0.2, 1, 5.0],
                                                                                      dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2, 0.5, 3, 0.1], dtype=torch.float64) + 0.3 * torch.randn(200, generator=generator,
                                                                                          dtype=torch.float64)
    decay = 0.05
    ridge = torch.linalg.solve(x.T @ x / len(x) + decay * torch.eye(5, dtype=torch.float64), x.T @ y / len(x))
    # torch's LBFGS stops once the loss changes by less than 1e-9 (tolerance_change), about 3e-5
    # from the solution here; a decay off by a factor of 2 would move it by over 1e-2.
    doubled = torch.linalg.solve(x.T @ x / len(x) + 2 * decay * torch.eye(5, dtype=torch.float64), x.T @ y / len(x))
    assert (doubled - ridge).abs().max() > 1e-2
    for name, lr, steps, tolerance in [("lbfgs", 1.0, 5, 1e-4), ("sgd", 0.02, 4000, 1e-9)]:
        w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
        optimizer = make_optimizer([w], name, lr=lr, weight_decay=decay, momentum=0.9)

        def batch_loss(w=w):
            prediction = x @ w
            return 0.5 * ((prediction - y) ** 2).mean(), prediction

        for _ in range(steps):
            optimizer_step(optimizer, batch_loss, decay)
        np.testing.assert_allclose(w.detach().numpy(), ridge.numpy(), rtol=0, atol=tolerance, err_msg=name)


def test_lbfgs_step_returns_the_loss_before_its_update():
    w = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([w], "lbfgs", lr=1.0, weight_decay=0.0)
    loss, prediction = optimizer_step(optimizer, lambda: (0.5 * ((w - 1) ** 2).sum(), w * 1), 0.0)
    assert loss.item() == 0.5 and prediction.item() == 2.0
    assert w.item() == pytest.approx(1.0, abs=1e-12)  # a 1-D quadratic: the line search lands on its minimum


def test_lbfgs_full_batch_training_converges_further_than_adam(tiny_overrides):
    """On the same scene, 10 full-batch L-BFGS steps (200 iterations at most) end at a far lower
    training loss than 60 Adam steps at its default rate."""
    base = {**tiny_overrides, "train.batch_size": 200}
    losses = {}
    for name, lr, steps in [("adam", 3e-3, 60), ("lbfgs", 1.0, 10)]:
        scene = load_scene(SCENES / "subspace_highdim.yaml", overrides={**base, "train.optimizer": name,
                                                                         "train.lr": lr, "train.steps": steps})
        losses[name] = train(scene, make_dataset(scene), progress=False).snapshots[-1].loss
    assert losses["lbfgs"] < losses["adam"] / 100


def test_lbfgs_memory_estimate_counts_its_curvature_pairs():
    scene = load_scene(SCENES / "subspace_highdim.yaml")
    lbfgs = load_scene(SCENES / "subspace_highdim.yaml", overrides={"train.optimizer": "lbfgs"})
    parameters = mlp_parameters(100, [128, 128], 2)
    key = "training (model.hidden, train.batch_size)"
    assert estimate_memory(lbfgs).stages[key] - estimate_memory(scene).stages[key] == \
        (LBFGS_COPIES - ADAM_COPIES) * parameters * 4


def test_seed_agreement_trains_batch_norm_and_lbfgs_scenes_one_by_one(tiny_overrides):
    """The stacked trainer has no batch norm and no shared line search: those scenes fall back
    to train() per seed, with the reason in the note, and give train()'s models."""
    assert batching_blocker(load_scene(SCENES / "sheet_two_class.yaml")) is None
    scene = load_scene(SCENES / "sheet_two_class.yaml", overrides={**tiny_overrides, "model.batch_norm": True})
    assert "batch_norm" in batching_blocker(scene)
    lbfgs = load_scene(SCENES / "sheet_two_class.yaml", overrides={**tiny_overrides, "train.optimizer": "lbfgs"})
    assert "lbfgs" in batching_blocker(lbfgs)
    data = make_dataset(scene)
    seeds = train_seeds(scene, data, [0, 4])
    assert not seeds.batched and "batch_norm" in seeds.note
    alone = train(scene.model_copy(update={"seed": 4}), data, progress=False).model
    x = torch.tensor(data.x_test, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(seeds.models[1](x), alone(x), rtol=0, atol=0)


def test_batch_norm_with_batches_of_one_is_refused_before_training():
    from simulator.errors import SceneError

    with pytest.raises(SceneError, match="model.batch_norm: batch norm normalises each unit over its batch"):
        load_scene(SCENES / "sheet_two_class.yaml", overrides={"model.batch_norm": True, "train.batch_size": 1})


def test_folding_batch_norm_draws_nothing_from_the_global_random_state():
    model, _ = trained_batch_norm_mlp(bias=True)
    torch.manual_seed(5)
    evaluation_network(model)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
