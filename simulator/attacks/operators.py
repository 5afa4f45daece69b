"""Subspaces as operators (DESIGN.md section 9): per-point k-dim subspaces of R^n that are applied,
never stored as an (points, n, k) tensor unless that fits a stated budget.

A `Subspace` is a family of subspaces S_0 .. S_{N-1} of R^n, one per point, each with an
orthonormal basis B_i (n, k) that is implied rather than stored:

    coefficients(v, rows)   B_r^T v   v (R, ..., n) -> (R, ..., k); row j uses point rows[j]'s subspace
    expand(c, rows)         B_r c     (R, ..., k) -> (R, ..., n)
    project(v, rows)        B_r B_r^T v, the orthogonal projection onto S
    remove(v, rows)         v - B_r B_r^T v, the projection onto the orthogonal complement
    basis(rows)             B as a dense (R, n, k) tensor, refused above `DENSE_BASIS_BYTES`

`rows=None` means one row per point, in order. Five kinds:

    DenseBasis                 an explicit (N, n, k) or shared (n, k) basis (e.g. an autoencoder's)
    FactoredBasis              B_i = E Q_i with E (n, h) shared and Q_i (h, k): a manifold's exact
                               tangent spaces (they lie inside the h-dim host space E spans)
    HypersurfaceTangents       the same spaces from the host normals alone (Householder bases)
    CoordinateSubset           k input coordinates per point: an index set (N, k)
    StructuredRandomSubspace   B_i^T = S_i F D_i3 F D_i2 F D_i1: random signs D, the orthonormal real
                               Fourier transform F, and k selected outputs S_i; O(n) memory per
                               point, O(n log n) per product, distributed close to a Haar-random
                               subspace (tests compare the two distance distributions)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

# Largest dense basis `Subspace.basis` materialises (and the attacks and the certifier gather):
# at 4 bytes per entry, 256 MiB is e.g. 200 points x 3072 x 100 or 25 x 784 x 3500.
DENSE_BASIS_BYTES = 256 * 2**20
# Largest copy of per-row dense bases a projection gathers at once (rays of one point share its basis).
GATHER_BYTES = 64 * 2**20
# Rounds of (random signs, Fourier transform) in the structured random subspace. One round maps a
# spike to a flat vector (a deterministic, non-random spread); three make the selected
# coordinates behave like those of a Haar-random rotation (Yu et al. 2016, "Orthogonal random
# features"; the test against Haar subspaces uses this value).
STRUCTURED_ROUNDS = 3
# Salt of the structured subspaces' per-point streams (the attack module's salts are 1, 2, 3).
_STRUCTURED = 4


def _rows(rows, n_points: int, device) -> torch.Tensor:
    if rows is None:
        return torch.arange(n_points, device=device)
    return torch.as_tensor(rows, device=device).long()


def _broadcast(per_row: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(R, a) per-row values viewed as (R, 1, ..., 1, a) to broadcast against like (R, ..., a')."""
    return per_row.reshape(per_row.shape[0], *([1] * (like.dim() - 2)), per_row.shape[-1])


class Subspace(ABC):
    """A family of k-dim subspaces of R^n, one per point (see the module docstring)."""

    n_points: int
    ambient_dim: int
    dim: int

    @abstractmethod
    def coefficients(self, v: torch.Tensor, rows=None) -> torch.Tensor:
        """B_r^T v: (R, ..., n) -> (R, ..., k)."""

    @abstractmethod
    def expand(self, c: torch.Tensor, rows=None) -> torch.Tensor:
        """B_r c: (R, ..., k) -> (R, ..., n)."""

    @abstractmethod
    def select(self, rows) -> Subspace:
        """The family of the chosen points only (row j of the result is point rows[j])."""

    @abstractmethod
    def to(self, device=None, dtype: torch.dtype | None = None) -> Subspace:
        """The same subspaces computed on `device` in `dtype`."""

    @property
    @abstractmethod
    def stored_bytes(self) -> int:
        """Memory the operator holds."""

    def shared_coefficients(self, w: torch.Tensor, rows=None) -> torch.Tensor:
        """B_r^T applied to the same vectors w (d, n) for every row r: (R, d, k). Subclasses that
        share a factor between rows apply it to w once."""
        count = self.n_points if rows is None else len(rows)
        return self.coefficients(w.expand(count, *w.shape), rows)

    def shared_energy(self, inner: torch.Tensor, w: torch.Tensor, rows=None,
                      total: torch.Tensor | None = None) -> torch.Tensor:
        """||inner_r w B_r||_F^2 per row r, for inner (R, m, d) and one w (d, n): the energy of the
        products J_r = inner_r w inside each row's subspace (e.g. a feature Jacobian through a
        shared first layer), (R,). total: ||inner_r w||_F^2 when the caller has it (some
        subclasses save a product with it)."""
        return (inner @ self.shared_coefficients(w, rows)).pow(2).sum(dim=(1, 2))

    def project(self, v: torch.Tensor, rows=None) -> torch.Tensor:
        """B B^T v, the orthogonal projection onto each row's subspace."""
        return self.expand(self.coefficients(v, rows), rows)

    def remove(self, v: torch.Tensor, rows=None) -> torch.Tensor:
        """v - B B^T v, the orthogonal projection onto each row's complement."""
        return v - self.project(v, rows)

    def basis(self, rows=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense orthonormal bases (R, n, k); a MemoryError above `DENSE_BASIS_BYTES`."""
        count = self.n_points if rows is None else len(rows)
        dtype = dtype or self.dtype
        needed = count * self.ambient_dim * self.dim * torch.finfo(dtype).bits // 8
        if needed > DENSE_BASIS_BYTES:
            raise MemoryError(
                f"a dense basis of {count} subspaces of dimension {self.dim} in R^{self.ambient_dim} needs "
                f"{needed / 2**20:.0f} MiB, above the {DENSE_BASIS_BYTES / 2**20:.0f} MiB budget; use fewer "
                f"points at a time (measure.n_points, measure.attacks.n_points) or a smaller subspace")
        identity = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        rows_t = _rows(rows, self.n_points, self.device)
        return self.expand(identity.expand(len(rows_t), -1, -1), rows_t).transpose(1, 2).to(dtype)


class DenseBasis(Subspace):
    """An explicit orthonormal basis per point (N, n, k), or one shared by all points (n, k)."""

    def __init__(self, bases: torch.Tensor, n_points: int | None = None):
        if bases.dim() not in (2, 3):
            raise ValueError(f"bases: expected (N, n, k) or (n, k), got shape {tuple(bases.shape)}")
        self.bases = bases
        self.shared = bases.dim() == 2
        self.n_points = int(n_points if self.shared and n_points is not None else (1 if self.shared else len(bases)))
        self.ambient_dim, self.dim = int(bases.shape[-2]), int(bases.shape[-1])
        self.dtype, self.device = bases.dtype, bases.device

    def _per_row(self, values, rows, equation):
        """einsum of each row's basis with `values`, gathering at most `GATHER_BYTES` of bases at a time."""
        if rows is None:
            return torch.einsum(equation, self.bases, values)
        rows = _rows(rows, self.n_points, self.device)
        chunk = max(1, GATHER_BYTES // (self.ambient_dim * self.dim * self.bases.element_size()))
        parts = [torch.einsum(equation, self.bases[rows[start:start + chunk]], values[start:start + chunk])
                 for start in range(0, len(rows), chunk)]
        return torch.cat(parts) if parts else torch.einsum(equation, self.bases[rows], values)

    def coefficients(self, v, rows=None):
        if self.shared:
            return v @ self.bases
        return self._per_row(v, rows, "rnk,r...n->r...k")

    def expand(self, c, rows=None):
        if self.shared:
            return c @ self.bases.T
        return self._per_row(c, rows, "rnk,r...k->r...n")

    def select(self, rows):
        if self.shared:
            return DenseBasis(self.bases, n_points=len(rows))
        return DenseBasis(self.bases[_rows(rows, self.n_points, self.device)])

    def to(self, device=None, dtype=None):
        return DenseBasis(self.bases.to(device=device or self.device, dtype=dtype or self.dtype),
                          n_points=self.n_points)

    @property
    def stored_bytes(self):
        return self.bases.numel() * self.bases.element_size()


class FactoredBasis(Subspace):
    """B_i = E Q_i: E (n, h) with orthonormal columns, shared; Q_i (h, k) orthonormal, per point.

    A manifold's tangent spaces all lie in the h-dim host space of its isometric embedding, so
    they cost N h k + n h numbers instead of N n k (h = k + 1 for most families)."""

    def __init__(self, embedding: torch.Tensor, local: torch.Tensor):
        if embedding.dim() != 2 or local.dim() != 3 or local.shape[1] != embedding.shape[1]:
            raise ValueError(f"expected embedding (n, h) and local (N, h, k), got {tuple(embedding.shape)} "
                             f"and {tuple(local.shape)}")
        self.embedding, self.local = embedding, local.to(embedding)
        self.n_points, self.ambient_dim, self.dim = int(local.shape[0]), int(embedding.shape[0]), int(local.shape[2])
        self.dtype, self.device = embedding.dtype, embedding.device

    def _local(self, rows):
        if rows is None:
            return self.local
        rows = _rows(rows, self.n_points, self.device)
        if len(rows) == self.n_points and bool((rows == torch.arange(len(rows), device=rows.device)).all()):
            return self.local  # every row in order: no gathered copy (N h k numbers, 200 MB at k = 499)
        return self.local[rows]

    def coefficients(self, v, rows=None):
        return torch.einsum("rhk,r...h->r...k", self._local(rows), v @ self.embedding)

    def shared_coefficients(self, w, rows=None):
        return (w @ self.embedding) @ self._local(rows)  # E^T w once, then every row's Q

    def expand(self, c, rows=None):
        return torch.einsum("rhk,r...k->r...h", self._local(rows), c) @ self.embedding.T

    def select(self, rows):
        return FactoredBasis(self.embedding, self._local(rows))

    def to(self, device=None, dtype=None):
        device, dtype = device or self.device, dtype or self.dtype
        return FactoredBasis(self.embedding.to(device=device, dtype=dtype), self.local.to(device=device, dtype=dtype))

    @property
    def stored_bytes(self):
        return (self.embedding.numel() + self.local.numel()) * self.embedding.element_size()


class HypersurfaceTangents(Subspace):
    """The tangent spaces of a hypersurface of the host space, from its unit normals alone.

    B_i = E H_i[:, 1:], with E (n, h) and H_i = I - 2 w_i w_i^T the Householder reflection that
    maps e_1 to a multiple of the host normal nu_i: its other h - 1 columns are an orthonormal
    basis of nu_i^perp, the tangent space in host coordinates. The same subspaces as a
    manifold's `FactoredBasis` (another orthonormal basis of each), in N h + n h numbers and
    O(n h) per product, with no per-point QR (a 499-sphere's 100 QRs of 500 x 499 took 2.5 s)."""

    def __init__(self, embedding: torch.Tensor, host_normals: torch.Tensor):
        if embedding.dim() != 2 or host_normals.dim() != 2 or host_normals.shape[1] != embedding.shape[1]:
            raise ValueError(f"expected embedding (n, h) and host_normals (N, h), got {tuple(embedding.shape)} "
                             f"and {tuple(host_normals.shape)}")
        self.embedding, self.host_normals = embedding, host_normals.to(embedding)
        # w = nu + sign(nu_1) e_1, normalised (the sign avoids cancellation): H nu = -sign(nu_1) e_1.
        first = torch.where(self.host_normals[:, :1] >= 0, 1.0, -1.0).to(embedding)
        reflector = self.host_normals.clone()
        reflector[:, :1] += first
        self.reflectors = reflector / reflector.norm(dim=1, keepdim=True)
        self.n_points, self.ambient_dim = int(host_normals.shape[0]), int(embedding.shape[0])
        self.dim = int(embedding.shape[1]) - 1
        self.dtype, self.device = embedding.dtype, embedding.device

    def _reflectors(self, rows, like):
        chosen = self.reflectors if rows is None else self.reflectors[_rows(rows, self.n_points, self.device)]
        return _broadcast(chosen, like)

    def _reflect(self, y, rows):
        w = self._reflectors(rows, y)
        return y - 2 * w * (w * y).sum(dim=-1, keepdim=True)

    def coefficients(self, v, rows=None):
        return self._reflect(v @ self.embedding, rows)[..., 1:]

    def expand(self, c, rows=None):
        padded = torch.cat([torch.zeros_like(c[..., :1]), c], dim=-1)
        return self._reflect(padded, rows) @ self.embedding.T

    def shared_energy(self, inner, w, rows=None, total=None):
        # B B^T = E (I - nu nu^T) E^T: the energy in the host space minus that along nu.
        host = w @ self.embedding  # (d, h)
        if total is not None and self.embedding.shape[0] == self.embedding.shape[1]:
            in_host = total  # E square (identity embedding): E E^T = I, the host space is everything
        elif host.shape[1] <= host.shape[0]:
            in_host = (inner @ host).pow(2).sum(dim=(1, 2))
        else:  # trace(inner (host host^T) inner^T): d x d instead of d x h per row
            in_host = ((inner @ (host @ host.T)) * inner).sum(dim=(1, 2))
        normals = self.host_normals if rows is None else self.host_normals[_rows(rows, self.n_points, self.device)]
        along_normal = (inner @ (normals @ host.T)[..., None])[..., 0]  # (R, m)
        return in_host - along_normal.pow(2).sum(dim=1)

    def select(self, rows):
        return HypersurfaceTangents(self.embedding, self.host_normals[_rows(rows, self.n_points, self.device)])

    def to(self, device=None, dtype=None):
        device, dtype = device or self.device, dtype or self.dtype
        return HypersurfaceTangents(self.embedding.to(device=device, dtype=dtype),
                                    self.host_normals.to(device=device, dtype=dtype))

    @property
    def stored_bytes(self):
        return (self.embedding.numel() + 2 * self.host_normals.numel()) * self.embedding.element_size()


class CoordinateSubset(Subspace):
    """k distinct input coordinates per point: B_i's columns are the unit vectors e_j, j in
    indices[i] (the critique's coordinate control). Stored as the index set (N, k)."""

    def __init__(self, indices: torch.Tensor, ambient_dim: int, dtype: torch.dtype = torch.float32):
        self.indices = indices.long()
        self.n_points, self.dim = int(indices.shape[0]), int(indices.shape[1])
        self.ambient_dim, self.dtype, self.device = int(ambient_dim), dtype, indices.device

    def _indices(self, rows, like):
        chosen = self.indices if rows is None else self.indices[_rows(rows, self.n_points, self.device)]
        return _broadcast(chosen, like).expand(*like.shape[:-1], self.dim)

    def coefficients(self, v, rows=None):
        return v.gather(-1, self._indices(rows, v))

    def expand(self, c, rows=None):
        out = c.new_zeros(*c.shape[:-1], self.ambient_dim)
        return out.scatter(-1, self._indices(rows, c), c)

    def select(self, rows):
        return CoordinateSubset(self.indices[_rows(rows, self.n_points, self.device)], self.ambient_dim, self.dtype)

    def to(self, device=None, dtype=None):
        return CoordinateSubset(self.indices.to(device or self.device), self.ambient_dim, dtype or self.dtype)

    @property
    def stored_bytes(self):
        return self.indices.numel() * self.indices.element_size()


# --------------------------------------------------------------------------- structured random


def real_fourier(v: torch.Tensor) -> torch.Tensor:
    """The orthonormal real Fourier transform along the last axis (any length n): the real and
    imaginary parts of rfft(v, norm="ortho"), the paired ones scaled by sqrt(2), so that the map
    is orthogonal (its transpose is `real_fourier_transpose`)."""
    n = v.shape[-1]
    spectrum = torch.fft.rfft(v, norm="ortho")
    pairs = (spectrum.shape[-1] - 1) if n % 2 else (spectrum.shape[-1] - 2)
    middle = spectrum[..., 1:1 + pairs]
    parts = [spectrum[..., :1].real, math.sqrt(2) * torch.stack([middle.real, middle.imag], dim=-1).flatten(-2)]
    if n % 2 == 0:
        parts.append(spectrum[..., -1:].real)  # the Nyquist term is real for real input
    return torch.cat(parts, dim=-1)


def real_fourier_transpose(y: torch.Tensor) -> torch.Tensor:
    """The inverse (= transpose) of `real_fourier`."""
    n = y.shape[-1]
    pairs = (n - 1) // 2
    middle = y[..., 1:1 + 2 * pairs].reshape(*y.shape[:-1], pairs, 2) / math.sqrt(2)
    terms = [y[..., :1].to(torch.complex64 if y.dtype == torch.float32 else torch.complex128),
             torch.complex(middle[..., 0], middle[..., 1])]
    if n % 2 == 0:
        terms.append(terms[0].new_zeros(()) + y[..., -1:])
    return torch.fft.irfft(torch.cat(terms, dim=-1), n=n, norm="ortho")


def structured_draws(indices, ambient_dim: int, dim: int, seed: int,
                     rounds: int = STRUCTURED_ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Per point i in `indices`, from its own (seed, i) stream: signs (rounds, n) of +-1 and k
    distinct selected coordinates. Returns (signs (P, rounds, n) bool: True = -1, selection (P, k))."""
    signs, selection = [], []
    for index in indices:
        rng = np.random.default_rng([int(seed), _STRUCTURED, int(index)])
        signs.append(rng.integers(0, 2, size=(rounds, ambient_dim), dtype=np.uint8).astype(bool))
        selection.append(rng.choice(ambient_dim, dim, replace=False))
    return np.stack(signs), np.stack(selection).reshape(len(signs), dim)


class StructuredRandomSubspace(Subspace):
    """A seeded random k-dim subspace per point with O(n) memory: B_i^T v = S_i F D_i,r ... F D_i,1 v
    (D random signs, F `real_fourier`, S_i a selection of k of the n outputs). Each factor is
    orthogonal, so B_i has exactly orthonormal columns; point i's subspace depends on (seed, i) only."""

    def __init__(self, negative: torch.Tensor, selection: torch.Tensor, dtype: torch.dtype = torch.float32):
        self.negative, self.selection = negative.bool(), selection.long()  # (N, rounds, n), (N, k)
        self.n_points, self.ambient_dim = int(negative.shape[0]), int(negative.shape[2])
        self.dim, self.dtype, self.device = int(selection.shape[1]), dtype, negative.device

    @classmethod
    def draw(cls, n_points: int, ambient_dim: int, dim: int, seed: int, first_index: int = 0,
             device=None, dtype: torch.dtype = torch.float32) -> StructuredRandomSubspace:
        if not 1 <= dim <= ambient_dim:
            raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
        negative, selection = structured_draws(range(first_index, first_index + n_points), ambient_dim, dim, seed)
        return cls(torch.as_tensor(negative, device=device), torch.as_tensor(selection, device=device), dtype)

    def _signs(self, rows, round_index, like):
        chosen = self.negative[:, round_index] if rows is None else self.negative[_rows(rows, self.n_points, self.device), round_index]
        return 1.0 - 2.0 * _broadcast(chosen, like).to(like.dtype)

    def coefficients(self, v, rows=None):
        for round_index in range(self.negative.shape[1]):
            v = real_fourier(v * self._signs(rows, round_index, v))
        chosen = self.selection if rows is None else self.selection[_rows(rows, self.n_points, self.device)]
        return v.gather(-1, _broadcast(chosen, v).expand(*v.shape[:-1], self.dim))

    def expand(self, c, rows=None):
        chosen = self.selection if rows is None else self.selection[_rows(rows, self.n_points, self.device)]
        v = c.new_zeros(*c.shape[:-1], self.ambient_dim).scatter(-1, _broadcast(chosen, c).expand_as(c), c)
        for round_index in reversed(range(self.negative.shape[1])):
            v = real_fourier_transpose(v) * self._signs(rows, round_index, v)
        return v

    def select(self, rows):
        index = _rows(rows, self.n_points, self.device)
        return StructuredRandomSubspace(self.negative[index], self.selection[index], self.dtype)

    def to(self, device=None, dtype=None):
        device = device or self.device
        return StructuredRandomSubspace(self.negative.to(device), self.selection.to(device), dtype or self.dtype)

    @property
    def stored_bytes(self):
        return self.negative.numel() + self.selection.numel() * self.selection.element_size()
