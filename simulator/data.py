"""Datasets drawn from a scene: points on (or near) the manifold with labels and exact geometry.

Besides the input points x, a dataset keeps each point's chart coordinates u, from which the
manifold gives the exact tangent spaces on demand (`simulator.attacks.subspaces.tangent_spaces`,
an operator, never an (N, n, k) array), so measurements never have to estimate the manifold.
Everything is determined by the scene's seed.

`make_dataset` refuses data that no verdict could be drawn from (SceneError: the problem and the
fix in one paragraph): a class with (almost) no training points, a class missing from the test
set, a manifold collapsed below float32's resolution, non-finite points. Data that are usable
but weak (imbalanced classes, chance-level accuracy) get warnings in the verdict instead
(`simulator.stages.verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from simulator.config.scene import Scene
from simulator.errors import SceneError
from simulator.formatting import fmt
from simulator.geometry.scale import data_radius
from simulator.labels import LabelRule, make_label_rule
from simulator.manifolds.base import Manifold
from simulator.seeding import numpy_rng

# A class needs at least this many training points: with one, the network has nothing to
# generalise from and the boundary around the class is a dent around that one point.
MIN_TRAIN_POINTS_PER_CLASS = 2
# The network computes in float32 (24-bit mantissa, relative resolution 1.2e-7) with weights and
# biases initialised for inputs of size about 1. Points spread less than this (times their
# distance from the origin when that is larger than 1) differ by a few float32 steps at most, so
# the network cannot tell them apart and every measured length is rounding noise.
MIN_RELATIVE_SPREAD = 1e-6
# Scene fields that set a manifold's size, named in the error for a collapsed manifold.
SIZE_FIELDS = ("extent", "radius", "major_radius", "minor_radius", "inner_radius", "outer_radius", "scale", "width")


@dataclass
class Dataset:
    """Train and test splits. Shapes: x (N, n), y (N,), u (N, k) chart coordinates."""

    x_train: np.ndarray
    y_train: np.ndarray
    u_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    u_test: np.ndarray
    n_classes: int

    @property
    def ambient_dim(self) -> int:
        return self.x_train.shape[1]

    def save(self, path: Path) -> None:
        """Write as a plain .npz (numpy, MATLAB via scipy, and most tools read it)."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    # Reading data.npz back (with every check against the scene) is simulator.runs.checks.check_dataset.


def make_dataset(scene: Scene, manifold: Manifold | None = None) -> Dataset:
    """Draw the scene's train and test sets (one draw, then split, so both share one law)."""
    manifold = manifold or scene.manifold.build()
    rule = make_label_rule(scene.labels, manifold, numpy_rng(scene.seed, "labels"))
    rng = numpy_rng(scene.seed, "data")
    n_total = scene.data.n_train + scene.data.n_test
    u, y = rule.sample(n_total, rng)
    on_manifold = manifold.immersion(u)
    x = on_manifold
    offset = rule.input_offset(u, y, rng)
    if offset is not None:  # classes that differ off the manifold (off-manifold fur)
        x = x + offset
    if scene.data.noise_std > 0:
        noise = rng.standard_normal(x.shape) * scene.data.noise_std
        x = x + manifold.to_normal(noise, u)  # off the manifold only: chart coordinates stay exact
    n = scene.data.n_train
    data = Dataset(
        x_train=x[:n], y_train=y[:n].astype(np.int64), u_train=u[:n],
        x_test=x[n:], y_test=y[n:].astype(np.int64), u_test=u[n:],
        n_classes=scene.labels.n_classes,
    )
    check_dataset(data, scene, on_manifold, rule)
    return data


# --------------------------------------------------------------------------- refusing degenerate data


def check_dataset(data: Dataset, scene: Scene, on_manifold: np.ndarray, rule: LabelRule) -> None:
    """SceneError when no verdict could be drawn from `data`. `on_manifold`: every point's exact
    position on the manifold (before noise and class offsets), whose spread is the manifold's size."""
    if not (np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()):
        raise SceneError(f"manifold: some points are not finite numbers (inf or NaN), so nothing can be trained "
                         f"or measured; use moderate sizes ({_size_settings(scene)}) and data.noise_std.")
    _check_spread(on_manifold, scene)
    _check_training_classes(data, scene, rule)
    _check_test_classes(data, scene)


def _check_spread(points: np.ndarray, scene: Scene) -> None:
    spread = data_radius(points)
    scale = max(1.0, float(np.linalg.norm(points.mean(axis=0))))
    if spread < MIN_RELATIVE_SPREAD * scale:
        raise SceneError(
            f"manifold: the data span only {fmt(spread, 3)} input units (largest distance from their centroid"
            f"{f', at {fmt(scale, 3)} from the origin' if scale > 1 else ''}), below float32's resolution "
            f"({fmt(MIN_RELATIVE_SPREAD * scale, 3)}): the network cannot tell the points apart, so every "
            f"length measured would be rounding noise; make the manifold larger ({_size_settings(scene)}; "
            f"the shipped scenes use sizes about 1).")


def _size_settings(scene: Scene) -> str:
    """The manifold's size fields with their values, e.g. 'manifold.extent = 1e-12'."""
    spec = scene.manifold
    named = [f"manifold.{name} = {fmt(getattr(spec, name))}" for name in SIZE_FIELDS
             if name in type(spec).model_fields and getattr(spec, name) is not None]
    return ", ".join(named) or "the manifold's size settings"


def _check_training_classes(data: Dataset, scene: Scene, rule: LabelRule) -> None:
    counts = np.bincount(data.y_train, minlength=data.n_classes)
    label = int(counts.argmin())
    if counts[label] >= MIN_TRAIN_POINTS_PER_CLASS:
        return
    n_train, count = len(data.y_train), int(counts[label])
    if n_train < MIN_TRAIN_POINTS_PER_CLASS * data.n_classes:
        raise SceneError(
            f"data.n_train: {n_train} training points cannot give {data.n_classes} classes at least "
            f"{MIN_TRAIN_POINTS_PER_CLASS} points each (class {label} has {count}), so there is no boundary to "
            f"measure; raise data.n_train (the shipped scenes use 200 to 2000).")
    raise SceneError(
        f"labels: the {scene.labels.rule} rule gave class {label} only {count} of the {n_train} training points "
        f"(each class needs at least {MIN_TRAIN_POINTS_PER_CLASS}), so there is no boundary around it to "
        f"measure; {rule.fix_for_missing_class(label)}.")


def _check_test_classes(data: Dataset, scene: Scene) -> None:
    counts = np.bincount(data.y_test, minlength=data.n_classes)
    if counts.min() > 0:
        return
    label = int(counts.argmin())
    raise SceneError(
        f"data.n_test: class {label} has no point among the {len(data.y_test)} test points, so the test "
        f"accuracy and the attacks say nothing about it; raise data.n_test (e.g. to "
        f"{max(100, 10 * data.n_classes)}) or give that class a larger share (labels.*).")
