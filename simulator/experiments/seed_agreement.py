"""Seed agreement (DESIGN.md section 4, item 6): do different initialisations reach the same boundary?

The dimpled-manifold paper says training reaches the same boundary from any initialisation
(it first lays the boundary along the data manifold, then dents it around the data). A
boundary pinned only by the data would instead make seeds agree near the data and differ away
from it, where nothing in the loss constrains it.

    from simulator.experiments.seed_agreement import seed_agreement_experiment
    record, meshes = seed_agreement_experiment(load_run("renders/sheet_two_class"))

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
* each seed's boundary mesh, which the pipeline stores as `seed_boundary_<i>.vtp` and draws
  together in `seed_boundaries.png`. The training itself is `simulator.training.stacked`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from simulator.boundary.frame import render_frame
from simulator.boundary.mesh import contour_boundary, margin_grid
from simulator.config.scene import Scene
from simulator.progress import counting_bar
from simulator.seeding import numpy_rng
from simulator.training.loop import resolve_device
from simulator.training.stacked import train_seeds

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
    meshes, spacing = [], None
    with counting_bar(progress, len(models), "seed boundaries") as advance:
        for model in models:
            grid = margin_grid(model, frame, resolution, n_classes, device)
            meshes.append(contour_boundary(grid, model, device))
            spacing = grid.spacing
            advance()
    return meshes, spacing


# --------------------------------------------------------------------------- the experiment


def seed_agreement_experiment(run, progress: bool = True) -> tuple[dict, list]:
    """Train the seeds of `run.scene.experiments.seed_agreement` and measure their agreement.

    Returns (the record for metrics.json "seed_agreement", each seed's boundary mesh in the
    render frame: an empty list when n < 3)."""
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
    }
    meshes = []
    if data.ambient_dim >= 3:
        in_frame, meshes = _in_render_frame(run, models, rng, spec.n_points, progress)
        result.update(in_frame)
    else:
        result["note"] = "no render frame: the frame disagreement and Chamfer distance need ambient_dim >= 3"
    result["seconds"] = time.perf_counter() - started
    return result, meshes


def _in_render_frame(run, models, rng, n_points, progress) -> tuple[dict, list]:
    frame = render_frame(run)
    in_frame = frame_probes(frame, n_points, rng)
    resolution = run.scene.render.grid_resolution
    device = resolve_device(run.scene.train.device)
    meshes, spacing = seed_boundary_meshes(models, frame, resolution, run.data.n_classes, device, progress)
    distances = chamfer_matrix([np.asarray(mesh.points) for mesh in meshes])
    pairs = distances[np.triu_indices(len(models), k=1)]
    in_frame_predictions = predictions(models, in_frame)
    to_manifold = np.linalg.norm(in_frame - run.manifold().projection(in_frame), axis=-1)
    frame_result = {**disagreement(in_frame_predictions), "description": frame.description,
                    "by_distance_to_manifold": disagreement_by_distance(in_frame_predictions, to_manifold)}
    chamfer = {"units": "input units (frame coordinates are orthonormal)", "mean": float(np.mean(pairs)),
               "max": float(np.max(pairs)), "pairwise": distances.tolist(),
               "grid_resolution": resolution, "grid_spacing": float(np.max(spacing)),
               "frame_diagonal": frame.size, "vertices": [int(mesh.n_points) for mesh in meshes],
               "max_query_vertices": MAX_CHAMFER_QUERIES}
    return {"frame": frame_result, "chamfer": chamfer}, meshes


