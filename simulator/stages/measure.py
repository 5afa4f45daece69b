"""Geometry measurements over every snapshot of a run (`sim measure`, and the end of `sim run`).

Per snapshot: the tangent fraction of the margin gradient and the stretch spectrum at the
first `measure.n_points` test points (cheap), and the boundary height field over the whole
chart (heavier; every `measure.height_every`-th snapshot, always the first and the last, the
last on a finer grid whose field is saved to `height_field.npz` for renderers).
Results go to metrics.json under "geometry", with the resolved settings beside them.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from simulator.geometry.height import (
    boundary_heights,
    measure_height_field,
    nearest_distances,
    probe_directions,
    summarize_heights,
)
from simulator.geometry.scale import data_radius
from simulator.geometry.stretch import feature_jacobians, stretch_spectra
from simulator.geometry.tangent import margin_gradients, summarize_tangent_fractions, tangent_fractions
from simulator.progress import counting_bar
from simulator.runs.loading import Run
from simulator.runs.io import atomic_path, write_json
from simulator.seeding import numpy_rng
from simulator.training.loop import resolve_device
from simulator.stages.verdict import verdict_rows


def resolve_settings(run: Run, manifold) -> dict:
    """Scene measure settings with every data-dependent default filled in (all in input-space units)."""
    spec = run.scene.measure
    x_clean = manifold.immersion(run.data.u_train)
    radius = data_radius(x_clean)
    spacing = float(np.median(nearest_distances(x_clean, x_clean, exclude_self=True)))
    t_max = spec.t_max or 0.5 * radius
    return {
        "n_points": spec.n_points,
        "data_radius": radius,
        "t_max": t_max,
        "tolerance": spec.tolerance or t_max / 1000,
        "bracket_steps": spec.bracket_steps,
        "clinging_epsilon": spec.clinging_epsilon or 0.05 * radius,
        "near_data_radius": spec.near_data_radius or 2 * spacing,
        "height_resolution": spec.height_resolution,
        "final_height_resolution": spec.final_height_resolution,
        "height_max_points": spec.height_max_points,
        "height_every": spec.height_every,
        "thresholds": spec.thresholds.model_dump(),
    }


def tangent_and_stretch(model: torch.nn.Module, x: torch.Tensor, bases: torch.Tensor,
                        feature_directions: dict | None = None) -> tuple[dict, np.ndarray]:
    """{"tangent": ..., "stretch": ...} summaries at points x (N, n) with tangent bases (N, n, k),
    for any kind of run (exact or autoencoder-estimated bases); also tau per point (N,).
    `feature_directions` ({name: (N, n)}): named class features, for the stretch alignment."""
    k, n = bases.shape[-1], x.shape[1]
    tau = tangent_fractions(margin_gradients(model, x), bases).cpu().numpy()
    summary = {"tangent": summarize_tangent_fractions(tau, k, n)}
    if hasattr(model, "features"):
        summary["stretch"] = stretch_spectra(feature_jacobians(model, x), bases, feature_directions)
    return summary, tau


def measure_model(model: torch.nn.Module, manifold, run: Run, settings: dict, resolution: int | None,
                  device: torch.device, x_train_clean: np.ndarray | None = None,
                  feature_directions: dict | None = None):
    """All measurements for one model. resolution None = skip the height field.
    x_train_clean: the training points' exact manifold positions; feature_directions: the
    scene's named class features at the measured points (both computed once per run if given).

    Returns (summary dict, HeightField or None).
    """
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    count = settings["n_points"]
    x = torch.as_tensor(run.data.x_test[:count], dtype=dtype, device=device)
    bases = torch.as_tensor(run.data.tangent_test[:count], dtype=dtype, device=device)
    if feature_directions is None:
        feature_directions = class_feature_directions(run, count)
    summary, _ = tangent_and_stretch(model, x, bases, feature_directions)
    field = None
    if resolution is not None:
        if x_train_clean is None:
            x_train_clean = manifold.immersion(run.data.u_train)
        field = measure_height_field(
            model, manifold, x_train_clean, resolution, settings["height_max_points"], settings["t_max"],
            settings["tolerance"], settings["bracket_steps"], settings["near_data_radius"],
            numpy_rng(run.scene.seed, "measure"),
            interface_step=(manifold.chart_high - manifold.chart_low) / settings["height_resolution"])
        # Heights at (up to n_points) training points themselves: the dimples, if any, are there.
        u_at = run.data.u_train[:count]
        at = torch.as_tensor(manifold.immersion(u_at), dtype=dtype, device=device)
        heights_at_train = boundary_heights(
            model, at, probe_directions(model, manifold, at, u_at), settings["t_max"], settings["tolerance"],
            settings["bracket_steps"]).cpu().double().numpy()
        summary["height"] = summarize_heights(field, settings["clinging_epsilon"], heights_at_train)
    return summary, field


def class_feature_directions(run: Run, count: int) -> dict:
    """The scene's named class features (e.g. shape and fur) at the first `count` test points,
    as unit input directions; empty for label rules without named features."""
    from simulator.labels import make_label_rule

    rule = make_label_rule(run.scene.labels, run.manifold(), numpy_rng(run.scene.seed, "labels"))
    return rule.feature_directions(run.data.u_test[:count])


def height_snapshot_indices(n_snapshots: int, every: int) -> set[int]:
    return set(range(0, n_snapshots, every)) | {n_snapshots - 1}


def remeasure(path, overrides: dict | None = None, progress: bool = True) -> tuple[Run, dict]:
    """`sim measure`: re-measure an existing run, optionally with new measure.* settings.

    Runs the attacks too when the scene enables them, so the verdict stays complete.
    """
    run = reload_with_measure_overrides(path, overrides)
    geometry = measure_run(run, progress=progress)
    if run.scene.measure.attacks.enabled:
        from simulator.stages.attack import attack_run

        attack_run(run, progress=progress)
    return run, run.metrics["geometry"]


def reload_with_measure_overrides(path, overrides: dict | None = None, allowed_prefix: str = "measure.") -> Run:
    """Load a run and apply overrides under `allowed_prefix` (recorded in its scene.yaml);
    nothing that would need retraining may change."""
    from simulator.errors import SceneError
    from simulator.runs.loading import load_run
    from simulator.runs.io import write_text
    from simulator.config.scene import scene_from_dict

    run = load_run(path)
    overrides = overrides or {}
    foreign = sorted(key for key in overrides if not key.startswith(allowed_prefix))
    if foreign:
        raise SceneError(
            f"{', '.join(foreign)}: only {allowed_prefix}* settings can change here without retraining; "
            f"run `sim run` on the scene with --set to change anything else."
        )
    if overrides:
        run.scene = scene_from_dict(run.scene.model_dump(mode="json"), source=str(run.path / "scene.yaml"),
                                    overrides=overrides)
        write_text(run.path / "scene.yaml", run.scene.to_yaml())
    return run


def measure_snapshots(run: Run, settings: dict, progress: bool = False):
    """The measurements of every snapshot (compute only; nothing written).

    Returns (per-snapshot summaries, the last snapshot's HeightField or None).
    """
    manifold = run.manifold()
    device = resolve_device(run.scene.train.device)
    with_height = height_snapshot_indices(len(run.snapshots), settings["height_every"])
    x_train_clean = manifold.immersion(run.data.u_train)
    directions = class_feature_directions(run, settings["n_points"])
    results, final_field = [], None
    with counting_bar(progress, len(run.snapshots), f"measure {run.scene.name}") as advance:
        for record in run.snapshots:
            last = record.index == len(run.snapshots) - 1
            resolution = (settings["final_height_resolution"] if last else settings["height_resolution"]) \
                if record.index in with_height else None
            summary, field = measure_model(record.model(), manifold, run, settings, resolution, device,
                                           x_train_clean, directions)
            summary = {"step": record.step, "test_accuracy": record.test_accuracy, **summary}
            summary["verdict"] = verdict_rows(summary, settings["thresholds"], attacks=None)
            results.append(summary)
            if last:
                final_field = field
            advance()
    return results, final_field


def measure_run(run: Run, progress: bool = True) -> dict:
    """Measure every snapshot; write metrics.json["geometry"], height_field.npz, the curves figure
    and verdict.json into the run directory."""
    settings = resolve_settings(run, run.manifold())
    started = time.perf_counter()
    results, final_field = measure_snapshots(run, settings, progress)
    geometry = {"settings": settings, "seconds": time.perf_counter() - started,
                "device": str(resolve_device(run.scene.train.device)), "snapshots": results}
    run.metrics["geometry"] = geometry
    run.save_metrics()
    if final_field is not None:
        with atomic_path(run.path / "height_field.npz") as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **final_field.as_arrays())
    from simulator.render.curves import plot_geometry_curves

    plot_geometry_curves(run, run.path / "geometry_curves.png")
    if final_field is not None and run.manifold().dim >= 2:
        from simulator.render.height_map import plot_height_map

        plot_height_map(run, run.path / "height_map.png")
    write_json(run.path / "verdict.json", results[-1]["verdict"])
    return geometry
