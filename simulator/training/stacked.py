"""Several seeds of one scene trained together: one stacked model, one optimiser.

Model i is what `simulator.training.loop.train` gives with the scene's seed replaced by seed i
(same initialisation stream, batch order, optimiser and budget). Parameters are stacked along a
new leading axis and each model reads its own mini-batch; where stacking is not possible
(adversarial training, batch norm, L-BFGS) the seeds are trained one by one.

Two users: seed agreement (`train_seeds`: S seeds on one data set, final models only) and a
sweep's runs that differ only in seed (`train_stacked`: each seed on its own data set, with
train()'s snapshots and history, so each run is stored as if it had trained alone).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.errors import TrainingError
from simulator.models import ACTIVATIONS, MLP, build_model, evaluation_network
from simulator.progress import counting_bar
from simulator.seeding import torch_generator, torch_seed
from simulator.training.loop import (
    Snapshot,
    TrainingResult,
    loss_and_accuracy,
    check_finite,
    check_finite_parameters,
    check_not_diverging,
    one_cpu_thread,
    resolve_device,
    shuffled_batches,
    smallest_margin,
    snapshot_steps,
    train,
)
from simulator.training.optimizers import FIRST_ORDER, make_optimizer


class StackStopped(TrainingError):
    """A stacked model that did not train to its end because another one failed (keep_going off)."""


@dataclass
class SeedModels:
    seeds: list[int]
    models: list[MLP]  # evaluation mode, on the CPU
    batched: bool
    note: str  # how they were trained (and why not batched, when not)
    seconds: float
    device: str


def batching_blocker(scene: Scene) -> str | None:
    """Why the S models cannot be trained as one stacked model (None: they can)."""
    if scene.train.adversarial.enabled:
        return "train.adversarial is on (its per-model attacks are not stacked)"
    if scene.model.batch_norm:
        return "model.batch_norm is on (the stacked forward pass has no batch norm)"
    if scene.train.optimizer not in FIRST_ORDER:
        return f"train.optimizer is {scene.train.optimizer} (its line search would be shared by the stacked models)"
    return None


def train_seeds(scene: Scene, data: Dataset, seeds: list[int], progress: bool = False) -> SeedModels:
    """Train one model per seed on `data`: batched (stacked parameters) where possible, else one by one.

    Raises TrainingError (naming the seed) when a model's loss stops being finite.
    """
    device = resolve_device(scene.train.device)
    blocker = batching_blocker(scene)
    started = time.perf_counter()
    if blocker is None:
        models = _train_batched(scene, data, seeds, device, progress)
        note = f"batched: {len(seeds)} stacked models, one optimiser"
    else:
        models = _train_sequential(scene, data, seeds, progress)
        note = f"sequential train() calls: {blocker}"
    return SeedModels(seeds, models, blocker is None, note, time.perf_counter() - started, str(device))


def _train_sequential(scene: Scene, data: Dataset, seeds: list[int], progress: bool) -> list[MLP]:
    models = []
    with counting_bar(progress, len(seeds), f"train {len(seeds)} seeds of {scene.name}") as advance:
        for seed in seeds:
            try:
                result = train(scene.model_copy(update={"seed": seed}), data, progress=False)
            except TrainingError as error:
                raise TrainingError(f"seed agreement, seed {seed}: {error}") from None
            models.append(result.model.eval())
            advance()
    return models


def _train_batched(scene: Scene, data: Dataset, seeds: list[int], device: torch.device, progress: bool) -> list[MLP]:
    """Seed agreement's models: every seed on the same data, the first failure stops them all."""
    results = train_stacked(scene, [data] * len(seeds), seeds, device, progress, keep_going=False)
    for seed, result in zip(seeds, results):
        if isinstance(result, TrainingError) and not isinstance(result, StackStopped):
            raise TrainingError(f"seed agreement, seed {seed}: {result}") from None
    return [result.model for result in results]


def train_stacked(scene: Scene, datasets: list[Dataset], seeds: list[int], device: torch.device,
                  progress: bool = False, keep_going: bool = True) -> list[TrainingResult | TrainingError]:
    """`train(scene with seed i, datasets[i])` for every i at once, as one stacked model.

    Parameters are stacked along a new leading axis (torch.func.stack_module_state) and every
    model reads its own mini-batch of its own data set (indices (S, B)). Summing the S losses
    gives every model exactly its own gradient, and Adam/SGD (with momentum and coupled weight
    decay) update each number from its own gradient and state only, so one optimiser over the
    stacked tensors takes the same steps as S separate ones (tests compare with `train()`).

    Each model gets what `train()` records: the snapshot schedule (full-set loss and accuracies
    of the model alone, its evaluation weights), the loss history, and `train.stop_at_margin`'s
    stop: a model that reaches the margin is snapshotted and kept as it was at that step while
    the others train on (its later updates touch only its own numbers and are discarded). A
    model whose training fails `train()`'s checks (a non-finite or diverging loss, non-finite
    weights) gets the same TrainingError in its place; with `keep_going` the others train on,
    otherwise training stops there. The data sets must have the same sizes (scenes that differ
    only in seed draw them so). Seconds: each result carries the whole stacked training's time
    divided by S, and `stacked` says how many models shared it.
    """
    from torch.func import stack_module_state

    spec = scene.train
    count = len(seeds)
    models = []
    for seed in seeds:  # the same initialisation stream as train()
        torch.manual_seed(torch_seed(seed, "init"))
        models.append(build_model(scene.model, datasets[0].ambient_dim, datasets[0].n_classes).to(device))
    params, buffers = stack_module_state(models)
    forward = stacked_forward(copy.deepcopy(models[0]).to("meta"))  # the copy holds no numbers

    def batched_loss(x, y):  # (S,) each model's mean cross-entropy as in train(), and the logits (S, B, C)
        logits = forward(params, buffers, x)
        return torch.stack([nn.functional.cross_entropy(logits[i], y[i]) for i in range(count)]), logits

    optimizer = make_optimizer(params.values(), spec.optimizer, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    on_device: dict[int, tuple[torch.Tensor, ...]] = {}  # one copy per distinct data set
    split = [on_device.setdefault(id(data), _device_tensors(data, device)) for data in datasets]
    x_train = _stack([s[0] for s in split])  # (S, N, n): an expanded view when every model shares one data set
    y_train = _stack([s[1] for s in split])  # (S, N)
    rows = torch.arange(count, device=device)[:, None]
    batch_size = min(spec.batch_size, x_train.shape[1])
    streams = [shuffled_batches(x_train.shape[1], batch_size, torch_generator(seed, "batches")) for seed in seeds]
    schedule = set(snapshot_steps(scene.snapshots, spec.steps))
    log_every = max(1, spec.steps // 200)
    running_loss = torch.zeros(count, device=device)
    running_correct = torch.zeros(count, device=device)
    snapshots: list[list[Snapshot]] = [[] for _ in seeds]
    histories: list[list[dict]] = [[] for _ in seeds]
    failed: dict[int, TrainingError] = {}
    finished: dict[int, int | None] = {}  # model index -> the step it stopped at its margin (None: trained to the end)

    def load(i: int) -> MLP:  # model i, carrying its current stacked weights
        models[i].load_state_dict({name: value[i].detach() for name, value in params.items()})
        return models[i]

    def take_snapshot(i: int, step: int) -> None:
        model = load(i)
        train_x, train_y, test_x, test_y = split[i]
        loss, train_accuracy = loss_and_accuracy(model, train_x, train_y)
        _, test_accuracy = loss_and_accuracy(model, test_x, test_y)
        check_finite(loss, step, spec.lr)
        check_finite_parameters(model, step, spec.lr)
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
        snapshots[i].append(Snapshot(step, loss, train_accuracy, test_accuracy, state))

    def guarded(i: int, check) -> None:  # model i fails with train()'s error instead of stopping the others
        try:
            check()
        except TrainingError as error:
            failed[i] = error

    def active() -> list[int]:
        return [i for i in range(count) if i not in failed and i not in finished]

    started = time.perf_counter()
    with one_cpu_thread(device), counting_bar(progress, spec.steps, f"train {count} seeds of {scene.name}") as advance:
        for i in range(count):
            guarded(i, lambda i=i: take_snapshot(i, 0))
        initial = [run[0].loss if run else float("nan") for run in snapshots]
        for step in range(1, spec.steps + 1):
            if not active() or (failed and not keep_going):
                break
            index = torch.stack([next(stream) for stream in streams]).to(device)  # (S, B)
            targets = y_train[rows, index]
            losses, logits = batched_loss(x_train[rows, index], targets)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            running_loss += losses.detach()
            running_correct += (logits.detach().argmax(dim=2) == targets).float().mean(dim=1)
            if step % log_every == 0 or step == spec.steps:  # one host sync per interval, as train()
                interval = log_every if step % log_every == 0 else step % log_every
                loss_sums, correct_sums = running_loss.cpu(), running_correct.cpu()
                for i in active():
                    mean_loss = loss_sums[i].item() / interval
                    guarded(i, lambda: (check_finite(mean_loss, step, spec.lr),
                                        check_not_diverging(mean_loss, initial[i], step, spec.lr)))
                    if i not in failed:
                        histories[i].append({"step": step, "loss": mean_loss,
                                             "accuracy": correct_sums[i].item() / interval})
                running_loss.zero_()
                running_correct.zero_()
            for i in active():
                stopping = (spec.stop_at_margin is not None and step < spec.steps and step % log_every == 0
                            and smallest_margin(load(i), *split[i][:2]) >= spec.stop_at_margin)
                if step in schedule or stopping:
                    guarded(i, lambda: take_snapshot(i, step))
                if i not in failed and (stopping or step == spec.steps):
                    finished[i] = step if stopping else None
            advance()
    share = (time.perf_counter() - started) / count
    results: list[TrainingResult | TrainingError] = []
    for i in range(count):
        if i in failed:
            results.append(failed[i])
        elif i not in finished:  # never trained to its end: another model's failure stopped them all
            first = min(failed)
            results.append(StackStopped(f"training stopped when seed {seeds[first]} failed: {failed[first]}"))
        else:
            model = models[i]
            model.load_state_dict(snapshots[i][-1].state_dict)  # the final (or margin-stop) weights
            results.append(TrainingResult(evaluation_network(model).cpu(), snapshots[i], histories[i], share,
                                          str(device), None, finished[i], stacked=count))
    return results


def _device_tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test) on `device`, as `train()` makes them."""
    return (torch.as_tensor(data.x_train, dtype=torch.float32, device=device),
            torch.as_tensor(data.y_train, dtype=torch.long, device=device),
            torch.as_tensor(data.x_test, dtype=torch.float32, device=device),
            torch.as_tensor(data.y_test, dtype=torch.long, device=device))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(S, ...) from S tensors: a copy-free expanded view when they are one and the same tensor."""
    if all(tensor is tensors[0] for tensor in tensors):
        return tensors[0].expand(len(tensors), *tensors[0].shape)
    shapes = {tuple(tensor.shape) for tensor in tensors}
    if len(shapes) > 1:
        raise ValueError(f"train_stacked: the data sets differ in size ({sorted(shapes)}); stack only scenes that "
                         f"differ in seed")
    return torch.stack(tensors)


def stacked_forward(template: nn.Module, method: str = "auto"):
    """forward(params, buffers, x (S, B, n)) -> logits (S, B, C) of S stacked copies of `template`.

    method "matmul" (what "auto" picks for the project's MLP: Linear layers and elementwise
    activations, run in registration order) runs each layer as one batched matrix product
    (torch.baddbmm): the same arithmetic as S separate forward passes (bitwise on the CPU,
    tested) and about 1.5-2x faster than "vmap" (torch.func.vmap of functional_call, which any
    module can use) at these sizes, where vmap's per-operation batching cost in the backward
    pass eats most of the gain of batching (benchmarks/seed_training_speed.py).
    """
    from torch.func import functional_call, vmap

    layers = [(name, module) for name, module in template.named_modules() if not list(module.children())]
    plain = isinstance(template, MLP) and all(isinstance(module, (nn.Linear, *ACTIVATIONS.values()))
                                              for _, module in layers)
    if method == "vmap" or (method == "auto" and not plain):
        return vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))
    if not plain:
        raise ValueError(f"stacked_forward: method 'matmul' needs the plain MLP, got {type(template).__name__}")

    def forward(params, buffers, x):
        for name, module in layers:
            if isinstance(module, nn.Linear):
                weight, bias = params[f"{name}.weight"].transpose(1, 2), params.get(f"{name}.bias")
                x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias[:, None, :], x, weight)
            else:
                x = module(x)  # an elementwise activation
        return x

    return forward
