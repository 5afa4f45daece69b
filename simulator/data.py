"""Datasets drawn from a scene: points on (or near) the manifold with labels and exact geometry.

Besides the input points x, a dataset keeps each point's chart coordinates u and the
orthonormal tangent basis U(u) of the manifold there, so measurements never have to estimate
the manifold. Everything is determined by the scene's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from simulator.config.scene import Scene
from simulator.errors import RunError
from simulator.labels import make_label_rule
from simulator.manifolds.base import Manifold
from simulator.seeding import numpy_rng


@dataclass
class Dataset:
    """Train and test splits. Shapes: x (N, n), y (N,), u (N, k), tangent (N, n, k)."""

    x_train: np.ndarray
    y_train: np.ndarray
    u_train: np.ndarray
    tangent_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    u_test: np.ndarray
    tangent_test: np.ndarray
    n_classes: int

    @property
    def ambient_dim(self) -> int:
        return self.x_train.shape[1]

    def save(self, path: Path) -> None:
        """Write as a plain .npz (numpy, MATLAB via scipy, and most tools read it)."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        try:
            with np.load(path) as archive:
                values = {f.name: archive[f.name] for f in fields(cls)}
        except (OSError, KeyError, ValueError) as error:
            raise RunError(f"{path}: cannot read the dataset ({error}); rerun `sim run` on the scene.") from None
        values["n_classes"] = int(values["n_classes"])
        return cls(**values)


def make_dataset(scene: Scene, manifold: Manifold | None = None) -> Dataset:
    """Draw the scene's train and test sets (one draw, then split, so both share one law)."""
    manifold = manifold or scene.manifold.build()
    rule = make_label_rule(scene.labels, manifold, numpy_rng(scene.seed, "labels"))
    rng = numpy_rng(scene.seed, "data")
    n_total = scene.data.n_train + scene.data.n_test
    u, y = rule.sample(n_total, rng)
    x = manifold.immersion(u)
    offset = rule.input_offset(u, y, rng)
    if offset is not None:  # classes that differ off the manifold (off-manifold fur)
        x = x + offset
    tangent = manifold.tangent_basis(u)
    if scene.data.noise_std > 0:
        noise = rng.standard_normal(x.shape) * scene.data.noise_std
        x = x + manifold.to_normal(noise, u)  # off the manifold only: chart coordinates stay exact
    n = scene.data.n_train
    return Dataset(
        x_train=x[:n], y_train=y[:n].astype(np.int64), u_train=u[:n], tangent_train=tangent[:n],
        x_test=x[n:], y_test=y[n:].astype(np.int64), u_test=u[n:], tangent_test=tangent[n:],
        n_classes=scene.labels.n_classes,
    )
