"""The round k-sphere, in hyperspherical coordinates.

The module-level helpers work on the unit sphere S^k in R^(k+1); `ConcentricSpheres` reuses them.

Chart: angles (phi_1, ..., phi_k) with phi_1..phi_{k-1} in [0, pi] (polar angles) and
phi_k in [0, 2 pi) (periodic), and

    y_1     = cos phi_1
    y_2     = sin phi_1 cos phi_2
    ...
    y_k     = sin phi_1 ... sin phi_{k-1} cos phi_k
    y_{k+1} = sin phi_1 ... sin phi_{k-1} sin phi_k

For k = 1 this is the circle (cos phi, sin phi). The Jacobian is degenerate where some
sin phi_i = 0 for i < k (the "poles", a set of measure zero): there the tangent basis is
undefined, as in any chart of the sphere.
"""

from __future__ import annotations

import numpy as np

from .base import Manifold, check_dim, check_positive, wrap_angle


def _angle_products(sin: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """The unit-sphere point [..., k+1] from the sines and cosines [..., k] of the angles.

    Written in terms of (sin, cos) so the Jacobian can reuse it: each coordinate is a product
    in which phi_i appears at most once, as sin phi_i or cos phi_i.
    """
    ones = np.ones(sin.shape[:-1] + (1,))
    leading = np.cumprod(np.concatenate([ones, sin], axis=-1), axis=-1)  # prod_{l<j} sin phi_l
    return leading * np.concatenate([cos, ones], axis=-1)


def unit_sphere_immersion(phi: np.ndarray) -> np.ndarray:
    """Hyperspherical angles [..., k] -> point on the unit sphere [..., k+1]."""
    return _angle_products(np.sin(phi), np.cos(phi))


def unit_sphere_jacobian(phi: np.ndarray) -> np.ndarray:
    """d(unit-sphere point)/d(angles): [..., k] -> [..., k+1, k]."""
    sin, cos = np.sin(phi), np.cos(phi)
    k = phi.shape[-1]
    columns = []
    for i in range(k):
        # d/dphi_i turns sin phi_i into cos phi_i and cos phi_i into -sin phi_i; the
        # coordinates j < i do not contain phi_i and get 0.
        d_sin, d_cos = sin.copy(), cos.copy()
        d_sin[..., i], d_cos[..., i] = cos[..., i], -sin[..., i]
        column = _angle_products(d_sin, d_cos)
        column[..., :i] = 0.0
        columns.append(column)
    return np.stack(columns, axis=-1)


def unit_sphere_angles(y: np.ndarray) -> np.ndarray:
    """Hyperspherical angles [..., k] of the direction of host points y [..., k+1].

    Exact for any scale of y (only the direction matters); y = 0 maps to the angles of e_1.
    arctan2 of (norm of the remaining coordinates, this coordinate) stays accurate near the
    poles, where arccos would lose digits.
    """
    k = y.shape[-1] - 1
    # tail[..., i] = ||(y_{i+1}, ..., y_{k+1})|| (0-based: coordinates after i)
    tail = np.sqrt(np.cumsum((y**2)[..., ::-1], axis=-1)[..., ::-1])
    polar = np.arctan2(tail[..., 1:k], y[..., : k - 1])
    azimuth = wrap_angle(np.arctan2(y[..., k], y[..., k - 1]))
    return np.concatenate([polar, azimuth[..., None]], axis=-1)


def uniform_sphere_angles(n_samples: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Angles (n_samples, k) of points uniform on S^k: normalised Gaussians are uniform."""
    return unit_sphere_angles(rng.standard_normal((n_samples, dim + 1)))


def sphere_chart_box(dim: int) -> tuple[np.ndarray, np.ndarray, tuple[bool, ...]]:
    """(chart_low, chart_high, periodic) of the hyperspherical chart of S^k."""
    low = np.zeros(dim)
    high = np.full(dim, np.pi)
    high[-1] = 2 * np.pi
    return low, high, (False,) * (dim - 1) + (True,)


class Sphere(Manifold):
    """The k-sphere of radius `radius` centred at the origin of R^(k+1).

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension (1 circle, 2 sphere, ...).
    radius : float
        Radius.
    ambient_dim, embedding, embedding_seed
        See `Manifold`.
    """

    family = "sphere"

    def __init__(self, dim, radius=1.0, ambient_dim=None, embedding="random", embedding_seed=0):
        dim = check_dim("dim", dim)
        self.radius = check_positive("radius", radius)
        super().__init__(dim, dim + 1, ambient_dim, embedding, embedding_seed)
        self.chart_low, self.chart_high, self.periodic = sphere_chart_box(dim)

    def _params(self):
        return {"dim": self.dim, "radius": self.radius}

    def _host_immersion(self, u):
        return self.radius * unit_sphere_immersion(u)

    def _host_jacobian(self, u):
        return self.radius * unit_sphere_jacobian(u)

    def _host_normal(self, u):
        return unit_sphere_immersion(u)  # outward

    def _host_chart(self, y):
        # The nearest point is r y / |y|, which has the angles of y itself.
        return unit_sphere_angles(y)

    def sample_chart(self, n_samples, rng):
        return uniform_sphere_angles(n_samples, self.dim, rng)
