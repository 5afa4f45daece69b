"""Margins: the scalar functions whose zero level sets are decision boundaries.

For logits z (..., C): the class margin d_c = z_c - max_{j != c} z_j is positive exactly where
class c wins, so the boundary of class c's region is {d_c = 0}. The margin of DESIGN.md,
f(x) = z_y - max_{j != y} z_j with y the predicted label, is max_c d_c (>= 0 everywhere).
"""

from __future__ import annotations

import numpy as np
import torch


def class_margins(logits: torch.Tensor) -> torch.Tensor:
    """d_c = z_c - max_{j != c} z_j for every class c. (..., C) -> (..., C)."""
    top2 = logits.topk(2, dim=-1).values
    best, runner_up = top2[..., :1], top2[..., 1:2]
    # For the winning class the best rival is the runner-up; for every other class it is the winner.
    rival = torch.where(logits == best, runner_up, best)
    return logits - rival


def predicted_margin(logits: torch.Tensor) -> torch.Tensor:
    """f = z_y - max_{j != y} z_j with y = argmax z (>= 0). (..., C) -> (...)."""
    top2 = logits.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def model_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of a model's parameters (float64 on the CPU for parameter-free models,
    such as the analytic classifiers the tests use)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.dtype, tensor.device
    return torch.float64, torch.device("cpu")


@torch.no_grad()
def logits_on(model: torch.nn.Module, points: np.ndarray, chunk: int = 65536,
              device: str | torch.device | None = None) -> np.ndarray:
    """Evaluate a model on many points (N, n) in bounded-memory chunks; returns logits (N, C)."""
    dtype, model_device = model_dtype_device(model)
    device = device or model_device
    outputs = [model(torch.as_tensor(block, dtype=dtype, device=device)).cpu()
               for block in np.array_split(points, max(1, int(np.ceil(len(points) / chunk))))]
    return torch.cat(outputs).double().numpy()
