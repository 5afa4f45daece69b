"""A k-flat: a line, a plane, a k-dimensional affine subspace."""

from __future__ import annotations

import numpy as np

from .base import Manifold, check_dim, check_positive, cube_chart_box


class Flat(Manifold):
    """The k-flat u -> (u, 0) in the host space R^(k+1), moved by `offset` after embedding.

    The chart box [-extent, extent]^k is only the sampling (and rendering) domain: `chart` and
    `projection` treat the flat as unbounded, so every point has a unique nearest point and the
    normal line through any point is exact.

    With an offset c the flat is the affine subspace {E (u, 0) + c}: it no longer passes through
    the origin (Melamed et al. put their data on the plane z = 0.5). A translation changes no
    direction, so the Jacobian, tangent bases and normals are those of the flat through the origin;
    only `immersion` adds c and `chart` (hence `projection` and `belongs`) subtracts it first.

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension (1 line, 2 plane, ...).
    extent : float
        Half-width of the chart box.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    offset : sequence of n floats or None
        An ambient point added after embedding (the image of chart point 0); None: the origin.
    """

    family = "flat"

    def __init__(self, dim, extent=1.0, ambient_dim=None, embedding="random", embedding_seed=0, offset=None):
        dim = check_dim("dim", dim)
        self.extent = check_positive("extent", extent)
        super().__init__(dim, dim + 1, ambient_dim, embedding, embedding_seed)
        self.chart_low, self.chart_high, self.periodic = cube_chart_box(dim, self.extent)
        self.offset = None if offset is None else self._checked_offset(offset)

    def _checked_offset(self, offset) -> np.ndarray:
        offset = np.asarray(offset, dtype=float)
        if offset.shape != (self.ambient_dim,):
            problem = f"got {offset.size} numbers of shape {offset.shape}"
        elif not np.all(np.isfinite(offset)):
            problem = "got inf or NaN among them"
        else:
            return offset
        raise ValueError(f"offset: must be {self.ambient_dim} finite numbers, one per ambient coordinate "
                         f"(a point of R^{self.ambient_dim}); {problem}")

    def _params(self):
        params = {"dim": self.dim, "extent": self.extent}
        if self.offset is not None:
            params["offset"] = self.offset.tolist()
        return params

    @property
    def ambient_offset(self) -> np.ndarray | None:
        return self.offset

    def immersion(self, u) -> np.ndarray:
        embedded = super().immersion(u)
        return embedded if self.offset is None else embedded + self.offset

    def chart(self, point) -> np.ndarray:
        # Undo the translation, then the flat through the origin does the rest (exactly).
        point = self._as_point(point)
        return super().chart(point if self.offset is None else point - self.offset)

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
