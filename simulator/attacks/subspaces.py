"""Subspaces an attack may move in, and the projections onto them (DESIGN.md section 4, item 3).

Every attack mode names a subspace of R^n per point, given by an orthonormal basis B (N, n, k):

    free                 R^n itself (no basis)
    on / off             the manifold's tangent space / its orthogonal complement
    random_on / _off     a fresh Haar-random k-dim subspace per point / its complement
    coordinate_on / _off k random input coordinates per point / the other n - k (the critique's control)

`MODES` (the keys of `PROJECTIONS`) is the one list of mode names: the scene schema's
`measure.attacks.modes` is derived from it. Bases are seeded per point, so point i's subspace
depends on (seed, i) only.
"""

from __future__ import annotations

import numpy as np
import torch

# Salts so that the random-subspace, coordinate-subset and random-start streams never share draws.
_RANDOM_SUBSPACE, _COORDINATE_SUBSET, _RANDOM_START = 1, 2, 3


def project_onto(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """B B^T v for orthonormal bases. v (N, n); basis (N, n, k) or (n, k) shared -> (N, n)."""
    if basis.dim() == 2:
        return (v @ basis) @ basis.T
    coefficients = torch.einsum("bnk,bn->bk", basis, v)
    return torch.einsum("bnk,bk->bn", basis, coefficients)


def project_off(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """v - B B^T v: the component orthogonal to span(B). Shapes as in `project_onto`."""
    return v - project_onto(v, basis)


def _point_rng(seed: int, salt: int, index: int) -> np.random.Generator:
    # Point i's stream depends on (seed, i) only, so it is the same however many points are drawn.
    return np.random.default_rng([int(seed), salt, int(index)])


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


def coordinate_subset_bases(n_points: int, ambient_dim: int, dim: int, seed: int,
                            device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                            first_index: int = 0) -> torch.Tensor:
    """One-hot bases (n_points, n, k): k distinct random input coordinates per point, seeded per point."""
    if not 1 <= dim <= ambient_dim:
        raise ValueError(f"dim: must be in 1..ambient_dim={ambient_dim}, got {dim}")
    coordinates = np.stack([_point_rng(seed, _COORDINATE_SUBSET, first_index + i).choice(ambient_dim, dim, replace=False)
                            for i in range(n_points)]).reshape(n_points, dim)
    out = torch.zeros(n_points, ambient_dim, dim, dtype=dtype, device=device)
    out.scatter_(1, torch.as_tensor(coordinates, device=out.device)[:, None, :], 1.0)
    return out


def gaussian_directions(indices, count: int, ambient_dim: int, seed: int, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(indices), count, n) standard Gaussian vectors, point i's drawn from its own (seed, i)
    stream (i from `indices`): the random starts of the minimal-distance search."""
    indices = [int(i) for i in indices]
    draws = np.stack([_point_rng(seed, _RANDOM_START, i).standard_normal((count, ambient_dim)) for i in indices])
    return torch.as_tensor(draws.reshape(len(indices), count, ambient_dim), dtype=dtype, device=device)


def subspace_frame(mode: str, x: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """An orthonormal basis (N, n, d) of the subspace a mode searches: the identity for `free`,
    the mode's basis for the `*_on` modes, an orthonormal basis of its complement for the `*_off`
    modes (the last n - k columns of a complete QR). Meant for small d: it is N x n x d floats,
    and a complement costs a complete QR of size n x n per point."""
    n_points, ambient_dim = x.shape
    if mode == "free":
        return torch.eye(ambient_dim, dtype=x.dtype, device=x.device).expand(n_points, ambient_dim, ambient_dim)
    if PROJECTIONS[mode] is project_onto:
        return basis
    q = torch.linalg.qr(basis.double(), mode="complete")[0]
    return q[:, :, basis.shape[-1]:].to(x.dtype)


def mode_bases(mode: str, x: torch.Tensor, tangent_bases=None, dim: int | None = None,
               seed: int = 0) -> torch.Tensor | None:
    """The basis (N, n, k) whose span (`*_on`, `on`) or complement (`*_off`, `off`) a mode uses;
    None for `free`. `tangent_bases` (N, n, k) or (n, k) for on/off; `dim` (or the tangent bases'
    k) and `seed` for the random and coordinate modes."""
    n_points, ambient_dim = x.shape
    if mode == "free":
        return None
    if tangent_bases is not None:
        tangent_bases = torch.as_tensor(tangent_bases, dtype=x.dtype, device=x.device)
        if tangent_bases.dim() == 2:
            tangent_bases = tangent_bases.expand(n_points, *tangent_bases.shape)
        if tangent_bases.dim() != 3 or tangent_bases.shape[:2] != (n_points, ambient_dim):
            raise ValueError(f"tangent_bases: expected ({n_points}, {ambient_dim}, k) or ({ambient_dim}, k), "
                             f"got {tuple(tangent_bases.shape)}")
    if mode in ("on", "off"):
        if tangent_bases is None:
            raise ValueError(f"mode {mode!r} needs tangent_bases (N, n, k)")
        return tangent_bases
    dim = dim if dim is not None else (None if tangent_bases is None else tangent_bases.shape[-1])
    if dim is None:
        raise ValueError(f"mode {mode!r} needs a subspace dimension: pass dim= or tangent_bases")
    make = random_subspace_bases if mode.startswith("random") else coordinate_subset_bases
    return make(n_points, ambient_dim, dim, seed, device=x.device, dtype=x.dtype)


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
