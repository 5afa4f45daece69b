"""Subspaces an attack may move in, and the projections onto them (DESIGN.md section 4, item 3).

Every attack mode names a subspace of R^n per point, a `Subspace` operator
(simulator.attacks.operators) with orthonormal bases B (N, n, k) that are applied, not stored:

    free                 R^n itself (no operator)
    on / off             the manifold's tangent space / its orthogonal complement
    random_on / _off     a fresh random k-dim subspace per point / its complement: Haar-random
                         (a dense QR basis) while n k <= HAAR_MAX_ENTRIES, else a structured
                         random orthogonal operator with O(n) memory
    coordinate_on / _off k random input coordinates per point / the other n - k (the critique's
                         control), an index set

`MODES` (the keys of `PROJECTIONS`) is the one list of mode names: the scene schema's
`measure.attacks.modes` is derived from it. Bases are seeded per point, so point i's subspace
depends on (seed, i) only.
"""

from __future__ import annotations

import numpy as np
import torch

from simulator.attacks.operators import (
    CoordinateSubset,
    DenseBasis,
    FactoredBasis,
    HypersurfaceTangents,
    StructuredRandomSubspace,
    Subspace,
)

# Salts so that the random-subspace, coordinate-subset and random-start streams never share draws.
_RANDOM_SUBSPACE, _COORDINATE_SUBSET, _RANDOM_START = 1, 2, 3
# Largest random subspace (n x k entries) drawn as a dense Haar-random basis: 1 MiB per point in
# float64 for its QR (784 x 50 and 3072 x 32 are below it). Larger ones are structured operators.
HAAR_MAX_ENTRIES = 2**17


def as_subspace(basis, n_points: int | None = None) -> Subspace | None:
    """A `Subspace` from a Subspace (returned as is), a dense basis tensor (N, n, k) or (n, k), or None."""
    if basis is None or isinstance(basis, Subspace):
        return basis
    return DenseBasis(torch.as_tensor(basis), n_points=n_points)


def project_onto(v: torch.Tensor, basis, rows=None) -> torch.Tensor:
    """B B^T v: each row of v (R, n) projected onto its point's subspace (`rows`: which point
    each row belongs to; None = row i is point i). `basis`: a Subspace, or a dense basis
    (N, n, k) or (n, k) shared."""
    return as_subspace(basis, len(v)).project(v, rows)


def project_off(v: torch.Tensor, basis, rows=None) -> torch.Tensor:
    """v - B B^T v: the component orthogonal to span(B). Arguments as in `project_onto`."""
    return as_subspace(basis, len(v)).remove(v, rows)


def _point_rng(seed: int, salt: int, index: int) -> np.random.Generator:
    # Point i's stream depends on (seed, i) only, so it is the same however many points are drawn.
    return np.random.default_rng([int(seed), salt, int(index)])


def random_subspace_kind(ambient_dim: int, dim: int) -> str:
    """Which random subspaces the random modes use in R^n at dimension k: "haar" (a dense
    Haar-random basis per point, QR of a Gaussian) while one basis has at most
    `HAAR_MAX_ENTRIES` entries, else "structured" (`StructuredRandomSubspace`, O(n) memory)."""
    return "haar" if ambient_dim * dim <= HAAR_MAX_ENTRIES else "structured"


def random_subspace_bases(n_points: int, ambient_dim: int, dim: int, seed: int,
                          device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                          first_index: int = 0, chunk: int = 256) -> torch.Tensor:
    """Orthonormal bases (n_points, n, k) of independent Haar-random k-dim subspaces of R^n.

    Point i (counting from `first_index`) gets QR of its own seeded Gaussian (n, k) matrix, with
    signs fixed so that diag(R) > 0 (then span and basis are Haar-distributed and do not depend
    on LAPACK's sign choice). QR runs in float64 in chunks, then the bases are cast to `dtype`.
    """
    if not 1 <= dim <= ambient_dim:
        raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
    out = torch.empty(n_points, ambient_dim, dim, dtype=dtype, device=device)
    for start in range(0, n_points, chunk):
        stop = min(start + chunk, n_points)
        gaussian = np.stack([_point_rng(seed, _RANDOM_SUBSPACE, first_index + i).standard_normal((ambient_dim, dim))
                             for i in range(start, stop)])
        q, r = torch.linalg.qr(torch.from_numpy(gaussian))
        signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(q.dtype)
        out[start:stop] = (q * signs[:, None, :]).to(device=out.device, dtype=dtype)
    return out


def random_subspaces(n_points: int, ambient_dim: int, dim: int, seed: int, device=None,
                     dtype: torch.dtype = torch.float32, first_index: int = 0, kind: str | None = None) -> Subspace:
    """Independent seeded random k-dim subspaces, one per point, of the kind
    `random_subspace_kind` picks (or `kind`: "haar" or "structured")."""
    kind = kind or random_subspace_kind(ambient_dim, dim)
    if kind == "haar":
        return DenseBasis(random_subspace_bases(n_points, ambient_dim, dim, seed, device, dtype, first_index))
    if kind == "structured":
        return StructuredRandomSubspace.draw(n_points, ambient_dim, dim, seed, first_index, device, dtype)
    raise ValueError(f"kind: must be 'haar' or 'structured', got {kind!r}")


def coordinate_subsets(n_points: int, ambient_dim: int, dim: int, seed: int, device=None,
                       dtype: torch.dtype = torch.float32, first_index: int = 0) -> CoordinateSubset:
    """k distinct random input coordinates per point, seeded per point, as an index set."""
    if not 1 <= dim <= ambient_dim:
        raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
    coordinates = np.stack([_point_rng(seed, _COORDINATE_SUBSET, first_index + i).choice(ambient_dim, dim, replace=False)
                            for i in range(n_points)]).reshape(n_points, dim)
    return CoordinateSubset(torch.as_tensor(coordinates, device=device), ambient_dim, dtype)


def coordinate_subset_bases(n_points: int, ambient_dim: int, dim: int, seed: int,
                            device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                            first_index: int = 0) -> torch.Tensor:
    """The one-hot bases (n_points, n, k) of `coordinate_subsets` (for tests and small n)."""
    return coordinate_subsets(n_points, ambient_dim, dim, seed, device, dtype, first_index).basis()


def gaussian_directions(indices, count: int, ambient_dim: int, seed: int, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(indices), count, n) standard Gaussian vectors, point i's drawn from its own (seed, i)
    stream (i from `indices`): the random starts of the minimal-distance search."""
    indices = [int(i) for i in indices]
    draws = np.stack([_point_rng(seed, _RANDOM_START, i).standard_normal((count, ambient_dim)) for i in indices])
    return torch.as_tensor(draws.reshape(len(indices), count, ambient_dim), dtype=dtype, device=device)


def tangent_spaces(manifold, u, device=None, dtype: torch.dtype | None = None) -> FactoredBasis:
    """The manifold's exact tangent spaces at chart points u (N, k) as an operator: its isometric
    embedding E (n, h) and the host-space bases Q(u) (N, h, k), B = E Q(u) (N h k + n h numbers).
    Each basis follows the chart directions (QR of the chart Jacobian, signs fixed)."""
    dtype = dtype or torch.float32
    return FactoredBasis(torch.as_tensor(manifold.embedding_matrix, dtype=dtype, device=device),
                         torch.as_tensor(manifold.host_tangent_basis(u), dtype=dtype, device=device))


def tangent_subspaces(manifold, u, device=None, dtype: torch.dtype | None = None) -> HypersurfaceTangents:
    """The same tangent spaces as `tangent_spaces`, from the host unit normals alone (every
    family is a hypersurface of its host space): N h + n h numbers and no per-point QR, for
    measurements that depend on the spaces and not on a basis (tangent fractions, stretch)."""
    dtype = dtype or torch.float32
    return HypersurfaceTangents(torch.as_tensor(manifold.embedding_matrix, dtype=dtype, device=device),
                                torch.as_tensor(manifold.host_unit_normal(u), dtype=dtype, device=device))


def subspace_frame(mode: str, x: torch.Tensor, basis, rows=None) -> torch.Tensor:
    """An orthonormal basis (R, n, d) of the subspace a mode searches at the points `rows` (None:
    every point of x): the identity for `free`, the mode's basis for the `*_on` modes, an
    orthonormal basis of its complement for the `*_off` modes (the last n - k columns of a
    complete QR). Meant for small d: it is R x n x d floats, and a complement costs a complete QR
    of size n x n per point."""
    count = len(x) if rows is None else len(rows)
    ambient_dim = x.shape[1]
    if mode == "free":
        return torch.eye(ambient_dim, dtype=x.dtype, device=x.device).expand(count, ambient_dim, ambient_dim)
    dense = as_subspace(basis, len(x)).basis(rows, dtype=x.dtype)
    if PROJECTIONS[mode] is project_onto:
        return dense
    q = torch.linalg.qr(dense.double(), mode="complete")[0]
    return q[:, :, dense.shape[-1]:].to(x.dtype)


def mode_subspace(mode: str, x: torch.Tensor, tangent=None, dim: int | None = None, seed: int = 0) -> Subspace | None:
    """The subspace family whose span (`*_on`, `on`) or complement (`*_off`, `off`) a mode uses;
    None for `free`. `tangent`: the tangent spaces at x for on/off (a Subspace, or a dense basis
    (N, n, k) or (n, k)); `dim` (or the tangent spaces' k) and `seed` for the random and
    coordinate modes."""
    n_points, ambient_dim = x.shape
    if mode == "free":
        return None
    if tangent is not None:
        if not isinstance(tangent, Subspace):
            tangent = torch.as_tensor(tangent, dtype=x.dtype, device=x.device)
            if tangent.dim() not in (2, 3) or tangent.shape[-2] != ambient_dim or \
                    (tangent.dim() == 3 and tangent.shape[0] != n_points):
                raise ValueError(f"tangent_bases: expected ({n_points}, {ambient_dim}, k) or ({ambient_dim}, k), "
                                 f"got {tuple(tangent.shape)}")
        tangent = as_subspace(tangent, n_points).to(device=x.device, dtype=x.dtype)
        if tangent.n_points != n_points or tangent.ambient_dim != ambient_dim:
            raise ValueError(f"tangent spaces: expected {n_points} subspaces of R^{ambient_dim}, got "
                             f"{tangent.n_points} of R^{tangent.ambient_dim}")
    if mode in ("on", "off"):
        if tangent is None:
            raise ValueError(f"mode {mode!r} needs tangent spaces (tangent_bases (N, n, k) or a Subspace)")
        return tangent
    dim = dim if dim is not None else (None if tangent is None else tangent.dim)
    if dim is None:
        raise ValueError(f"mode {mode!r} needs a subspace dimension: pass dim= or tangent_bases")
    if mode.startswith("random"):
        return random_subspaces(n_points, ambient_dim, dim, seed, device=x.device, dtype=x.dtype)
    return coordinate_subsets(n_points, ambient_dim, dim, seed, device=x.device, dtype=x.dtype)


# Mode name -> the projector onto its subspace (None: free). A `*_off` mode's basis spans the
# subspace it avoids, so its projector removes that span.
PROJECTIONS = {"free": None, "on": project_onto, "off": project_off, "random_on": project_onto,
               "random_off": project_off, "coordinate_on": project_onto, "coordinate_off": project_off}
MODES = tuple(PROJECTIONS)
# Modes that need the manifold's tangent bases; the others (the controls) run without a manifold estimate.
MANIFOLD_MODES = ("on", "off")
CONTROL_MODES = tuple(mode for mode in MODES if mode not in MANIFOLD_MODES)
# The four modes manifold specificity MS is built from: (d_on / d_off) / (d_rand_on / d_rand_off).
SPECIFICITY_MODES = ("on", "off", "random_on", "random_off")


def subspace_dim(mode: str, dim: int, ambient_dim: int) -> int:
    """Dimension of the subspace a mode searches: n for free, k for the *_on modes, n - k for
    the *_off modes (`dim` = k, `ambient_dim` = n)."""
    check_mode(mode)
    if mode == "free":
        return ambient_dim
    return dim if mode.endswith("on") else ambient_dim - dim


def check_mode(mode: str) -> None:
    """Raise ValueError unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
