"""What every matplotlib figure of the project shares: the Agg backend and an atomic PNG write.

matplotlib itself is imported when a figure is drawn, not with this module: the core library
never needs a plotting backend.
"""

from __future__ import annotations

from pathlib import Path

from simulator.runs.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (draws into memory: no display needed)."""
    import matplotlib  # deferred: a heavy library that only figures need

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: str | Path, dpi: int) -> Path:
    """Write `figure` to `path` as a PNG (atomically) and close it; returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    pyplot().close(figure)
    return path
