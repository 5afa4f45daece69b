"""Seed agreement (DESIGN.md section 4, item 6): do different initialisations reach the same boundary?

The dimpled-manifold paper says training reaches the same boundary from any initialisation
(it first lays the boundary along the data manifold, then dents it around the data). A
boundary pinned only by the data would instead make seeds agree near the data and differ away
from it, where nothing in the loss constrains it.

    from simulator.experiments.seed_agreement import seed_agreement_run
    result = seed_agreement_run(load_run("renders/sheet_two_class"))

S models are trained on the run's data (always drawn from the scene's seed); model i is what
`simulator.training.loop.train` gives with the scene's seed replaced by seed i (same initialisation
stream, batch order, optimiser and budget). Then, with the models' argmax predictions:

* disagreement on `n_points` manifold points, uniform by volume, on the test points, and on
  `n_points` uniform points of the 3-D render frame (n = 3: the padded data box; n > 3: the
  affine slice the renderers draw): per pair, the share of points where the two predictions
  differ (the S x S matrix and its mean over pairs), and the share where not all S agree; and
  its profile over the distance to the nearest training point (manifold) or to the manifold (frame);
* the symmetric Chamfer distance between the boundary meshes in the render frame (input units;
  the mesh is placed within about one grid spacing of the true boundary, so distances below
  the spacing are at the resolution floor);
* `seed_boundaries.png` with all S boundaries together and `seed_boundary_<i>.vtp`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from simulator.data import Dataset
from simulator.errors import TrainingError
from simulator.models import ACTIVATIONS, MLP, build_model
from simulator.progress import counting_bar
from simulator.config.scene import Scene
from simulator.seeding import numpy_rng, torch_generator, torch_seed
from simulator.training.loop import check_finite, one_cpu_thread, resolve_device, shuffled_batches, train

# The second view of seed_boundaries.png shows the boundaries within BAND_SPACINGS grid
# spacings of the manifold.
BAND_SPACINGS = 2.0
# Equal-count distance bins of the disagreement profiles (distance to the nearest training point
# on the manifold, distance to the manifold in the frame).
DISTANCE_BINS = 4
# Chamfer distances average over at most this many vertices per mesh (see chamfer_matrix).
MAX_CHAMFER_QUERIES = 20000


def resolved_seeds(scene: Scene) -> list[int]:
    """The training seeds: `seeds` when given, else scene.seed, scene.seed + 1, ... (`count` of them)."""
    spec = scene.experiments.seed_agreement
    return list(spec.seeds) if spec.seeds else [scene.seed + i for i in range(spec.count)]


# --------------------------------------------------------------------------- training


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

    if spec.optimizer == "adam":
        optimizer = torch.optim.Adam(params.values(), lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        optimizer = torch.optim.SGD(params.values(), lr=spec.lr, momentum=spec.momentum,
                                    weight_decay=spec.weight_decay)
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    batch_size = min(spec.batch_size, len(x_train))
    streams = [shuffled_batches(len(x_train), batch_size, torch_generator(seed, "batches")) for seed in seeds]
    log_every = max(1, spec.steps // 200)
    running = torch.zeros(len(seeds), device=device)

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
            advance()

    trained = []
    for i, model in enumerate(models):
        model.load_state_dict({name: value[i].detach() for name, value in params.items()})
        trained.append(model.cpu().eval())
    return trained


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


# --------------------------------------------------------------------------- measurements


@torch.inference_mode()
def predictions(models: list[nn.Module], x: np.ndarray) -> np.ndarray:
    """Predicted classes (S, N) of each model at points x (N, n), evaluated where each model is."""
    points = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    predicted = []
    for model in models:
        device = next(model.parameters()).device  # the boundary extraction may have moved it
        predicted.append(torch.cat([model(chunk.to(device)).argmax(dim=1).cpu() for chunk in points.split(65536)]))
    return torch.stack(predicted).numpy()


def disagreement(predicted: np.ndarray) -> dict:
    """Disagreement of S models' predictions (S, N) at the same N points.

    pairwise[i][j]: share of points where models i and j differ; mean_pairwise: its mean over
    the S(S-1)/2 pairs; not_all_agree: share of points where any two of the S differ.
    """
    predicted = np.asarray(predicted)
    count = len(predicted)
    pairwise = (predicted[:, None, :] != predicted[None, :, :]).mean(axis=2)
    upper = pairwise[np.triu_indices(count, k=1)]
    return {"n_points": int(predicted.shape[1]), "mean_pairwise": float(upper.mean()),
            "max_pairwise": float(upper.max()),
            "not_all_agree": float((predicted != predicted[:1]).any(axis=0).mean()),
            "pairwise": pairwise.tolist()}


def disagreement_by_distance(predicted: np.ndarray, distance: np.ndarray, n_bins: int = DISTANCE_BINS) -> list[dict]:
    """Disagreement (mean pairwise, not all agree) in bins of equal point count along `distance` (N,).

    Where it grows with the distance from the data or the manifold, training pinned the boundary
    there and left it to the initialisation further out.
    """
    edges = np.quantile(distance, np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, n_bins - 1)  # [low, high)
    rows = []
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        part = disagreement(predicted[:, bins == index])
        rows.append({"from": float(low), "to": float(high), "n_points": part["n_points"],
                     "mean_pairwise": part["mean_pairwise"], "not_all_agree": part["not_all_agree"]})
    return rows


def manifold_probes(manifold, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """n_points manifold points (n_points, n), uniform by volume over the chart."""
    return manifold.immersion(manifold.sample_chart(n_points, rng))


def frame_probes(frame, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """n_points input-space points (n_points, n), uniform in the render frame's 3-D box."""
    return frame.to_ambient(rng.uniform(frame.low, frame.high, size=(n_points, 3)))


def chamfer_distance(a: np.ndarray, b: np.ndarray, max_queries: int | None = None) -> float:
    """Symmetric Chamfer distance between point sets a (m, d) and b (k, d): the mean distance from
    each point of a to its nearest point of b and from b to a, averaged. 0 for two empty sets,
    NaN when only one is empty (one model has no boundary there). See `chamfer_matrix`."""
    return float(chamfer_matrix([a, b], max_queries)[0, 1])


def chamfer_matrix(point_sets: list[np.ndarray], max_queries: int | None = MAX_CHAMFER_QUERIES) -> np.ndarray:
    """Pairwise symmetric Chamfer distances (S, S) between point sets (for example mesh vertices).

    Each set's k-d tree is built once. With max_queries, the mean distance from a set to another
    is taken over at most that many of its points, evenly strided (each distance itself exact):
    a query costs ~5 us per point on a surface mesh, and a 96^3 boundary has ~50k vertices.
    """
    count = len(point_sets)
    trees = [cKDTree(points) if len(points) else None for points in point_sets]
    queries = [points[::max(1, -(-len(points) // max_queries))] if max_queries else points for points in point_sets]
    one_way = np.zeros((count, count))  # [i, j]: mean distance from the points of i to set j
    for i in range(count):
        for j in range(count):
            if i == j:
                continue
            if trees[i] is None or trees[j] is None:
                one_way[i, j] = 0.0 if trees[i] is trees[j] else np.nan
            else:
                one_way[i, j] = trees[j].query(queries[i])[0].mean()
    return 0.5 * (one_way + one_way.T)


def seed_boundary_meshes(models: list[nn.Module], frame, resolution: int, n_classes: int, device=None,
                         progress: bool = False):
    """Each model's decision-boundary mesh in the frame (the renderers' extraction) and the grid spacing (3,)."""
    from simulator.render.boundary import contour_boundary, margin_grid

    meshes, spacing = [], None
    with counting_bar(progress, len(models), "seed boundaries") as advance:
        for model in models:
            grid = margin_grid(model, frame, resolution, n_classes, device)
            meshes.append(contour_boundary(grid, model, device))
            spacing = grid.spacing
            advance()
    return meshes, spacing


# --------------------------------------------------------------------------- the experiment


def seed_agreement_run(run, progress: bool = True) -> dict:
    """Train the seeds of `run.scene.experiments.seed_agreement`, measure their agreement, write
    seed_boundaries.png and seed_boundary_<i>.vtp into the run and metrics.json["seed_agreement"]."""
    scene, data = run.scene, run.data
    spec = scene.experiments.seed_agreement
    seeds = resolved_seeds(scene)
    started = time.perf_counter()
    trained = train_seeds(scene, data, seeds, progress)
    models = trained.models
    manifold = run.manifold()
    # One stream for the probe points, seeded by the scene (not the training seeds): every seed
    # set is compared on the same points.
    rng = numpy_rng(scene.seed, "seed_agreement")
    on_manifold = manifold_probes(manifold, spec.n_points, rng)
    test_predictions = predictions(models, data.x_test)
    on_manifold_predictions = predictions(models, on_manifold)
    to_data = cKDTree(data.x_train).query(on_manifold)[0]
    result = {
        "seeds": seeds,
        "training": {"batched": trained.batched, "note": trained.note, "seconds": trained.seconds,
                     "device": trained.device,
                     "test_accuracy": (test_predictions == data.y_test).mean(axis=1).tolist(),
                     "train_accuracy": (predictions(models, data.x_train) == data.y_train).mean(axis=1).tolist()},
        "manifold": {**disagreement(on_manifold_predictions),
                     "by_distance_to_data": disagreement_by_distance(on_manifold_predictions, to_data)},
        "test": disagreement(test_predictions),
        "frame": None,
        "chamfer": None,
        "files": [],
    }
    if data.ambient_dim >= 3:
        result.update(_in_render_frame(run, models, seeds, rng, spec.n_points, progress))
    else:
        result["note"] = "no render frame: the frame disagreement and Chamfer distance need ambient_dim >= 3"
    result["seconds"] = time.perf_counter() - started
    run.metrics["seed_agreement"] = result
    run.save_metrics()
    return result


def _in_render_frame(run, models, seeds, rng, n_points, progress) -> dict:
    from simulator.render.frame import render_frame
    from simulator.render.scene3d import run_device, write_vtp

    frame = render_frame(run)
    in_frame = frame_probes(frame, n_points, rng)
    resolution = run.scene.render.grid_resolution
    meshes, spacing = seed_boundary_meshes(models, frame, resolution, run.data.n_classes, run_device(run), progress)
    distances = chamfer_matrix([np.asarray(mesh.points) for mesh in meshes])
    pairs = distances[np.triu_indices(len(models), k=1)]
    for stale in Path(run.path).glob("seed_boundary_*.vtp"):  # from an earlier call with more seeds
        stale.unlink()
    files = [write_vtp(mesh, Path(run.path) / f"seed_boundary_{i}.vtp").name for i, mesh in enumerate(meshes)]
    in_frame_predictions = predictions(models, in_frame)
    to_manifold = np.linalg.norm(in_frame - run.manifold().projection(in_frame), axis=-1)
    frame_result = {**disagreement(in_frame_predictions), "description": frame.description,
                    "by_distance_to_manifold": disagreement_by_distance(in_frame_predictions, to_manifold)}
    chamfer = {"units": "input units (frame coordinates are orthonormal)", "mean": float(np.mean(pairs)),
               "max": float(np.max(pairs)), "pairwise": distances.tolist(),
               "grid_resolution": resolution, "grid_spacing": float(np.max(spacing)),
               "frame_diagonal": frame.size, "vertices": [int(mesh.n_points) for mesh in meshes],
               "max_query_vertices": MAX_CHAMFER_QUERIES}
    if run.scene.render.three_d:
        from simulator.render.seed_boundaries import render_seed_boundaries

        image = render_seed_boundaries(run, frame, meshes, seeds, BAND_SPACINGS * chamfer["grid_spacing"],
                                       frame_result["mean_pairwise"], chamfer["mean"])
        files.insert(0, image.name)
    return {"frame": frame_result, "chamfer": chamfer, "files": files}


def agreement_rows(result: dict) -> list[tuple[str, str]]:
    """(quantity, value) pairs summarising a result (for the CLI table and the report)."""

    def share(value):  # None: NaN in metrics.json (a model with no boundary in the frame)
        return "-" if value is None or not np.isfinite(value) else f"{value:.2%}"

    def number(value):
        return "-" if value is None or not np.isfinite(value) else f"{value:.4g}"

    rows = [("seeds", ", ".join(str(s) for s in result["seeds"])),
            ("training", f"{result['training']['note']} ({result['training']['seconds']:.1f} s)"),
            ("test accuracy", ", ".join(f"{a:.1%}" for a in result["training"]["test_accuracy"]))]
    for key, where in (("test", "test points"), ("manifold", "manifold (uniform by volume)"),
                       ("frame", "render frame (uniform by volume)")):
        part = result.get(key)
        if part:
            rows.append((f"disagreement on {where}",
                         f"mean pairwise {share(part['mean_pairwise'])}, not all agree {share(part['not_all_agree'])} "
                         f"({part['n_points']} points)"))
    for key, what, profile in (("manifold", "manifold points by distance to the data", "by_distance_to_data"),
                               ("frame", "frame points by distance to the manifold", "by_distance_to_manifold")):
        bins = (result.get(key) or {}).get(profile)
        if bins:
            rows.append((f"mean pairwise disagreement, {what} ({len(bins)} equal-count bins)",
                         ", ".join(f"up to {row['to']:.2g}: {share(row['mean_pairwise'])}" for row in bins)))
    chamfer = result.get("chamfer")
    if chamfer:
        rows.append(("Chamfer distance between boundaries",
                     f"mean {number(chamfer['mean'])}, max {number(chamfer['max'])} input units (grid spacing "
                     f"{number(chamfer['grid_spacing'])}, frame diagonal {number(chamfer['frame_diagonal'])})"))
    elif result.get("note"):
        rows.append(("render frame", result["note"]))
    return rows


def agreement_table(result: dict, title: str):
    """A rich table of `agreement_rows`."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for quantity, value in agreement_rows(result):
        table.add_row(quantity, value)
    return table
