"""Measurements over training steps, with the random baselines drawn (matplotlib PNG).

The dimpled-manifold paper claims a fast "clinging" phase (the clinging fraction jumps early)
then a slow "dimpling" phase (heights at the data grow while the rest stays put). The x axis is
the training step on a symmetric-log scale so both phases are visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.formatting import fmt
from simulator.render.pyplot import pyplot, save_png


def _series(snapshots, section, key):
    values = []
    for s in snapshots:
        block = s.get(section)
        value = None if block is None else block.get(key)
        values.append(np.nan if value is None else float(value))
    return np.asarray(values)


def plot_geometry_curves(run, path: Path, dpi: int | None = None) -> Path:
    plt = pyplot()

    geometry = run.metrics["geometry"]
    snapshots = geometry["snapshots"]
    steps = np.asarray([s["step"] for s in snapshots], dtype=float)
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    (cling_ax, height_ax), (tau_ax, stretch_ax) = axes

    has_height = np.isfinite(_series(snapshots, "height", "clinging_fraction"))
    line = geometry["settings"]["thresholds"]["clinging_fraction"]
    cling_ax.plot(steps[has_height], _series(snapshots, "height", "clinging_fraction")[has_height], "o-",
                  label="clinging fraction")
    cling_ax.plot(steps[has_height], _series(snapshots, "height", "interface_fraction")[has_height], "s-",
                  color="tab:purple", label="class-interface share")
    cling_ax.plot(steps[has_height], _series(snapshots, "height", "none_fraction")[has_height], "^-",
                  color="tab:orange", label="no boundary within t_max")
    cling_ax.plot(steps, [s["test_accuracy"] for s in snapshots], color="gray", lw=1, label="test accuracy")
    cling_ax.axhline(line, color="tab:red", ls=":", lw=1, label=f"verdict line {line:g}")
    cling_ax.set_ylim(-0.03, 1.03)
    epsilon = geometry["settings"]["clinging_epsilon"]
    cling_ax.set_title(f"share of the manifold with |h| < {fmt(epsilon, 3)}", fontsize=9)

    for key, label in (("median_abs_h_near_data", "near data"), ("median_abs_h_far_from_data", "far from data"),
                       ("median_abs_h_at_train_points", "at training points")):
        values = _series(snapshots, "height", key)
        height_ax.plot(steps[has_height], values[has_height], "o-", label=label)
    height_ax.axhline(geometry["settings"]["clinging_epsilon"], color="tab:red", ls=":", lw=1, label="eps")
    height_ax.axhline(geometry["settings"]["t_max"], color="gray", ls="--", lw=1, label="t_max (search limit)")
    height_ax.set_title("median |h|: boundary distance along the normal", fontsize=9)

    rms = _series(snapshots, "tangent", "rms_tau")
    tau_ax.plot(steps, rms, "o-", label="RMS tau of margin gradient")
    tau_ax.plot(steps, _series(snapshots, "tangent", "mean_tau"), "o-", ms=3, alpha=0.7, label="mean tau")
    tau_ax.axhline(snapshots[0]["tangent"]["baseline_rms_tau"], color="black", ls="--", lw=1,
                   label="random direction sqrt(k/n)")
    tau_ax.set_ylim(-0.03, 1.03)
    tau_ax.set_title("gradient tangent fraction (0 = perpendicular)", fontsize=9)

    has_stretch = np.asarray(["stretch" in s for s in snapshots])  # every measure.stretch_every-th
    if has_stretch.any():
        stretch_ax.plot(steps[has_stretch], _series(snapshots, "stretch", "normal_energy_share")[has_stretch], "o-",
                        label="feature Jacobian energy off-manifold")
        stretch_ax.plot(steps[has_stretch], _series(snapshots, "stretch", "top_direction_tangent_fraction")[has_stretch],
                        "o-", label="tangent fraction of most stretched direction")
        baseline = next(s["stretch"]["normal_energy_baseline"] for s in snapshots if "stretch" in s)
        stretch_ax.axhline(baseline, color="black", ls="--", lw=1,
                           label="isotropic (n-k)/n")
        stretch_ax.set_ylim(-0.03, 1.03)
    stretch_ax.set_title("stretch of the penultimate features", fontsize=9)

    for axis in axes.flat:
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(0, steps.max() * 1.15)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    for axis in axes[1]:
        axis.set_xlabel("training step (symlog)")
    figure.suptitle(f"{run.scene.name}: geometry over training", fontsize=11)
    figure.tight_layout()
    return save_png(figure, path, dpi or run.scene.render.dpi)
