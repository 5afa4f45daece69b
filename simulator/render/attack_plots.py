"""attack_norms.png: histograms of the minimal adversarial distances per attack mode (matplotlib),
drawn from the stored distances (`attack_distances.npz`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.formatting import fmt
from simulator.render.pyplot import pyplot, save_png
from simulator.report.attack_tables import PAPER_ROWS


def plot_attack_norms(distances: dict[str, np.ndarray], path: Path, name: str, dpi: int = 120) -> Path:
    """One step histogram per mode ({mode: (N,) distances, inf where none was found}), log scale,
    with each mode's median; `name` (the scene's) goes into the title."""
    plt = pyplot()
    found = {mode: d[np.isfinite(d)] for mode, d in distances.items()}
    values = np.concatenate([d for d in found.values() if len(d)] or [np.ones(1)])
    bins = np.geomspace(max(values.min(), 1e-6) * 0.9, values.max() * 1.1, 40)
    figure, axis = plt.subplots(figsize=(8, 4.2))
    # Modes are not classes: tab10 in mode order, as matplotlib's default colour cycle would give.
    colours = plt.get_cmap("tab10")
    for index, (mode, d) in enumerate(found.items()):
        label, _ = PAPER_ROWS[mode]
        failed = int(np.sum(~np.isfinite(distances[mode])))
        suffix = f", {failed} not found" if failed else ""
        if len(d):
            axis.hist(d, bins=bins, histtype="step", lw=1.6, color=colours(index),
                      label=f"{label} (median {fmt(np.median(d), 3)}{suffix})")
            axis.axvline(np.median(d), color=colours(index), ls=":", lw=1)
        else:
            axis.plot([], [], color=colours(index), label=f"{label} (none found)")
    axis.set_xscale("log")
    axis.set_xlabel("minimal L2 perturbation (input units, log scale)")
    axis.set_ylabel("test points")
    axis.legend(fontsize=7, loc="upper right")
    axis.set_title(f"{name}: adversarial distances per subspace (last snapshot)", fontsize=10)
    figure.tight_layout()
    return save_png(figure, path, dpi)
