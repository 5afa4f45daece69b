"""The 2-torus of revolution in R^3."""

from __future__ import annotations

import numpy as np

from .base import Manifold, check_dim, check_positive, rejection_sample, wrap_angle


class Torus(Manifold):
    """The torus swept by a circle of radius r whose centre runs on a circle of radius R.

    Chart u = (theta, phi), both in [0, 2 pi) and periodic: theta goes around the tube
    (poloidal), phi around the z axis (toroidal):

        y = ((R + r cos theta) cos phi, (R + r cos theta) sin phi, r sin theta).

    Its reach is min(r, R - r); beyond it (near the z axis or the tube's core) the nearest point
    is still computed exactly, but is not unique on the z axis and the tube's core circle.

    Parameters
    ----------
    major_radius : float
        R, distance from the z axis to the centre of the tube.
    minor_radius : float
        r, radius of the tube; 0 < r < R (otherwise the torus intersects itself).
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    dim : int
        Always 2; accepted so that every family can be built with a `dim`.
    """

    family = "torus"

    def __init__(self, major_radius=1.0, minor_radius=0.4, ambient_dim=None, embedding="random",
                 embedding_seed=0, dim=2):
        if check_dim("dim", dim) != 2:
            raise ValueError(f"dim: the torus is 2-dimensional, got dim={dim}")
        self.major_radius = check_positive("major_radius", major_radius)
        self.minor_radius = check_positive("minor_radius", minor_radius)
        if self.minor_radius >= self.major_radius:
            raise ValueError(
                f"minor_radius: {self.minor_radius} must be smaller than major_radius "
                f"{self.major_radius} (otherwise the torus intersects itself)"
            )
        super().__init__(2, 3, ambient_dim, embedding, embedding_seed)
        self.chart_low = np.zeros(2)
        self.chart_high = np.full(2, 2 * np.pi)
        self.periodic = (True, True)

    def _params(self):
        return {"major_radius": self.major_radius, "minor_radius": self.minor_radius}

    def _host_immersion(self, u):
        theta, phi = u[..., 0], u[..., 1]
        rho = self.major_radius + self.minor_radius * np.cos(theta)
        return np.stack([rho * np.cos(phi), rho * np.sin(phi), self.minor_radius * np.sin(theta)], axis=-1)

    def _host_jacobian(self, u):
        theta, phi = u[..., 0], u[..., 1]
        r = self.minor_radius
        rho = self.major_radius + r * np.cos(theta)
        d_theta = r * np.stack([-np.sin(theta) * np.cos(phi), -np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)
        d_phi = np.stack([-rho * np.sin(phi), rho * np.cos(phi), np.zeros_like(phi)], axis=-1)
        return np.stack([d_theta, d_phi], axis=-1)

    def _host_normal(self, u):
        theta, phi = u[..., 0], u[..., 1]
        # Outward: the unit vector from the tube's centre circle to the point.
        return np.stack([np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), np.sin(theta)], axis=-1)

    def _host_chart(self, y):
        # The nearest point lies in the half-plane through the z axis and y (the tube circle
        # there is closer than the one in the opposite half-plane, since R > 0), and on that
        # circle it is the radial projection of y seen from the tube's centre.
        phi = np.arctan2(y[..., 1], y[..., 0])
        rho = np.hypot(y[..., 0], y[..., 1])
        theta = np.arctan2(y[..., 2], rho - self.major_radius)
        return wrap_angle(np.stack([theta, phi], axis=-1))

    def sample_chart(self, n_samples, rng):
        # The area element is r (R + r cos theta) dtheta dphi.
        def density(u):
            return self.major_radius + self.minor_radius * np.cos(u[:, 0])

        return rejection_sample(n_samples, rng, self.chart_low, self.chart_high, density,
                                self.major_radius + self.minor_radius)
