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


@pytest.fixture
def tiny_overrides():
    """Overrides that make any scene train in about a second."""
    return {"train.steps": 60, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 50,
            "snapshots.count": 5, "train.device": "cpu", "render.cross_section_resolution": 32,
            "measure.height_resolution": 12, "measure.final_height_resolution": 16,
            "measure.attacks.bootstrap": 50, "render.grid_resolution": 16, "render.window_size": [200, 150],
            "render.animation": False, "render.report": False}
