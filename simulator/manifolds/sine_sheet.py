"""The sine sheet: a bumpy graph over a k-dimensional box."""

from __future__ import annotations

import math

import numpy as np

from .base import Manifold, check_dim, check_positive, cube_chart_box, rejection_sample

_MAX_NEWTON_STEPS = 50
# A point has converged when its Newton step is this small relative to (1 + |v|).
_STEP_TOLERANCE = 1e-10
# Backtracking step lengths tried at once (vectorised line search): 1, 1/2, ..., 2^-20.
_STEP_LENGTHS = 0.5 ** np.arange(21)


class SineSheet(Manifold):
    """The graph u -> (u, amplitude * prod_i sin(frequency * u_i)) in R^(k+1).

    The chart box [-extent, extent]^k is only the sampling (and rendering) domain: `chart` and
    `projection` treat the sheet as the graph over all of R^k.

    The nearest point is numeric: minimise F(v) = |(v, h(v)) - y|^2 / 2 over the chart
    coordinates v, starting from the point straight below y (v = y[:k]), by Newton steps
    (Gauss-Newton steps where the Hessian is not safely positive definite) with a backtracking
    line search, vectorised over points. The iteration decreases F, so it stays inside the ball
    around y through the starting point; for points within about half the reach of the sheet that
    ball holds no critical point of F but the nearest point, which it therefore finds. The reach
    is at most 1 / (amplitude * frequency^2), the radius of curvature at the bumps' tops; farther
    away the result is a local (not always global) nearest point.

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension.
    amplitude : float
        Height of the bumps (>= 0; 0 gives a flat).
    frequency : float
        Angular frequency of the bumps, radians per chart unit (> 0).
    extent : float
        Half-width of the chart box.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    """

    family = "sine_sheet"

    def __init__(self, dim=2, amplitude=0.3, frequency=2.0, extent=1.0, ambient_dim=None,
                 embedding="random", embedding_seed=0):
        dim = check_dim("dim", dim)
        self.amplitude = float(amplitude)
        if not (np.isfinite(self.amplitude) and self.amplitude >= 0):
            raise ValueError(f"amplitude: must be a number >= 0, got {self.amplitude}")
        self.frequency = check_positive("frequency", frequency)
        self.extent = check_positive("extent", extent)
        super().__init__(dim, dim + 1, ambient_dim, embedding, embedding_seed)
        self.chart_low, self.chart_high, self.periodic = cube_chart_box(dim, self.extent)

    def _params(self):
        return {"dim": self.dim, "amplitude": self.amplitude, "frequency": self.frequency, "extent": self.extent}

    def _height(self, u, order: int = 1):
        """Height h(u) [...], its gradient [..., k] and, for order 2, its Hessian [..., k, k]."""
        a, w = self.amplitude, self.frequency
        sin, cos = np.sin(w * u), np.cos(w * u)
        eye = np.eye(self.dim, dtype=bool)
        height = a * np.prod(sin, axis=-1)
        # d/du_i replaces the factor sin(w u_i) by w cos(w u_i); products avoid dividing by sin.
        gradient = a * w * np.prod(np.where(eye, cos[..., None, :], sin[..., None, :]), axis=-1)
        if order == 1:
            return height, gradient
        on_i, on_j = eye[:, None, :], eye[None, :, :]  # (i, j, l): is l == i, is l == j
        factors = np.where(on_i & on_j, -sin[..., None, None, :],
                           np.where(on_i | on_j, cos[..., None, None, :], sin[..., None, None, :]))
        return height, gradient, a * w**2 * np.prod(factors, axis=-1)

    def _host_immersion(self, u):
        return np.concatenate([u, self._height(u)[0][..., None]], axis=-1)

    def _host_jacobian(self, u):
        gradient = self._height(u)[1]
        identity = np.broadcast_to(np.eye(self.dim), gradient.shape + (self.dim,))
        return np.concatenate([identity, gradient[..., None, :]], axis=-2)

    def _host_normal(self, u):
        # The graph's upward normal (-grad h, 1) / sqrt(1 + |grad h|^2).
        gradient = self._height(u)[1]
        normal = np.concatenate([-gradient, np.ones(gradient.shape[:-1] + (1,))], axis=-1)
        return normal / np.linalg.norm(normal, axis=-1, keepdims=True)

    def _objective(self, v, below, z):
        """F(v) = |(v, h(v)) - (below, z)|^2 / 2 for v [..., k] -> [...]."""
        return 0.5 * (np.sum((v - below) ** 2, axis=-1) + (self._height(v)[0] - z) ** 2)

    def _host_chart(self, y):
        below = y[..., : self.dim].reshape(-1, self.dim)
        z = y[..., self.dim].reshape(-1)
        v = below.copy()
        # Points still iterating; converged ones drop out, so the cost follows the hard few.
        active = np.arange(len(v))
        for _ in range(_MAX_NEWTON_STEPS):
            if active.size == 0:
                break
            step = self._newton_step(v[active], below[active], z[active])
            small = np.linalg.norm(step, axis=-1) <= _STEP_TOLERANCE * (1 + np.linalg.norm(v[active], axis=-1))
            # A tiny step is taken whole: F no longer changes measurably, so a line search
            # there would only see rounding noise.
            length = np.where(small, 1.0, self._step_length(v[active], step, below[active], z[active]))
            v[active] += length[:, None] * step
            active = active[~small & (length > 0)]
        return v.reshape(y.shape[:-1] + (self.dim,))

    def _newton_step(self, v, below, z):
        """Descent step (m, k) for F at v (m, k)."""
        height, gradient, hessian = self._height(v, order=2)
        misfit = height - z
        descent = (v - below) + misfit[:, None] * gradient  # grad F
        gauss_newton = np.eye(self.dim) + gradient[:, :, None] * gradient[:, None, :]
        newton = gauss_newton + misfit[:, None, None] * hessian
        # Newton where its Hessian is comfortably positive definite, else Gauss-Newton (always
        # positive definite): either way the step is a descent direction.
        safe = np.linalg.eigvalsh(newton)[:, 0] > 0.1
        matrix = np.where(safe[:, None, None], newton, gauss_newton)
        return -np.linalg.solve(matrix, descent[:, :, None])[:, :, 0]

    def _step_length(self, v, step, below, z):
        """Armijo backtracking (m,): the longest tried length that decreases F enough, else 0."""
        height, gradient = self._height(v)
        misfit = height - z
        slope = np.sum(((v - below) + misfit[:, None] * gradient) * step, axis=-1)
        current = self._objective(v, below, z)
        length = np.ones(len(v))
        # Most points accept the full step; only the others pay for the whole ladder.
        full = self._objective(v + step, below, z) <= current + 1e-4 * slope
        retry = np.flatnonzero(~full)
        if retry.size:
            trials = v[retry, None, :] + _STEP_LENGTHS[:, None] * step[retry, None, :]
            values = self._objective(trials, below[retry, None, :], z[retry, None])
            ok = values <= current[retry, None] + 1e-4 * _STEP_LENGTHS * slope[retry, None]
            length[retry] = np.where(ok.any(axis=-1), _STEP_LENGTHS[np.argmax(ok, axis=-1)], 0.0)
        return length

    def sample_chart(self, n_samples, rng):
        # The area element is sqrt(1 + |grad h|^2) du, and |grad h| <= amplitude * frequency
        # (sum_i cos_i^2 prod_{j != i} sin_j^2 is the chance of exactly one failure among
        # independent trials with success chances sin_j^2, so at most 1).
        def density(u):
            return np.sqrt(1 + np.sum(self._height(u)[1] ** 2, axis=-1))

        return rejection_sample(n_samples, rng, self.chart_low, self.chart_high, density,
                                math.sqrt(1 + (self.amplitude * self.frequency) ** 2))
