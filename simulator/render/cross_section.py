"""2-D cross-sections: one tangent direction x the normal direction, through a data point.

The picture of the dimpled-manifold argument in one slice: the manifold is a curve through
the middle, the decision boundary is the black 0-level of the class margins, and dimples are
the places where the boundary bends around data points. The plane is the `SectionFrame` of
`simulator.boundary.frame` (`default_frame`: through the training point nearest the chart centre).
Classes have the palette's colours (`simulator.render.palette`), light for the regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from simulator.boundary.frame import SectionFrame
from simulator.geometry.margins import class_margins, logits_on
from simulator.render.palette import class_colour
from simulator.render.pyplot import pyplot, save_png


def signed_distance_to_manifold(manifold, x: np.ndarray) -> np.ndarray:
    """Signed distance along the manifold's normal at the nearest point. (N, n) -> (N,)."""
    u = manifold.chart(x)
    return np.einsum("ni,ni->n", x - manifold.immersion(u), manifold.unit_normal(u))


def plot_cross_sections(manifold, data, models: list[tuple[str, torch.nn.Module]], frame: SectionFrame,
                        path: Path, title: str, resolution: int = 200, dpi: int = 120) -> Path:
    """One panel per (label, model): class regions, decision boundary, manifold trace, data."""
    plt = pyplot()
    from matplotlib.colors import (  # deferred with pyplot: figures only
        ListedColormap,
        to_rgba_array,
    )

    a = frame.half_width
    s_axis = np.linspace(-a, a, resolution)
    r_axis = np.linspace(-a / 2, a / 2, resolution // 2)
    s_grid, r_grid = np.meshgrid(s_axis, r_axis)
    points = frame.points(s_grid, r_grid).reshape(-1, manifold.ambient_dim)
    cell = s_axis[1] - s_axis[0]
    # The manifold's trace: zero level of the signed distance, masked away from the manifold so
    # sign flips at the medial axis (e.g. between swiss-roll layers) do not draw false curves.
    distance = signed_distance_to_manifold(manifold, points).reshape(s_grid.shape)
    distance[np.abs(distance) > 3 * cell] = np.nan
    s_data, r_data, off_plane = frame.coordinates(data.x_train)
    near = (off_plane < 0.08 * a) & (np.abs(s_data) <= a) & (np.abs(r_data) <= a / 2)

    n_classes = data.n_classes
    palette = to_rgba_array([class_colour(c) for c in range(max(n_classes, 2))])  # (classes, 4)
    light = ListedColormap(0.3 * palette[:, :3] + 0.7)
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.4), squeeze=False)
    for axis, (label, model) in zip(axes[0], models):
        logits = logits_on(model, points)
        predicted = logits.argmax(axis=1).reshape(s_grid.shape)
        margins = class_margins(torch.from_numpy(logits)).numpy().reshape(*s_grid.shape, -1)
        axis.pcolormesh(s_grid, r_grid, predicted, cmap=light, vmin=-0.5, vmax=len(palette) - 0.5, shading="auto")
        for c in range(n_classes if n_classes > 2 else 1):  # with 2 classes d_1 = -d_0: one contour
            if np.nanmin(margins[..., c]) < 0 < np.nanmax(margins[..., c]):
                axis.contour(s_grid, r_grid, margins[..., c], levels=[0], colors="black", linewidths=1.4)
        if np.any(np.isfinite(distance)):
            axis.contour(s_grid, r_grid, distance, levels=[0], colors="tab:blue", linewidths=2.0, linestyles="--")
        axis.scatter(s_data[near], r_data[near], c=palette[data.y_train[near]], s=18, edgecolors="k", linewidths=0.5)
        axis.set_title(label, fontsize=9)
        axis.set_aspect("equal")
        axis.set_xlabel("tangent direction")
    axes[0][0].set_ylabel("normal direction")
    handles = [plt.Line2D([], [], color="black", lw=1.4, label="decision boundary"),
               plt.Line2D([], [], color="tab:blue", lw=2, ls="--", label="data manifold")]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return save_png(figure, path, dpi)
