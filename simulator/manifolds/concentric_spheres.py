"""Two concentric spheres: the "Adversarial Spheres" data set of Gilmer et al. (2018)."""

from __future__ import annotations

import numpy as np

from .base import Manifold, check_dim, check_positive
from .sphere import (
    sphere_chart_box,
    uniform_sphere_angles,
    unit_sphere_angles,
    unit_sphere_immersion,
    unit_sphere_jacobian,
)


class ConcentricSpheres(Manifold):
    """The k-spheres of radii inner_radius < outer_radius about the origin of R^(k+1).

    Gilmer et al., "Adversarial Spheres", arXiv 1801.02774 (2018).

    The chart is the disjoint union of two copies of the sphere's hyperspherical chart (see
    `simulator.manifolds.sphere`), told apart by doubling the range of the first coordinate:
    for k >= 2, u_1 in [0, pi] is the inner sphere with polar angle u_1 and u_1 in (pi, 2 pi]
    the outer one with polar angle u_1 - pi (u_1 = pi itself, the inner sphere's pole, is
    counted as outer: a set of measure zero); for k = 1 the angle runs over [0, 4 pi), the first
    2 pi on the inner circle. `component(u)` is 0 on the inner sphere and 1 on the outer one.
    No chart coordinate is marked periodic for k = 1, since wrapping [0, 4 pi) would join the two
    circles.

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension of each sphere.
    inner_radius, outer_radius : float
        Radii, 0 < inner_radius < outer_radius.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    """

    family = "concentric_spheres"
    n_components = 2

    def __init__(self, dim, inner_radius=1.0, outer_radius=1.3, ambient_dim=None,
                 embedding="random", embedding_seed=0):
        dim = check_dim("dim", dim)
        self.inner_radius = check_positive("inner_radius", inner_radius)
        self.outer_radius = check_positive("outer_radius", outer_radius)
        if self.outer_radius <= self.inner_radius:
            raise ValueError(
                f"outer_radius: {self.outer_radius} must be larger than inner_radius {self.inner_radius}"
            )
        super().__init__(dim, dim + 1, ambient_dim, embedding, embedding_seed)
        self.chart_low, self.chart_high, periodic = sphere_chart_box(dim)
        # The first coordinate's range is doubled; the offset is its single-sphere width.
        self._offset = self.chart_high[0] - self.chart_low[0]
        self.chart_high[0] += self._offset
        self.periodic = (False,) + periodic[1:]

    def _params(self):
        return {"dim": self.dim, "inner_radius": self.inner_radius, "outer_radius": self.outer_radius}

    def _split(self, u):
        """(is outer [...], radius [...], single-sphere angles [..., k]) of chart points u."""
        outer = u[..., 0] >= self._offset
        angles = u.copy()
        angles[..., 0] -= np.where(outer, self._offset, 0.0)
        return outer, np.where(outer, self.outer_radius, self.inner_radius), angles

    def component(self, u):
        return self._split(self._as_chart(u))[0].astype(int)

    def _host_immersion(self, u):
        _, radius, angles = self._split(u)
        return radius[..., None] * unit_sphere_immersion(angles)

    def _host_jacobian(self, u):
        _, radius, angles = self._split(u)
        return radius[..., None, None] * unit_sphere_jacobian(angles)

    def _host_normal(self, u):
        return unit_sphere_immersion(self._split(u)[2])  # outward on both spheres

    def _host_chart(self, y):
        # The nearer sphere is decided by |y| against the mid radius; on it the nearest point
        # has the angles of y itself.
        outer = np.linalg.norm(y, axis=-1) >= 0.5 * (self.inner_radius + self.outer_radius)
        angles = unit_sphere_angles(y)
        angles[..., 0] += np.where(outer, self._offset, 0.0)
        return angles

    def sample_chart(self, n_samples, rng):
        # A fair coin per sample picks the sphere, so each gets half of the samples on average
        # (not half of the area, which would favour the outer sphere).
        angles = uniform_sphere_angles(n_samples, self.dim, rng)
        angles[:, 0] += np.where(rng.random(n_samples) < 0.5, self._offset, 0.0)
        return angles
