"""Training with decision-boundary snapshots.

A snapshot is the model's weights at one optimiser step plus its loss and accuracies. The
schedule can be log-uniform (dense early), because the dimpled-manifold paper claims a fast
"clinging" phase in the first steps followed by a slow "dimpling" phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from simulator.attacks.subspaces import tangent_spaces
from simulator.config.scene import Scene, SnapshotSpec
from simulator.data import Dataset
from simulator.errors import TrainingError
from simulator.models import MLP, build_evaluation_model, build_model, evaluation_mode, evaluation_network
from simulator.seeding import torch_generator, torch_seed
from simulator.training.adversarial import (
    AdversarialBatches,
    resolved_adversarial_settings,
)
from simulator.training.optimizers import make_optimizer, optimizer_step


@dataclass
class Snapshot:
    """The model after `step` optimiser steps (step 0 = the initialisation)."""

    step: int
    loss: float  # full training-set cross-entropy
    train_accuracy: float
    test_accuracy: float
    state_dict: dict[str, torch.Tensor]  # on the CPU: the evaluation network (models.evaluation_network)

    def scalars(self) -> dict:
        return {"step": self.step, "loss": self.loss, "train_accuracy": self.train_accuracy,
                "test_accuracy": self.test_accuracy}


@dataclass
class TrainingResult:
    model: MLP  # the evaluation network after training (batch norm folded in), on the CPU
    snapshots: list[Snapshot]
    history: list[dict] = field(default_factory=list)  # running batch loss/accuracy
    seconds: float = 0.0
    device: str = "cpu"
    adversarial: dict | None = None  # the resolved train.adversarial settings, when it was on
    stopped_at_margin: int | None = None  # the step train.stop_at_margin ended training at, if it did
    stacked: int | None = None  # trained as one of this many stacked models (`seconds` is its share of their time)


def resolve_device(requested: str) -> torch.device:
    """'auto' -> CUDA when available, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "train.device: 'cuda' was requested but PyTorch sees no CUDA device here; "
            "use device: auto (GPU when present, else CPU) or device: cpu."
        )
    return torch.device(requested)


def snapshot_steps(spec: SnapshotSpec, steps: int) -> list[int]:
    """Sorted unique steps at which to snapshot; always includes 0 and `steps`."""
    if spec.schedule == "every":
        chosen = set(range(0, steps + 1, spec.every))
    else:
        # log-uniform over [1, steps]; rounding merges early duplicates, so fill up to `count`
        chosen = {0}
        for candidates in (spec.count - 1, 2 * spec.count, 8 * spec.count):
            chosen |= set(np.unique(np.round(np.geomspace(1, steps, candidates)).astype(int)).tolist())
            if len(chosen) >= min(spec.count, steps + 1):
                break
        if len(chosen) > spec.count:  # keep an evenly spread (in log-step) subset of the extras
            ordered = sorted(chosen)
            keep = np.unique(np.round(np.linspace(0, len(ordered) - 1, spec.count)).astype(int))
            chosen = {ordered[i] for i in keep}
    chosen.add(steps)
    return sorted(chosen)


def shuffled_batches(n_items: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless mini-batch index tensors (CPU): a fresh permutation from `generator` each epoch,
    the incomplete tail of an epoch dropped, so every batch has exactly `batch_size` items."""
    while True:
        permutation = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items - batch_size + 1, batch_size):
            yield permutation[start:start + batch_size]


def smallest_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """min over the set of z_y - max_{j != y} z_j, y the true class (negative where misclassified),
    of the model in evaluation mode."""
    with torch.no_grad(), evaluation_mode(model):
        logits = torch.cat([model(chunk) for chunk in x.split(65536)])
        true_logit = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf"))
        return (true_logit - others.max(dim=1).values).min().item()


def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on the whole set, in evaluation batches and evaluation mode."""
    with torch.no_grad(), evaluation_mode(model):
        logits = torch.cat([model(chunk) for chunk in x.split(65536)])
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


@dataclass
class TrainingCheckpoint:
    """Everything needed to continue training after a kill exactly as if it had never stopped:
    the weights and optimiser state after `step`, the snapshots and loss history so far, and the
    running (not yet logged) batch sums. The batch order needs no state: `train` replays the
    seeded batch stream up to `step`."""

    step: int
    model_state: dict[str, torch.Tensor]  # the trained network's (batch norm's running statistics included)
    optimizer_state: dict
    snapshots: list[Snapshot]
    history: list[dict]
    running_loss: torch.Tensor
    running_correct: torch.Tensor
    seconds: float  # training time spent before the checkpoint


def train(scene: Scene, data: Dataset, progress: bool = True, resume_from: TrainingCheckpoint | None = None,
          on_checkpoint: Callable[[TrainingCheckpoint], None] | None = None) -> TrainingResult:
    """Train the scene's MLP on `data`, recording the snapshot schedule.

    `on_checkpoint` is called at every snapshot before the last with a `TrainingCheckpoint`;
    `resume_from` continues from one (same scene and data), ending with the same weights, the
    same snapshots and the same history as an uninterrupted run.
    With `train.stop_at_margin` set, training ends at the first loss-log step where every training
    point has at least that margin; the last snapshot is then the model at that step.
    Raises TrainingError when the loss stops being finite or grows far above its start.
    """
    spec = scene.train
    device = resolve_device(spec.device)
    torch.manual_seed(torch_seed(scene.seed, "init"))
    model = build_model(scene.model, data.ambient_dim, data.n_classes).to(device)
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=device)
    y_test = torch.as_tensor(data.y_test, dtype=torch.long, device=device)
    optimizer = make_optimizer(model.parameters(), spec.optimizer, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    batch_size = min(spec.batch_size, len(x_train))
    # The batch order comes from a CPU generator: the same on every device, and replayable on resume.
    batch_stream = shuffled_batches(len(x_train), batch_size, torch_generator(scene.seed, "batches"))
    schedule = set(snapshot_steps(scene.snapshots, spec.steps))
    adversary = adversarial_settings = None
    if spec.adversarial.enabled:
        adversarial_settings = resolved_adversarial_settings(scene, data)
        adversary = AdversarialBatches(adversarial_settings, tangent_spaces(scene.manifold.build(), data.u_train,
                                                                            device=device))
    log_every = max(1, spec.steps // 200)

    snapshots: list[Snapshot] = []
    history: list[dict] = []
    running_loss = torch.zeros((), device=device)
    running_correct = torch.zeros((), device=device)
    first_step, seconds_before = 1, 0.0
    if resume_from is not None:
        model.load_state_dict(resume_from.model_state)
        optimizer.load_state_dict(resume_from.optimizer_state)
        snapshots, history = list(resume_from.snapshots), list(resume_from.history)
        running_loss.copy_(resume_from.running_loss)
        running_correct.copy_(resume_from.running_correct)
        first_step, seconds_before = resume_from.step + 1, resume_from.seconds
        for _ in range(resume_from.step):  # the batches already trained on
            next(batch_stream)

    def take_snapshot(step: int) -> None:
        loss, train_accuracy = loss_and_accuracy(model, x_train, y_train)
        _, test_accuracy = loss_and_accuracy(model, x_test, y_test)
        check_finite(loss, step, spec.lr)
        check_finite_parameters(model, step, spec.lr)
        network = evaluation_network(model) if model.batch_norm else model  # no copy when there is nothing to fold
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in network.state_dict().items()}
        snapshots.append(Snapshot(step, loss, train_accuracy, test_accuracy, state))

    def checkpoint(step: int) -> TrainingCheckpoint:
        return TrainingCheckpoint(
            step, {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()},
            _to_cpu(optimizer.state_dict()), list(snapshots), list(history), running_loss.detach().cpu().clone(),
            running_correct.detach().cpu().clone(), seconds_before + time.perf_counter() - started)

    def margin_reached(step: int) -> bool:
        # Only on log steps (one full-set forward pass per log interval), and only when asked:
        # without stop_at_margin training runs exactly as before.
        if spec.stop_at_margin is None or step % log_every != 0:
            return False
        return smallest_margin(model, x_train, y_train) >= spec.stop_at_margin

    stopped_at = None
    started = time.perf_counter()
    with one_cpu_thread(device), _progress_bar(progress, spec.steps, scene.name) as (bar, task):
        if resume_from is None:
            take_snapshot(0)
        elif bar is not None:
            bar.update(task, completed=resume_from.step)
        initial_loss = snapshots[0].loss
        for step, index in zip(range(first_step, spec.steps + 1), batch_stream):
            index = index.to(device)
            inputs, targets = x_train[index], y_train[index]
            if adversary is not None:
                with evaluation_mode(model):  # attack the network as it classifies, without moving batch norm
                    inputs = adversary(model, inputs, targets, index)

            def batch_loss(inputs=inputs, targets=targets):
                logits = model(inputs)
                return nn.functional.cross_entropy(logits, targets), logits

            loss, logits = optimizer_step(optimizer, batch_loss, spec.weight_decay)
            running_loss += loss
            running_correct += (logits.argmax(dim=1) == targets).float().mean()
            if step % log_every == 0 or step == spec.steps:
                # One host sync per log interval, not per step (matters on a GPU).
                count = log_every if step % log_every == 0 else step % log_every
                mean_loss = running_loss.item() / count
                check_finite(mean_loss, step, spec.lr)
                check_not_diverging(mean_loss, initial_loss, step, spec.lr)
                history.append({"step": step, "loss": mean_loss, "accuracy": running_correct.item() / count})
                running_loss.zero_()
                running_correct.zero_()
                if bar is not None:
                    bar.update(task, completed=step, loss=mean_loss, accuracy=history[-1]["accuracy"])
            stopping = step < spec.steps and margin_reached(step)
            if step in schedule or stopping:
                take_snapshot(step)  # when stopping, the last snapshot is the final model
                if on_checkpoint is not None and step < spec.steps and not stopping:
                    on_checkpoint(checkpoint(step))
            if stopping:
                stopped_at = step
                break
    seconds = seconds_before + time.perf_counter() - started
    return TrainingResult(evaluation_network(model).cpu(), snapshots, history, seconds, str(device),
                          adversarial_settings, stopped_at)


def _to_cpu(value):
    """An optimiser state dict with every tensor copied to the CPU (for a device-free checkpoint)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


class one_cpu_thread:
    """Train small MLPs on one CPU thread: their batches gain nothing from intra-op threads, and
    on a busy 2-core machine two spinning OpenMP threads made training ~100x slower (measured)."""

    def __init__(self, device: torch.device):
        self.device, self.threads = device, torch.get_num_threads()

    def __enter__(self):
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


# A run whose batch loss climbs this far above the initial full-set loss has diverged, even if
# every number is still finite (Adam at lr 1000 reaches 1e10; SGD at lr 1000, 1e23). A healthy
# run's loss spikes by a few times at most; cross-entropy at initialisation is about log(classes).
DIVERGENCE_FACTOR = 100.0


def check_not_diverging(loss: float, initial_loss: float, step: int, lr: float) -> None:
    limit = DIVERGENCE_FACTOR * max(initial_loss, 1.0)
    if loss > limit:
        raise TrainingError(
            f"Training diverged at step {step}: the batch loss reached {loss:.3g}, more than "
            f"{DIVERGENCE_FACTOR:g} times the initial loss ({initial_loss:.3g}), with train.lr = {lr:g}. "
            f"Lower the learning rate (try train.lr: {lr / 10:g}) or the model's init_scale, then run again; "
            f"nothing was written."
        )


def check_finite_parameters(model: nn.Module, step: int, lr: float) -> None:
    """Non-finite weights can hide behind a finite loss (a dead ReLU layer masks them)."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingError(
                f"Training diverged at step {step}: the weights {name} are no longer finite, with train.lr = "
                f"{lr:g}. Lower the learning rate (try train.lr: {lr / 10:g}) or the model's init_scale, then "
                f"run again; nothing was written."
            )


def check_finite(loss: float, step: int, lr: float) -> None:
    if not np.isfinite(loss):
        raise TrainingError(
            f"Training diverged at step {step}: the loss became {loss} with train.lr = {lr:g}. "
            f"Lower the learning rate (try train.lr: {lr / 10:g}) or the model's init_scale, "
            f"then run again; nothing was written."
        )


class _progress_bar:
    """A rich progress bar with loss and accuracy, or nothing when `enabled` is False."""

    def __init__(self, enabled: bool, total: int, name: str | None):
        self.enabled, self.total, self.name = enabled, total, name or "training"
        self.progress = None

    def __enter__(self):
        if not self.enabled:
            return None, None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[accuracy]:.3f}"),
            TimeRemainingColumn(), transient=False,
        )
        self.progress.__enter__()
        task = self.progress.add_task(f"train {self.name}", total=self.total, loss=float("nan"), accuracy=0.0)
        return self.progress, task

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def load_snapshot_model(scene: Scene, in_dim: int, n_classes: int, state_dict: dict) -> MLP:
    """An evaluation-mode MLP carrying a snapshot's weights."""
    model = build_evaluation_model(scene.model, in_dim, n_classes)
    model.load_state_dict(state_dict)
    return model.eval()
