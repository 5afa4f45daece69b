"""A k-flat: a line, a plane, a k-dimensional affine subspace."""

from __future__ import annotations

import numpy as np

from .base import Manifold, check_dim, check_positive, cube_chart_box


class Flat(Manifold):
    """The k-flat u -> (u, 0) in the host space R^(k+1).

    The chart box [-extent, extent]^k is only the sampling (and rendering) domain: `chart` and
    `projection` treat the flat as unbounded, so every point has a unique nearest point and the
    normal line through any point is exact.

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension (1 line, 2 plane, ...).
    extent : float
        Half-width of the chart box.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    """

    family = "flat"

    def __init__(self, dim, extent=1.0, ambient_dim=None, embedding="random", embedding_seed=0):
        dim = check_dim("dim", dim)
        self.extent = check_positive("extent", extent)
        super().__init__(dim, dim + 1, ambient_dim, embedding, embedding_seed)
        self.chart_low, self.chart_high, self.periodic = cube_chart_box(dim, self.extent)

    def _params(self):
        return {"dim": self.dim, "extent": self.extent}

    def _host_immersion(self, u):
        return np.concatenate([u, np.zeros(u.shape[:-1] + (1,))], axis=-1)

    def _host_jacobian(self, u):
        return np.broadcast_to(np.eye(self.dim + 1, self.dim), u.shape[:-1] + (self.dim + 1, self.dim)).copy()

    def _host_normal(self, u):
        normal = np.zeros(u.shape[:-1] + (self.dim + 1,))
        normal[..., -1] = 1.0
        return normal

    def _host_chart(self, y):
        return y[..., : self.dim].copy()

    def sample_chart(self, n_samples, rng):
        return rng.uniform(self.chart_low, self.chart_high, size=(n_samples, self.dim))
