"""Histogram of minimal adversarial distances per attack mode (matplotlib PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_attack_norms(run, distances: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.report.attack_tables import PAPER_ROWS

    found = {mode: d[np.isfinite(d)] for mode, d in distances.items()}
    values = np.concatenate([d for d in found.values() if len(d)] or [np.ones(1)])
    bins = np.geomspace(max(values.min(), 1e-6) * 0.9, values.max() * 1.1, 40)
    figure, axis = plt.subplots(figsize=(8, 4.2))
    colours = plt.get_cmap("tab10")
    for index, (mode, d) in enumerate(found.items()):
        label, _ = PAPER_ROWS[mode]
        failed = int(np.sum(~np.isfinite(distances[mode])))
        suffix = f", {failed} not found" if failed else ""
        if len(d):
            axis.hist(d, bins=bins, histtype="step", lw=1.6, color=colours(index),
                      label=f"{label} (median {np.median(d):.3g}{suffix})")
            axis.axvline(np.median(d), color=colours(index), ls=":", lw=1)
        else:
            axis.plot([], [], color=colours(index), label=f"{label} (none found)")
    axis.set_xscale("log")
    axis.set_xlabel("minimal L2 perturbation (input units, log scale)")
    axis.set_ylabel("test points")
    axis.legend(fontsize=7, loc="upper right")
    axis.set_title(f"{run.scene.name}: adversarial distances per subspace (last snapshot)", fontsize=10)
    figure.tight_layout()
    from simulator.runs.io import atomic_path

    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=run.scene.render.dpi, format="png")
    plt.close(figure)
    return Path(path)
