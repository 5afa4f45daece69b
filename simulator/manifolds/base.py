"""The shared interface of every manifold family.

A family is a k-dimensional hypersurface M of a host space R^h (h = k + 1 for most families,
h = 3 for the torus and the swiss roll), built in host coordinates by a subclass, and placed in
the ambient space R^n (n >= h) by an isometry x = E y, where E is an (n, h) matrix with
orthonormal columns. Because every direction orthogonal to range(E) is orthogonal to the whole
manifold, the nearest point of an ambient x is the nearest point of its host shadow E^T x: the
subclass only solves the problem in host space, and this base does the rest once.

Points on M are named by chart coordinates u (shape [..., k]). Every method is batched over the
leading dimensions, after geomstats (`point`, `n_samples`, `atol`).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod

import numpy as np

EMBEDDINGS = ("random", "identity")


def check_positive(name: str, value) -> float:
    """`value` as a float, or a ValueError that names the field `name`."""
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number, got {value}")
    return value


def check_dim(name: str, value, minimum: int = 1) -> int:
    """`value` as an int >= minimum, or a ValueError that names the field `name`."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")
    return value


def wrap_angle(angle) -> np.ndarray:
    """Angles mapped into [0, 2 pi); np.mod alone can round tiny negatives up to exactly 2 pi."""
    angle = np.mod(angle, 2 * np.pi)
    return np.where(angle >= 2 * np.pi, 0.0, angle)


def random_isometry(ambient_dim: int, host_dim: int, seed: int) -> np.ndarray:
    """A seeded (n, h) matrix with orthonormal columns.

    The columns are distributed as the first h columns of a Haar-random orthogonal matrix: QR
    of an (n, h) Gaussian matrix with the signs fixed so that diag(R) > 0 (without the fix Q is not Haar-distributed
    and depends on LAPACK's sign convention).
    """
    rng = np.random.default_rng(seed)
    # Gram-Schmidt of the first h columns does not depend on the others, so QR of an (n, h)
    # Gaussian gives the same distribution at O(n h^2) instead of O(n^3).
    q, r = np.linalg.qr(rng.standard_normal((ambient_dim, host_dim)))
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    return q * signs


def rejection_sample(n_samples, rng, low, high, density, density_bound) -> np.ndarray:
    """(n_samples, k) chart points with probability density proportional to `density` on a box.

    Uniform proposals in the box [low, high] are kept with probability density(u) / density_bound;
    `density` maps (m, k) -> (m,) and must not exceed `density_bound` (the volume element of
    the chart, for area-uniform sampling).
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    accepted, n_accepted = [], 0
    while n_accepted < n_samples:
        n_proposals = 2 * (n_samples - n_accepted) + 16
        proposals = rng.uniform(low, high, size=(n_proposals, low.size))
        keep = rng.uniform(0.0, density_bound, size=n_proposals) < density(proposals)
        accepted.append(proposals[keep])
        n_accepted += int(keep.sum())
    return np.concatenate(accepted or [np.empty((0, low.size))])[:n_samples]


class Manifold(ABC):
    """A k-dimensional hypersurface of R^h, isometrically embedded in R^n.

    Subclasses set `chart_low`, `chart_high` and `periodic`, and implement the host-space pieces
    `_host_immersion`, `_host_jacobian`, `_host_normal`, `_host_chart` and `sample_chart`.

    Parameters
    ----------
    dim : int
        k, the intrinsic dimension.
    host_dim : int
        h, the dimension of the space the family is built in (the manifold has codimension 1 there).
    ambient_dim : int or None
        n >= h, the dimension of the space the manifold lives in; None means n = h.
    embedding : {"random", "identity"}
        "random": a Haar-random isometry seeded by `embedding_seed` (no coordinate axis is
        special); "identity": the host coordinates are the first h ambient coordinates.
    embedding_seed : int
        Seed of the random isometry (ignored for "identity").
    """

    family: str = ""
    n_components: int = 1

    chart_low: np.ndarray
    chart_high: np.ndarray
    periodic: tuple[bool, ...]

    def __init__(self, dim, host_dim, ambient_dim=None, embedding="random", embedding_seed=0):
        self.dim = check_dim("dim", dim)
        self.host_dim = check_dim("host_dim", host_dim, minimum=self.dim + 1)
        ambient_dim = self.host_dim if ambient_dim is None else ambient_dim
        self.ambient_dim = check_dim("ambient_dim", ambient_dim)
        if self.ambient_dim < self.host_dim:
            raise ValueError(
                f"ambient_dim: {self.ambient_dim} is smaller than the host dimension "
                f"{self.host_dim} of the {self.family or type(self).__name__} family; "
                f"use ambient_dim >= {self.host_dim}"
            )
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding: must be one of {EMBEDDINGS}, got {embedding!r}")
        self.embedding = embedding
        self.embedding_seed = int(embedding_seed)
        if embedding == "random":
            self.embedding_matrix = random_isometry(self.ambient_dim, self.host_dim, self.embedding_seed)
        else:
            self.embedding_matrix = np.eye(self.ambient_dim, self.host_dim)

    # ------------------------------------------------------------------ host-space pieces

    @abstractmethod
    def _host_immersion(self, u: np.ndarray) -> np.ndarray:
        """Host point of chart coordinates u [..., k] -> [..., h]."""

    @abstractmethod
    def _host_jacobian(self, u: np.ndarray) -> np.ndarray:
        """d(host point)/du [..., h, k], analytic."""

    @abstractmethod
    def _host_normal(self, u: np.ndarray) -> np.ndarray:
        """Unit normal of the hypersurface in host space [..., h]."""

    @abstractmethod
    def _host_chart(self, y: np.ndarray) -> np.ndarray:
        """Chart coordinates [..., k] of the manifold point nearest to the host point y [..., h]."""

    @abstractmethod
    def sample_chart(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Chart coordinates (n_samples, k), uniform w.r.t. the manifold's volume over the chart box."""

    def _params(self) -> dict:
        """The family's own constructor parameters, for `__repr__`."""
        return {}

    # ------------------------------------------------------------------ ambient space

    def _as_chart(self, u) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        if u.ndim == 0 or u.shape[-1] != self.dim:
            raise ValueError(f"chart coordinates must have shape [..., {self.dim}], got {u.shape}")
        return u

    def _as_point(self, point) -> np.ndarray:
        point = np.asarray(point, dtype=float)
        if point.ndim == 0 or point.shape[-1] != self.ambient_dim:
            raise ValueError(f"points must have shape [..., {self.ambient_dim}], got {point.shape}")
        return point

    def immersion(self, u) -> np.ndarray:
        """Ambient point phi(u): [..., k] -> [..., n]."""
        return self._host_immersion(self._as_chart(u)) @ self.embedding_matrix.T

    def host_immersion(self, u) -> np.ndarray:
        """The host point y [..., h] with phi(u) = E y (plus a constant offset for an offset flat).
        E is an isometry, so distances between manifold points, and their spread about their
        centroid, are the same in host and ambient coordinates: O(h) per point instead of O(n)."""
        return self._host_immersion(self._as_chart(u))

    @property
    def ambient_offset(self) -> np.ndarray | None:
        """The constant c in phi(u) = E y(u) + c, y the host point (None: c = 0)."""
        return None

    def jacobian(self, u) -> np.ndarray:
        """d phi / du: [..., k] -> [..., n, k]."""
        return self.embedding_matrix @ self._host_jacobian(self._as_chart(u))

    def tangent_basis(self, u) -> np.ndarray:
        """Orthonormal basis U of the tangent space at phi(u): [..., k] -> [..., n, k].

        QR of the Jacobian with signs fixed so that column i has a positive dot product with
        d phi / du_i: the basis follows the chart directions instead of LAPACK's sign choice.
        Undefined where the chart is degenerate (the sphere's poles).
        """
        # QR in host space is cheaper and equal after embedding, since E preserves inner products.
        return self.embedding_matrix @ self.host_tangent_basis(u)

    def host_tangent_basis(self, u) -> np.ndarray:
        """Q(u) [..., h, k] with tangent_basis(u) = E Q(u): the orthonormal tangent basis in host
        coordinates. With E (`embedding_matrix`, n x h) it gives the tangent spaces of many
        points in N h k + n h numbers instead of N n k."""
        q, r = np.linalg.qr(self._host_jacobian(self._as_chart(u)))
        signs = np.where(np.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
        return q * signs[..., None, :]

    def host_unit_normal(self, u) -> np.ndarray:
        """Unit normal of the hypersurface in host coordinates: [..., k] -> [..., h]. The tangent
        space at phi(u) is E (nu^perp): the projection of v onto it is E (y - (nu . y) nu) with
        y = E^T v, no basis needed."""
        return self._host_normal(self._as_chart(u))

    def unit_normal(self, u) -> np.ndarray:
        """Unit normal of the hypersurface inside range(E): [..., k] -> [..., n]."""
        return self._host_normal(self._as_chart(u)) @ self.embedding_matrix.T

    def to_tangent(self, vector, u) -> np.ndarray:
        """Orthogonal projection U U^T v of ambient vectors [..., n] onto the tangent space at phi(u)."""
        basis = self.tangent_basis(u)
        coefficients = np.einsum("...nk,...n->...k", basis, np.asarray(vector, dtype=float))
        return np.einsum("...nk,...k->...n", basis, coefficients)

    def to_normal(self, vector, u) -> np.ndarray:
        """v - U U^T v: the component of ambient vectors [..., n] normal to the manifold at phi(u).

        In n > h this normal space has dimension n - k: the hypersurface normal plus the
        directions orthogonal to range(E).
        """
        vector = np.asarray(vector, dtype=float)
        return vector - self.to_tangent(vector, u)

    def chart(self, point) -> np.ndarray:
        """Chart coordinates of the manifold point nearest to ambient points: [..., n] -> [..., k]."""
        return self._host_chart(self._as_point(point) @ self.embedding_matrix)

    def projection(self, point) -> np.ndarray:
        """Nearest manifold point of ambient points: [..., n] -> [..., n]."""
        return self.immersion(self.chart(point))

    def belongs(self, point, atol: float = 1e-6) -> np.ndarray:
        """Whether ambient points [..., n] lie within atol (Euclidean) of the manifold: bool [...]."""
        point = self._as_point(point)
        return np.linalg.norm(point - self.projection(point), axis=-1) <= atol

    def component(self, u) -> np.ndarray:
        """Index of the connected component of chart points u [..., k]: int [...]."""
        return np.zeros(self._as_chart(u).shape[:-1], dtype=int)

    def chart_grid(self, resolution: int) -> np.ndarray:
        """A regular grid over the chart box, (resolution**k, k), first coordinate slowest.

        Periodic coordinates leave out the upper end, which repeats the lower one.
        """
        resolution = check_dim("resolution", resolution)
        axes = [
            np.linspace(low, high, resolution, endpoint=not periodic)
            for low, high, periodic in zip(self.chart_low, self.chart_high, self.periodic)
        ]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.dim)

    def __repr__(self) -> str:
        params = {
            **self._params(),
            "ambient_dim": self.ambient_dim,
            "embedding": self.embedding,
            "embedding_seed": self.embedding_seed,
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def cube_chart_box(dim: int, extent: float) -> tuple[np.ndarray, np.ndarray, tuple[bool, ...]]:
    """(chart_low, chart_high, periodic) of the chart box [-extent, extent]^k of a sheet."""
    return np.full(dim, -extent), np.full(dim, extent), (False,) * dim
