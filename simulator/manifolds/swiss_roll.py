"""The swiss roll: a sheet rolled up along an Archimedean spiral."""

from __future__ import annotations

import math

import numpy as np

from .base import Manifold, check_dim, check_positive, rejection_sample

# Coarse-search samples per turn of the spiral. Neighbouring local minima of the squared
# distance along t are about one turn (2 pi) apart, so a grid this fine gives each its own
# cell, and the bracketed Newton refinement cannot leave that cell.
_GRID_PER_TURN = 64
# Cap on (points x grid samples) held at once by the coarse search.
_CHUNK_ELEMENTS = 1 << 22
_NEWTON_STEPS = 60


class SwissRoll(Manifold):
    """The surface y = scale * (t cos t, s, t sin t) in R^3.

    Chart u = (t, s): t in [t_min, t_max] winds along the spiral (t is both the angle and, times
    `scale`, the distance from the roll's axis), s in [-width/2, width/2] runs along the axis.
    `width` is in chart units, *before* scaling: the roll is `scale * width` long in host space.

    For `chart` and `projection` the roll is bounded in t (its two spiral edges are part of it)
    and unbounded in s (the box is only the sampling domain there), so a nearest point can lie
    on an edge but never on an s-end. The nearest t is numeric: a coarse search over the whole
    spiral, then a safeguarded Newton iteration (Newton steps kept inside a shrinking bracket,
    bisection otherwise) from each local minimum of the coarse search, vectorised over points.

    Parameters
    ----------
    t_min, t_max : float
        Spiral parameter range, 0 <= t_min < t_max (radians; the default is 1.5 turns from 1.5 pi).
    width : float or None
        Length of the s range in chart units; None gives 2 / scale, a roll 2.0 long in host space,
        as wide as the spiral (the familiar proportions, and it fits the ball of radius sqrt(2)).
    scale : float or None
        Overall scale; None gives 1 / t_max, so the outermost turn has radius 1.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    dim : int
        Always 2; accepted so that every family can be built with a `dim`.
    """

    family = "swiss_roll"

    def __init__(self, t_min=1.5 * math.pi, t_max=4.5 * math.pi, width=None, scale=None,
                 ambient_dim=None, embedding="random", embedding_seed=0, dim=2):
        if check_dim("dim", dim) != 2:
            raise ValueError(f"dim: the swiss roll is 2-dimensional, got dim={dim}")
        self.t_min, self.t_max = float(t_min), float(t_max)
        if not (np.isfinite(self.t_min) and self.t_min >= 0):
            raise ValueError(f"t_min: must be a finite number >= 0, got {self.t_min}")
        if not (np.isfinite(self.t_max) and self.t_max > self.t_min):
            raise ValueError(f"t_max: {self.t_max} must be larger than t_min {self.t_min}")
        self.scale = 1.0 / self.t_max if scale is None else check_positive("scale", scale)
        self.width = 2.0 / self.scale if width is None else check_positive("width", width)
        super().__init__(2, 3, ambient_dim, embedding, embedding_seed)
        self.chart_low = np.array([self.t_min, -self.width / 2])
        self.chart_high = np.array([self.t_max, self.width / 2])
        self.periodic = (False, False)
        n_grid = max(16, math.ceil(_GRID_PER_TURN * (self.t_max - self.t_min) / (2 * math.pi)) + 1)
        self._t_grid = np.linspace(self.t_min, self.t_max, n_grid)

    def _params(self):
        return {"t_min": self.t_min, "t_max": self.t_max, "width": self.width, "scale": self.scale}

    def _host_immersion(self, u):
        t, s = u[..., 0], u[..., 1]
        return self.scale * np.stack([t * np.cos(t), s, t * np.sin(t)], axis=-1)

    def _host_jacobian(self, u):
        t = u[..., 0]
        d_t = np.stack([np.cos(t) - t * np.sin(t), np.zeros_like(t), np.sin(t) + t * np.cos(t)], axis=-1)
        d_s = np.broadcast_to(np.array([0.0, 1.0, 0.0]), d_t.shape)
        return self.scale * np.stack([d_t, d_s], axis=-1)

    def _host_normal(self, u):
        jacobian = self._host_jacobian(u)
        normal = np.cross(jacobian[..., 0], jacobian[..., 1])
        return normal / np.linalg.norm(normal, axis=-1, keepdims=True)

    def _host_chart(self, y):
        # In units of `scale` the spiral is c(t) = (t cos t, t sin t) in the (y_1, y_3) plane,
        # and s = y_2 / scale exactly (the roll is a cylinder over the spiral).
        q = np.stack([y[..., 0], y[..., 2]], axis=-1).reshape(-1, 2) / self.scale
        t = self._nearest_t(q)
        return np.stack([t.reshape(y.shape[:-1]), y[..., 1] / self.scale], axis=-1)

    def _nearest_t(self, q: np.ndarray) -> np.ndarray:
        """argmin over t in [t_min, t_max] of |c(t) - q|^2 for q (m, 2) -> (m,).

        Every local minimum of the coarse grid is refined, not only the smallest: midway between
        two turns the two candidates tie to within the grid's error, and only their refined
        values tell which is nearer.
        """
        if len(q) == 0:
            return np.empty(0)
        grid = self._t_grid
        curve = np.stack([grid * np.cos(grid), grid * np.sin(grid)], axis=-1)  # (G, 2)
        rows, columns = [], []
        chunk = max(1, _CHUNK_ELEMENTS // grid.size)
        for start in range(0, len(q), chunk):
            diff = q[start : start + chunk, None, :] - curve[None, :, :]
            squared = np.einsum("mgi,mgi->mg", diff, diff)
            padded = np.pad(squared, ((0, 0), (1, 1)), constant_values=np.inf)
            minimum = (squared <= padded[:, :-2]) & (squared <= padded[:, 2:])
            row, column = np.nonzero(minimum)
            rows.append(row + start)
            columns.append(column)
        rows, columns = np.concatenate(rows), np.concatenate(columns)
        t = _refine(
            q[rows],
            grid[columns],
            grid[np.maximum(columns - 1, 0)],
            grid[np.minimum(columns + 1, grid.size - 1)],
        )
        squared = (t * np.cos(t) - q[rows, 0]) ** 2 + (t * np.sin(t) - q[rows, 1]) ** 2
        # Per point, the candidate with the smallest refined distance: sort by (point, distance)
        # and keep each point's first entry.
        order = np.lexsort((squared, rows))
        _, first = np.unique(rows[order], return_index=True)
        return t[order[first]]

    def sample_chart(self, n_samples, rng):
        # The area element is scale^2 sqrt(1 + t^2) dt ds, largest at t_max.
        def density(u):
            return np.sqrt(1 + u[:, 0] ** 2)

        return rejection_sample(n_samples, rng, self.chart_low, self.chart_high, density,
                                math.sqrt(1 + self.t_max**2))


def _refine(q: np.ndarray, t: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Local minimiser of |c(t) - q|^2 / 2 inside [low, high], c(t) = (t cos t, t sin t).

    Safeguarded Newton: the bracket shrinks with the sign of the slope, and a Newton step that
    leaves it (or meets negative curvature) is replaced by bisection, so it converges even when
    the minimum sits on the bracket's edge (the spiral's ends). Shapes: q (m, 2), others (m,).
    """
    for _ in range(_NEWTON_STEPS):
        cos, sin = np.cos(t), np.sin(t)
        residual = np.stack([t * cos - q[:, 0], t * sin - q[:, 1]], axis=-1)
        velocity = np.stack([cos - t * sin, sin + t * cos], axis=-1)
        acceleration = np.stack([-2 * sin - t * cos, 2 * cos - t * sin], axis=-1)
        slope = np.einsum("mi,mi->m", residual, velocity)
        curvature = 1 + t**2 + np.einsum("mi,mi->m", residual, acceleration)
        # The minimiser is left of t where the distance rises, right where it falls.
        high = np.where(slope > 0, t, high)
        low = np.where(slope > 0, low, t)
        newton = t - slope / np.where(curvature > 0, curvature, np.inf)
        usable = (curvature > 0) & (newton >= low) & (newton <= high)
        t_next = np.where(usable, newton, 0.5 * (low + high))
        converged = np.abs(t_next - t) <= 1e-13 * (1 + np.abs(t))
        t = t_next
        if converged.all():
            break
    return t
