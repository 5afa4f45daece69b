"""A sweep's seed-only runs trained as one stacked model (issue 16 item 5): which runs stack, and
that every stacked run is the run `train()` gives alone, bit for bit on the CPU.

The sweep-level check (a stacked sweep's table equals the unstacked Ray one, and a stacked run's
stored metrics equal `sim run` of its scene) is in tests/test_sweeps.py, whose shared tiny sweep
runs with --stack-seeds on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_OVERRIDES
from simulator.config.loading import load_scene
from simulator.config.sweep import BackendSpec, SweepRun
from simulator.data import make_dataset
from simulator.errors import TrainingError
from simulator.sweeps.runner import stacked_jobs, stacking_applies
from simulator.training.loop import train
from simulator.training.stacked import StackStopped, train_stacked

SCENES = Path(__file__).resolve().parents[1] / "scenes"


def tiny_scene(**overrides):
    return load_scene(SCENES / "sheet_two_class.yaml", overrides={**TINY_OVERRIDES, "train.steps": 60, **overrides})


def sweep_run(name: str, **overrides) -> SweepRun:
    return SweepRun(name, overrides, tiny_scene(name=name, **overrides))


def names(jobs: list[list[SweepRun]]) -> list[list[str]]:
    return [[run.name for run in job] for job in jobs]


# --------------------------------------------------------------------------- which runs stack


def test_runs_that_differ_only_in_seed_stack_and_the_rest_run_alone(tmp_path):
    runs = [sweep_run("a0", seed=0), sweep_run("b0", seed=0, **{"model.init_scale": 0.3}), sweep_run("a1", seed=1),
            sweep_run("b1", seed=1, **{"model.init_scale": 0.3}), sweep_run("a2", seed=2)]
    on = BackendSpec(stack_seeds="on")
    assert names(stacked_jobs(runs, on, tmp_path)) == [["a0", "a1", "a2"], ["b0", "b1"]]
    assert names(stacked_jobs(runs, on.model_copy(update={"max_stacked": 2}), tmp_path)) == \
        [["a0", "a1"], ["b0", "b1"], ["a2"]]
    assert names(stacked_jobs(runs, BackendSpec(stack_seeds="off"), tmp_path)) == [[r.name] for r in runs]
    # A run with a killed run's staging folder continues that folder alone.
    (tmp_path / ".a1.partial-killed").mkdir()
    (tmp_path / ".a1.partial-killed" / ".sim-run").write_text("{}")
    assert names(stacked_jobs(runs, on, tmp_path)) == [["a0", "a2"], ["b0", "b1"], ["a1"]]


def test_stacking_follows_the_device_and_never_takes_scenes_it_cannot_stack(monkeypatch):
    scene = tiny_scene(**{"train.device": "auto"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not stacking_applies(scene, BackendSpec())  # auto: only on CUDA
    assert stacking_applies(scene, BackendSpec(stack_seeds="on"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert stacking_applies(scene, BackendSpec())
    assert not stacking_applies(tiny_scene(), BackendSpec())  # train.device: cpu (the tiny overrides)
    assert stacking_applies(scene, BackendSpec(name="ray", gpus_per_run=0.25))
    assert not stacking_applies(scene, BackendSpec(name="ray"))  # Ray runs without a GPU share
    for blocked in ({"model.batch_norm": True, "train.batch_size": 32}, {"train.optimizer": "lbfgs"},
                    {"train.adversarial.enabled": True}):
        assert not stacking_applies(tiny_scene(**blocked), BackendSpec(stack_seeds="on")), blocked


# --------------------------------------------------------------------------- stacked = alone


@pytest.mark.parametrize("overrides", [{}, {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9,
                                            "train.weight_decay": 1e-3, "model.activation": "tanh"}])
def test_each_stacked_run_is_bitwise_the_run_trained_alone_on_its_own_data(overrides):
    """Snapshots (steps, losses, accuracies, weights), loss history and final model of each seed,
    against `train()` of that seed on its own data set (the data differ from seed to seed)."""
    seeds = [0, 5, 2]
    scenes = [tiny_scene(seed=seed, **overrides) for seed in seeds]
    datasets = [make_dataset(scene) for scene in scenes]
    assert not (datasets[0].x_train == datasets[1].x_train).all()  # each model really reads its own data
    results = train_stacked(scenes[0], datasets, seeds, torch.device("cpu"))
    for scene, data, stacked in zip(scenes, datasets, results):
        alone = train(scene, data, progress=False)
        assert [s.scalars() for s in stacked.snapshots] == [s.scalars() for s in alone.snapshots]
        assert stacked.history == alone.history
        for ours, theirs in zip(stacked.snapshots, alone.snapshots):
            for name in theirs.state_dict:
                assert torch.equal(ours.state_dict[name], theirs.state_dict[name]), (scene.seed, ours.step, name)
        for ours, theirs in zip(stacked.model.parameters(), alone.model.parameters()):
            assert torch.equal(ours, theirs)
        assert stacked.stacked == 3 and alone.stacked is None
    assert results[0].snapshots[-1].loss != results[1].snapshots[-1].loss  # different seeds, different runs


def test_a_diverging_seed_fails_with_trains_own_error_and_the_others_train_on():
    """Seeds of one stack share every setting, so one seed is made to diverge through its data:
    seed 1's inputs are scaled up 1e6, and SGD at lr 0.5 diverges on them (alone too)."""
    seeds = [0, 1, 2]
    scenes = [tiny_scene(seed=seed, **{"train.optimizer": "sgd", "train.lr": 0.5}) for seed in seeds]
    datasets = [make_dataset(scene) for scene in scenes]
    datasets[1].x_train *= 1e6
    results = train_stacked(scenes[0], datasets, seeds, torch.device("cpu"))
    with pytest.raises(TrainingError) as alone:
        train(scenes[1], datasets[1], progress=False)
    assert isinstance(results[1], TrainingError) and str(results[1]) == str(alone.value)
    for i in (0, 2):
        reference = train(scenes[i], datasets[i], progress=False)
        assert [s.scalars() for s in results[i].snapshots] == [s.scalars() for s in reference.snapshots]
    # Seed agreement's setting: the first failure stops the stack, and the others say why.
    stopped = train_stacked(scenes[0], datasets, seeds, torch.device("cpu"), keep_going=False)
    assert str(stopped[1]) == str(alone.value)
    assert all(isinstance(stopped[i], StackStopped) and "seed 1 failed" in str(stopped[i]) for i in (0, 2))


def test_data_sets_of_different_sizes_are_refused():
    scenes = [tiny_scene(seed=0), tiny_scene(seed=1, **{"data.n_train": 150})]
    with pytest.raises(ValueError, match="differ in size"):
        train_stacked(scenes[0], [make_dataset(scene) for scene in scenes], [0, 1], torch.device("cpu"))
