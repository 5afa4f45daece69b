"""Stretch spectra of the penultimate features (DESIGN.md section 4, item 5).

J = d h(x) / d x for the last hidden layer h. Its singular values say how much each input
direction stretches the features; the top right-singular vector v_1 is the most stretched
input direction. The stretchy-features view says adversarial perturbations push along v_1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import jacfwd, jacrev, vmap

from simulator.attacks.subspaces import as_subspace


def feature_jacobians(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """J = d features / d x per point. Needs `model.features`. (N, n) -> (N, m, n), detached."""
    return batched_jacobians(model.features, points)


def batched_jacobians(function, points: torch.Tensor) -> torch.Tensor:
    """d function / d x at each point, (N, d) -> (N, m, d), detached; `function` maps (B, d) to
    (B, m) row by row. Forward mode (d Jacobian-vector products) when the input is the narrower
    side, reverse mode (m vector-Jacobian products) otherwise: at d = 3 inputs and m = 400
    features forward mode is ~100x less work (measured: 0.3 s -> ms per snapshot)."""

    def of_one(point: torch.Tensor) -> torch.Tensor:
        return function(point.unsqueeze(0))[0]

    outputs = function(points[:1]).shape[-1]
    mode = jacfwd if points.shape[-1] < outputs else jacrev
    return vmap(mode(of_one))(points).detach()


def spectra(jacobians: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values (N, min(m, n)), descending, and the top right singular vector v_1 (N, n)
    of each J (N, m, n), in float64.

    From the eigenvalues of the smaller Gram matrix G (J^T J or J J^T) rather than an SVD, and
    v_1 by inverse iteration on G at its top eigenvalue: the same numbers to ~1e-13 relative
    for the top of the spectrum and 10-50x faster at n = 784 (batched SVD and eigenvector
    solvers are slow on CPU). Singular values below `GRAM_RESOLUTION` x sigma_1 are beyond what
    a Gram matrix resolves in float64 and are returned as 0 (rank-deficient)."""
    jacobians = jacobians.double()
    m, n = jacobians.shape[1:]
    if n <= m:
        return gram_spectrum(jacobians.transpose(1, 2) @ jacobians)
    values, left = gram_spectrum(jacobians @ jacobians.transpose(1, 2))  # G = J J^T gives u_1
    return values, _unit(torch.einsum("pmn,pm->pn", jacobians, left))  # v_1 = J^T u_1 / sigma_1


def gram_spectrum(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values (N, d), descending, of the J whose Gram matrices (J^T J or J J^T) are
    `gram` (N, d, d), and the unit top eigenvector (N, d) of each (see `spectra`)."""
    eigenvalues = torch.linalg.eigvalsh(gram)  # ascending
    top = _top_eigenvector(gram, eigenvalues[:, -1])
    squared = eigenvalues.flip(-1).clamp_min(0)
    resolved = squared > (GRAM_RESOLUTION**2) * squared[:, :1]
    return torch.where(resolved, squared.sqrt(), torch.zeros_like(squared)), top


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)


def _top_eigenvector(gram: torch.Tensor, top_value: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Unit eigenvectors (N, d) of symmetric G (N, d, d) for their largest eigenvalues, by
    inverse iteration shifted just above them (converges in one or two solves; the shift keeps
    shift I - G positive definite). A degenerate top eigenvalue gives some unit vector of its
    eigenspace, as an SVD would."""
    d = gram.shape[-1]
    # G = 0 (a Jacobian that vanishes, e.g. every unit dead) has no top direction: shift by 1 there.
    gap = torch.where(top_value > 0, 1e-10 * top_value, torch.ones_like(top_value))
    # shift I - G is symmetric positive definite (shift above every eigenvalue): Cholesky solves,
    # as two triangular solves (4x faster than batched cholesky_solve on CPU, measured at d = 256).
    shifted = gram.neg()
    shifted.diagonal(dim1=-2, dim2=-1).add_((top_value + gap)[:, None])
    factor = torch.linalg.cholesky_ex(shifted)[0]
    vector = torch.ones(gram.shape[0], d, 1, dtype=gram.dtype, device=gram.device) \
        + torch.linspace(0, 1, d, dtype=gram.dtype, device=gram.device)[None, :, None]  # not orthogonal to v_1
    for _ in range(iterations):
        vector = torch.linalg.solve_triangular(factor, vector, upper=False)
        vector = torch.linalg.solve_triangular(factor.mT, vector, upper=True)
        vector = vector / vector.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gram.dtype).tiny)
    return torch.nan_to_num(vector[..., 0])


# Relative size below which a singular value is not resolved from the Gram matrix in float64
# (its square sits at the eigensolver's round-off, ~1e-16 x sigma_1^2).
GRAM_RESOLUTION = 1e-7
# Bytes of feature Jacobians (float32, points x width x n) computed at once.
JACOBIAN_CHUNK_BYTES = 64 * 2**20


def point_stretch(model: torch.nn.Module, x: torch.Tensor, tangent) -> dict[str, torch.Tensor]:
    """Per-point stretch quantities at x (N, n) against tangent spaces (a Subspace or dense
    bases (N, n, k)), computed over chunks of points so that at most `JACOBIAN_CHUNK_BYTES` of
    Jacobians exist at a time: singular values (N, r), top direction v_1 (N, n), total energy
    ||J||_F^2 and tangent energy ||J U||_F^2 (N,).

    An MLP wider in its input than in its first hidden layer (n > h1) is measured through that
    layer: J = A W1 with A = d features / d z1, so J J^T = A (W1 W1^T) A^T and J U = A (W1 U),
    and no (N, m, n) Jacobian is formed (at n = 3072 its Gram matrices cost 5x the rest)."""
    tangent = as_subspace(tangent, len(x))
    n = x.shape[1]
    split = model.first_layer_split() if hasattr(model, "first_layer_split") else None
    width = model.features(x[:1]).shape[-1]
    through_first_layer = split is not None and split[0].out_features < n and width <= n
    columns = split[0].out_features if through_first_layer else n
    chunk = max(1, JACOBIAN_CHUNK_BYTES // (4 * width * columns))
    parts = []
    for start in range(0, len(x), chunk):
        rows = torch.arange(start, min(start + chunk, len(x)), device=x.device)
        if through_first_layer:
            parts.append(_first_layer_stats(split, x[rows], tangent, rows))
        else:
            parts.append(_jacobian_stats(feature_jacobians(model, x[rows]), tangent, rows))
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _first_layer_stats(split, x: torch.Tensor, tangent, rows) -> dict[str, torch.Tensor]:
    """`_jacobian_stats` for J = A W1 without forming J (see `point_stretch`); needs m <= n."""
    first, features_of_z, _ = split
    with torch.no_grad():
        z = first(x)
    inner = batched_jacobians(features_of_z, z).double()  # A (R, m, h1)
    weight = first.weight.detach().double()  # W1 (h1, n)
    gram = inner @ (weight @ weight.T) @ inner.transpose(1, 2)  # J J^T (R, m, m)
    values, left = gram_spectrum(gram)
    top = _unit((inner.transpose(1, 2) @ left[..., None])[..., 0] @ weight)  # J^T u_1 = W1^T A^T u_1
    tangent = tangent.to(device=x.device, dtype=torch.float64)
    total = gram.diagonal(dim1=1, dim2=2).sum(-1)  # ||J||_F^2 = trace(J J^T)
    return {"singular_values": values, "top_direction": top, "total": total,
            "tangent_energy": tangent.shared_energy(inner, weight, rows, total),
            "top_tangent": tangent.coefficients(top, rows).norm(dim=1)}


def _jacobian_stats(jacobians: torch.Tensor, tangent, rows=None) -> dict[str, torch.Tensor]:
    """`point_stretch`'s quantities for Jacobians (R, m, n) of the points `rows` of `tangent`."""
    jacobians = jacobians.double()
    tangent = tangent.to(device=jacobians.device, dtype=torch.float64)
    values, top = spectra(jacobians)
    return {"singular_values": values, "top_direction": top, "total": jacobians.pow(2).sum(dim=(1, 2)),
            "tangent_energy": tangent.coefficients(jacobians, rows).pow(2).sum(dim=(1, 2)),
            "top_tangent": tangent.coefficients(top, rows).norm(dim=1)}


def stretch_spectra(jacobians_or_model, tangent_bases, feature_directions: dict | None = None,
                    x: torch.Tensor | None = None) -> dict:
    """Summaries of the feature Jacobians J (N, m, n) against the tangent spaces U (a Subspace
    or dense (N, n, k)); or, with `x`, of `model`'s Jacobians at x computed in chunks.

    - singular values (mean over points of the sorted spectrum) and the stretch ratio
      sigma_1 / sigma_min (median over points; inf where J is rank-deficient);
    - normal energy share ||J P_N||_F^2 / ||J||_F^2 against the isotropic baseline (n-k)/n;
    - tangent fraction ||P_T v_1|| of the most stretched input direction v_1;
    - with named unit `feature_directions` ({name: (N, n)}, e.g. a stretchy scene's shape and
      fur), the mean |<v_1, d>| per feature: which feature the network stretches most.
    """
    if x is None:
        jacobians = jacobians_or_model
        point = _jacobian_stats(jacobians, as_subspace(tangent_bases, len(jacobians)))
        n = jacobians.shape[2]
    else:
        point = point_stretch(jacobians_or_model, x, tangent_bases)
        n = x.shape[1]
    k = as_subspace(tangent_bases, len(point["total"])).dim
    singular_values, top_direction, total = point["singular_values"], point["top_direction"], point["total"]
    normal_share = 1 - point["tangent_energy"] / total
    smallest = singular_values[:, -1]
    ratio = torch.where(smallest > 0, singular_values[:, 0] / smallest, torch.inf)
    alignment = {}
    for name, direction in (feature_directions or {}).items():
        direction = torch.as_tensor(np.asarray(direction), dtype=top_direction.dtype, device=top_direction.device)
        alignment[name] = float((top_direction * direction).sum(dim=1).abs().mean())
    return {
        **({"top_direction_feature_alignment": alignment} if alignment else {}),
        "n_points": int(total.shape[0]),
        "mean_singular_values": singular_values.mean(dim=0).tolist(),
        "median_stretch_ratio": float(ratio.median()),
        "normal_energy_share": float(normal_share[total > 0].mean()),
        "normal_energy_baseline": (n - k) / n,
        "top_direction_tangent_fraction": float(point["top_tangent"].mean()),
        "top_direction_tangent_baseline": float(np.sqrt(k / n)),
    }
