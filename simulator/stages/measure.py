"""Geometry measurements over every snapshot of a run (`sim measure`, and the end of `sim run`).

Per snapshot: the tangent fraction of the margin gradient and the stretch spectrum at the
first `measure.n_points` test points (the stretch every `measure.stretch_every`-th snapshot),
and the boundary height field over the whole chart (heavier; every `measure.height_every`-th
snapshot, always the first and the last, the last on a finer grid whose field is saved to
`height_field.npz` for renderers).
The stage computes and returns a `GeometryRecord`; the pipeline stores it (metrics.json
"geometry", height_field.npz) and figures are drawn from what was stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from simulator.attacks.subspaces import as_subspace, tangent_subspaces
from simulator.config.resolve import MeasureSettings
from simulator.geometry.height import (
    HeightField,
    boundary_heights,
    measure_height_field,
    probe_directions,
    summarize_heights,
)
from simulator.geometry.stretch import stretch_spectra
from simulator.geometry.tangent import (
    margin_gradients,
    summarize_tangent_fractions,
    tangent_fractions,
)
from simulator.labels import make_label_rule
from simulator.progress import counting_bar
from simulator.runs.loading import Run
from simulator.seeding import numpy_rng
from simulator.training.loop import one_cpu_thread


def tangent_and_stretch(model: torch.nn.Module, x: torch.Tensor, bases,
                        feature_directions: dict | None = None, with_stretch: bool = True) -> tuple[dict, np.ndarray]:
    """{"tangent": ..., "stretch": ...} summaries at points x (N, n) with their tangent spaces (a
    Subspace operator, or dense bases (N, n, k)), for any kind of run (exact or
    autoencoder-estimated); also tau per point (N,). `feature_directions` ({name: (N, n)}):
    named class features, for the stretch alignment. with_stretch False: the tangent part only."""
    bases = as_subspace(bases, len(x))
    k, n = bases.dim, x.shape[1]
    tau = tangent_fractions(margin_gradients(model, x), bases).cpu().numpy()
    summary = {"tangent": summarize_tangent_fractions(tau, k, n)}
    if with_stretch and hasattr(model, "features"):
        summary["stretch"] = stretch_spectra(model, bases, feature_directions, x=x)
    return summary, tau


def measure_model(model: torch.nn.Module, manifold, run: Run, settings: MeasureSettings, resolution: int | None,
                  device: torch.device, train_host_points: np.ndarray, feature_directions: dict, tangent,
                  with_stretch: bool = True):
    """All measurements for one model. resolution None = skip the height field; with_stretch
    False = skip the stretch spectrum.
    tangent: the exact tangent spaces at the first `settings.n_points` test points (a Subspace,
    the same for every snapshot, so computed once).
    train_host_points: the training points' exact manifold positions in host coordinates;
    feature_directions: the scene's named class features at the measured points (both the same
    for every snapshot).

    Returns (summary dict, HeightField or None).
    """
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    count = settings.n_points
    x = torch.as_tensor(run.data.x_test[:count], dtype=dtype, device=device)
    summary, _ = tangent_and_stretch(model, x, tangent, feature_directions, with_stretch)  # each casts what it needs
    field = None
    if resolution is not None:
        field = measure_height_field(
            model, manifold, train_host_points, resolution, settings.height_max_points, settings.t_max,
            settings.tolerance, settings.bracket_steps, settings.near_data_radius,
            numpy_rng(run.scene.seed, "measure"),
            interface_step=(manifold.chart_high - manifold.chart_low) / settings.height_resolution)
        # Heights at (up to n_points) training points themselves: the dimples, if any, are there.
        u_at = run.data.u_train[:count]
        at = torch.as_tensor(manifold.immersion(u_at), dtype=dtype, device=device)
        heights_at_train = boundary_heights(
            model, at, probe_directions(model, manifold, at, u_at), settings.t_max, settings.tolerance,
            settings.bracket_steps).cpu().double().numpy()
        summary["height"] = summarize_heights(field, settings.clinging_epsilon, heights_at_train)
    return summary, field


def class_feature_directions(run: Run, count: int) -> dict:
    """The scene's named class features (e.g. shape and fur) at the first `count` test points,
    as unit input directions; empty for label rules without named features."""
    rule = make_label_rule(run.scene.labels, run.manifold(), numpy_rng(run.scene.seed, "labels"))
    return rule.feature_directions(run.data.u_test[:count])


def every_kth_snapshot(n_snapshots: int, every: int) -> set[int]:
    """Indices 0, every, 2 every, ... and always the last."""
    return set(range(0, n_snapshots, every)) | {n_snapshots - 1}


@dataclass
class GeometryRecord:
    """The measure stage's result: per-snapshot summaries and the last snapshot's height field."""

    settings: MeasureSettings
    seconds: float
    device: str
    snapshots: list[dict]  # per snapshot: step, test accuracy, tangent, stretch, height summaries
    final_field: HeightField | None  # the last snapshot's height field (None when not measured)

    def as_record(self) -> dict:
        return {"settings": self.settings.as_record(), "seconds": self.seconds, "device": self.device,
                "snapshots": self.snapshots}


def measure_snapshots(run: Run, settings: MeasureSettings, device: torch.device, feature_directions: dict,
                      progress: bool = False) -> GeometryRecord:
    """The measurements of every snapshot of a synthetic run (compute only; nothing written).
    `feature_directions`: the scene's named class features at the measured points."""
    manifold = run.manifold()
    with_height = every_kth_snapshot(len(run.snapshots), settings.height_every)
    with_stretch = every_kth_snapshot(len(run.snapshots), settings.stretch_every)
    train_host_points = manifold.host_immersion(run.data.u_train)
    started = time.perf_counter()
    tangent = tangent_subspaces(manifold, run.data.u_test[:settings.n_points], device=device, dtype=torch.float64)
    results, final_field = [], None
    # One thread, as in training: these batched small products gain little from two, and on a
    # busy 2-core machine two spinning threads made batched eigenvalues ~5x slower (measured).
    with one_cpu_thread(device), counting_bar(progress, len(run.snapshots), f"measure {run.scene.name}") as advance:
        for record in run.snapshots:
            last = record.index == len(run.snapshots) - 1
            resolution = (settings.final_height_resolution if last else settings.height_resolution) \
                if record.index in with_height else None
            summary, field = measure_model(record.model(), manifold, run, settings, resolution, device,
                                           train_host_points, feature_directions, tangent,
                                           record.index in with_stretch)
            results.append({"step": record.step, "test_accuracy": record.test_accuracy, **summary})
            if last:
                final_field = field
            advance()
    return GeometryRecord(settings, time.perf_counter() - started, str(device), results, final_field)
