"""Several seeds of one scene trained together: one stacked model, one optimiser.

Model i is what `simulator.training.loop.train` gives with the scene's seed replaced by seed i
(same initialisation stream, batch order, optimiser and budget). Parameters are stacked along a
new leading axis and each model reads its own mini-batch; where stacking is not possible
(adversarial training, batch norm, L-BFGS) the seeds are trained one by one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.errors import TrainingError
from simulator.geometry.margins import class_margins
from simulator.models import ACTIVATIONS, MLP, build_model
from simulator.progress import counting_bar
from simulator.seeding import torch_generator, torch_seed
from simulator.training.loop import (
    check_finite,
    one_cpu_thread,
    resolve_device,
    shuffled_batches,
    train,
)
from simulator.training.optimizers import FIRST_ORDER, make_optimizer


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
    """The loop of `train()` for S models at once.

    Parameters are stacked along a new leading axis (torch.func.stack_module_state) and every
    model reads its own mini-batch (indices (S, B)). Summing the S losses gives every model
    exactly its own gradient, and Adam/SGD (with momentum and coupled weight decay) update each
    number from its own gradient and state only, so one optimiser over the stacked tensors takes
    the same steps as S separate ones (tests compare with `train()`).

    With `train.stop_at_margin`, each model is kept as it was at the first log step where all its
    training points reach the margin, as `train()` stops there; the others train on (a stopped
    model's later updates touch only its own numbers, and are discarded).
    """
    from torch.func import stack_module_state

    spec = scene.train
    models = []
    for seed in seeds:  # the same initialisation stream as train()
        torch.manual_seed(torch_seed(seed, "init"))
        models.append(build_model(scene.model, data.ambient_dim, data.n_classes).to(device))
    params, buffers = stack_module_state(models)
    forward = stacked_forward(copy.deepcopy(models[0]).to("meta"))  # the copy holds no numbers

    def batched_loss(params, buffers, x, y):  # (S,): each model's mean cross-entropy, as in train()
        logits = forward(params, buffers, x)
        return torch.stack([nn.functional.cross_entropy(logits[i], y[i]) for i in range(len(y))])

    optimizer = make_optimizer(params.values(), spec.optimizer, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    batch_size = min(spec.batch_size, len(x_train))
    streams = [shuffled_batches(len(x_train), batch_size, torch_generator(seed, "batches")) for seed in seeds]
    log_every = max(1, spec.steps // 200)
    running = torch.zeros(len(seeds), device=device)
    stopped: dict[int, dict[str, torch.Tensor]] = {}  # model index -> its parameters when it stopped

    with one_cpu_thread(device), counting_bar(progress, spec.steps,
                                               f"train {len(seeds)} seeds of {scene.name}") as advance:
        for step in range(1, spec.steps + 1):
            index = torch.stack([next(stream) for stream in streams]).to(device)  # (S, B)
            losses = batched_loss(params, buffers, x_train[index], y_train[index])  # (S,)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            running += losses.detach()
            if step % log_every == 0 or step == spec.steps:  # one host sync per interval, as train()
                _check_all_finite(running.cpu().numpy(), seeds, step, spec.lr)
                running.zero_()
            if spec.stop_at_margin is not None and step < spec.steps and step % log_every == 0:
                margins = _smallest_margins(forward, params, buffers, x_train, y_train)
                for i in np.flatnonzero(margins >= spec.stop_at_margin):
                    if int(i) not in stopped:
                        stopped[int(i)] = {name: value[i].detach().clone() for name, value in params.items()}
                if len(stopped) == len(seeds):
                    break
            advance()

    trained = []
    for i, model in enumerate(models):
        model.load_state_dict(stopped.get(i) or {name: value[i].detach() for name, value in params.items()})
        trained.append(model.cpu().eval())
    return trained


@torch.no_grad()
def _smallest_margins(forward, params, buffers, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Each stacked model's min over the set of z_y - max_{j != y} z_j (as `smallest_margin`). (S,)"""
    count = next(iter(params.values())).shape[0]
    logits = forward(params, buffers, x.expand(count, *x.shape))  # (S, N, C)
    true_class = class_margins(logits).gather(2, y.expand(count, -1)[..., None])[..., 0]  # (S, N)
    return true_class.min(dim=1).values.cpu().numpy()


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


def _check_all_finite(losses: np.ndarray, seeds: list[int], step: int, lr: float) -> None:
    for seed, loss in zip(seeds, losses):
        try:
            check_finite(float(loss), step, lr)
        except TrainingError as error:
            raise TrainingError(f"seed agreement, seed {seed}: {error}") from None
