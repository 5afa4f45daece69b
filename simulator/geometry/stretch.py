"""Stretch spectra of the penultimate features (DESIGN.md section 4, item 5).

J = d h(x) / d x for the last hidden layer h. Its singular values say how much each input
direction stretches the features; the top right-singular vector v_1 is the most stretched
input direction. The stretchy-features view says adversarial perturbations push along v_1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import jacrev, vmap


def feature_jacobians(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """J = d features / d x per point. Needs `model.features`. (N, n) -> (N, m, n), detached."""

    def features_of_one(point: torch.Tensor) -> torch.Tensor:
        return model.features(point.unsqueeze(0))[0]

    return vmap(jacrev(features_of_one))(points).detach()


def stretch_spectra(jacobians: torch.Tensor, tangent_bases: torch.Tensor,
                    feature_directions: dict | None = None) -> dict:
    """Summaries of the feature Jacobians J (N, m, n) against the tangent bases U (N, n, k).

    - singular values (mean over points of the sorted spectrum) and the stretch ratio
      sigma_1 / sigma_min (median over points; inf where J is rank-deficient);
    - normal energy share ||J P_N||_F^2 / ||J||_F^2 against the isotropic baseline (n-k)/n;
    - tangent fraction ||P_T v_1|| of the most stretched input direction v_1;
    - with named unit `feature_directions` ({name: (N, n)}, e.g. a stretchy scene's shape and
      fur), the mean |<v_1, d>| per feature: which feature the network stretches most.
    """
    jacobians = jacobians.double()
    bases = tangent_bases.to(jacobians)
    _, n, k = bases.shape
    singular_values, right = torch.linalg.svd(jacobians, full_matrices=False)[1:]
    top_direction = right[:, 0, :]  # (N, n)
    total = jacobians.pow(2).sum(dim=(1, 2))
    tangent_energy = torch.einsum("nmi,nik->nmk", jacobians, bases).pow(2).sum(dim=(1, 2))
    normal_share = 1 - tangent_energy / total
    top_tangent = torch.einsum("nik,ni->nk", bases, top_direction).norm(dim=1)
    smallest = singular_values[:, -1]
    ratio = torch.where(smallest > 0, singular_values[:, 0] / smallest, torch.inf)
    alignment = {}
    for name, direction in (feature_directions or {}).items():
        direction = torch.as_tensor(np.asarray(direction), dtype=top_direction.dtype, device=top_direction.device)
        alignment[name] = float((top_direction * direction).sum(dim=1).abs().mean())
    return {
        **({"top_direction_feature_alignment": alignment} if alignment else {}),
        "n_points": int(jacobians.shape[0]),
        "mean_singular_values": singular_values.mean(dim=0).tolist(),
        "median_stretch_ratio": float(ratio.median()),
        "normal_energy_share": float(normal_share[total > 0].mean()),
        "normal_energy_baseline": (n - k) / n,
        "top_direction_tangent_fraction": float(top_tangent.mean()),
        "top_direction_tangent_baseline": float(np.sqrt(k / n)),
    }
