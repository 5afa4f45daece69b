"""The length scale of a data set, from which every default length of a run is derived."""

from __future__ import annotations

import numpy as np


def data_radius(points: np.ndarray) -> float:
    """Largest distance of a point from the points' centroid: the scale of every default length."""
    return float(np.max(np.linalg.norm(points - points.mean(axis=0), axis=1)))
