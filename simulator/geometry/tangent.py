"""Tangent fraction of the margin gradient (DESIGN.md section 4, item 1).

tau(x) = ||P_T g|| / ||g|| with g = grad_x f(x), f the predicted-label margin. tau = 0 means the
gradient is perpendicular to the manifold (what the dimpled model predicts), tau = 1 means it
lies in the tangent space. An isotropic random vector has E[tau^2] = k/n, the baseline.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from simulator.attacks.subspaces import as_subspace
from simulator.geometry.margins import predicted_margin


def margin_gradients(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """g = grad_x f(x) for each point. (N, n) -> (N, n), detached.

    One backward pass of the summed margins: each point's margin depends on that point only (a
    model in eval mode mixes no rows), so the gradient of the sum holds every point's gradient,
    the same numbers as a per-point vmap at a fraction of its overhead."""
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(predicted_margin(model(points)).sum(), points)
    return gradient.detach()


def tangent_fractions(vectors: torch.Tensor, tangent_bases) -> torch.Tensor:
    """tau = ||U^T v|| / ||v|| (U orthonormal, so ||U^T v|| = ||U U^T v||). vectors (N, n); the
    tangent spaces a Subspace operator or dense bases (N, n, k) -> (N,).

    Zero vectors give NaN (no direction to measure).
    """
    along = as_subspace(tangent_bases, len(vectors)).to(device=vectors.device, dtype=vectors.dtype) \
        .coefficients(vectors).norm(dim=1)
    norm = vectors.norm(dim=1)
    return torch.where(norm > 0, along / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.nan)


def summarize_tangent_fractions(tau: np.ndarray, dim: int, ambient_dim: int) -> dict:
    """Mean and RMS tau, the mean angle to the tangent space, and the random baseline sqrt(k/n)."""
    tau = np.asarray(tau, dtype=float)
    valid = tau[np.isfinite(tau)]
    baseline = math.sqrt(dim / ambient_dim)
    rms = float(np.sqrt(np.mean(valid**2))) if valid.size else math.nan
    return {
        "n_points": int(valid.size),
        "mean_tau": float(valid.mean()) if valid.size else math.nan,
        "rms_tau": rms,
        "mean_angle_deg": float(np.degrees(np.arccos(np.clip(valid, 0, 1))).mean()) if valid.size else math.nan,
        "baseline_rms_tau": baseline,  # sqrt(k/n): an isotropic random direction
        "ratio_to_baseline": rms / baseline,
    }
