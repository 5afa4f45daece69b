"""Shared fixtures: tiny-budget scenes so the whole suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO / "scenes"
# Synthetic scenes (real-image experiments, `kind: real`, are files named real_*.yaml).
SYNTHETIC_SCENES = sorted(p for p in SCENES.glob("*.yaml") if not p.name.startswith("real_"))


def fit_full_batch(model, x, y, steps: int, lr: float = 1e-2):
    """Fit a small classifier by full-batch Adam on cross-entropy, then freeze it in eval mode
    (the hand-trained models of the attack tests)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.fixture
def tiny_overrides():
    """Overrides that make any scene train in about a second."""
    return dict(TINY_OVERRIDES)


# Overrides that make any scene train in about a second (also for module-scoped fixtures).
TINY_OVERRIDES = {"train.steps": 60, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 50,
                  "snapshots.count": 5, "train.device": "cpu", "render.cross_section_resolution": 32,
                  "measure.height_resolution": 12, "measure.final_height_resolution": 16,
                  "measure.attacks.bootstrap": 50, "render.grid_resolution": 16, "render.window_size": [200, 150],
                  "render.animation": False, "render.report": False}
