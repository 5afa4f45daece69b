"""Features-not-bugs relabelling (Ilyas et al., "Adversarial Examples Are Not Bugs, They Are
Features", arXiv 1905.02175), on a scene's trained model.

1. Every training point x with class y gets a target class t: uniformly random (Ilyas's
   D_rand: the original features then say nothing about t) or (y + 1) mod C (D_det: they point
   away from t).
2. x' = x + delta, delta a targeted L2 PGD perturbation (||delta|| <= epsilon) that makes the
   trained model predict t; the new training set is {(x', t)} alone.
3. A fresh model (same architecture and training, another seed) is trained on it and tested on
   the *clean* test set with the true labels.

Well above chance means the perturbations moved features that generalise to the real task
(the stretchy/non-robust-features view); chance means they were bugs of one model. The
pipeline stores the result in metrics.json["relabel"] and draws relabel.png from it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from simulator.attacks.bounded_pgd import BoundedProjectedPGD, bounded_budget
from simulator.data import Dataset
from simulator.runs.loading import Run
from simulator.seeding import numpy_rng, torch_seed
from simulator.training.loop import resolve_device, train


def relabel_settings(run: Run) -> dict:
    """experiments.relabel with its data-dependent defaults filled in (input units)."""
    spec = run.scene.experiments.relabel
    return {"target": spec.target, **bounded_budget(spec.epsilon, spec.steps, spec.step_size, run.data_radius())}


def relabelled_training_set(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, n_classes: int,
                            settings: dict, rng: np.random.Generator, device: torch.device,
                            chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x', t, reached): targeted adversarial points, their target classes, and whether the
    model predicts the target at x' (Ilyas et al. keep every point either way)."""
    if settings["target"] == "random":
        target = rng.integers(0, n_classes, len(y))
    else:
        target = (y + 1) % n_classes
    model = model.to(device).eval()
    attack = BoundedProjectedPGD(model, settings["epsilon"], settings["steps"], settings["step_size"])
    moved, reached = [], []
    for start in range(0, len(x), chunk):
        points = torch.as_tensor(x[start:start + chunk], dtype=torch.float32, device=device)
        goal = torch.as_tensor(target[start:start + chunk], device=device)
        adversarial = points + attack(points, target=goal)
        with torch.no_grad():
            reached.append((model(adversarial).argmax(1) == goal).cpu().numpy())
        moved.append(adversarial.cpu().numpy())
    return np.concatenate(moved), target.astype(np.int64), np.concatenate(reached)


def relabel_experiment(run: Run, progress: bool = True) -> dict:
    """Run the experiment on the run's final model; returns the record (metrics.json "relabel")."""
    from scipy.stats import binomtest

    scene, data = run.scene, run.data
    settings = relabel_settings(run)
    device = resolve_device(scene.train.device)
    started = time.perf_counter()
    x_new, t_new, reached = relabelled_training_set(
        run.final_model(), data.x_train, data.y_train, data.n_classes, settings,
        numpy_rng(scene.seed, "relabel"), device)
    relabelled = Dataset(x_train=x_new, y_train=t_new, u_train=data.u_train, x_test=data.x_test,
                         y_test=data.y_test, u_test=data.u_test, n_classes=data.n_classes)
    # A fresh model: another initialisation and batch order, plain training, two snapshots only.
    fresh_scene = scene.model_copy(update={
        "seed": torch_seed(scene.seed, "relabel_model") % 2**31,
        "train": scene.train.model_copy(update={"adversarial": scene.train.adversarial.model_copy(
            update={"enabled": False})}),
        "snapshots": scene.snapshots.model_copy(update={"schedule": "log", "count": 2}),
        "name": f"{scene.name} (relabelled)"})
    result = train(fresh_scene, relabelled, progress=progress)
    final = result.snapshots[-1]
    n_test = len(data.y_test)
    correct = round(final.test_accuracy * n_test)
    interval = binomtest(correct, n_test).proportion_ci(0.95, method="wilson")
    chance = float(np.bincount(data.y_test, minlength=data.n_classes).max() / n_test)  # majority class
    report = {
        "settings": settings,
        "n_train": int(len(t_new)),
        "target_reached": float(reached.mean()),
        "target_equals_true_class": float(np.mean(t_new == data.y_train)),
        "fresh_model_train_accuracy": final.train_accuracy,  # on the relabelled set
        "fresh_model_clean_test_accuracy": final.test_accuracy,
        "clean_test_accuracy_interval": [float(interval.low), float(interval.high)],
        "chance": chance,
        "uniform_chance": 1.0 / data.n_classes,
        "original_model_test_accuracy": run.snapshots[-1].test_accuracy,
        "seconds": time.perf_counter() - started,
    }
    return report
