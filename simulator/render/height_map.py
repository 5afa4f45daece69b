"""The height field h(u) over the chart as a heat map, training points overlaid (matplotlib PNG).

Reads the arrays the measure stage stores in height_field.npz. Blue = boundary below the manifold
(along -normal), red = above, white = on it; grey = no boundary within t_max. Black outlines
are class interfaces on the manifold (where the predicted label changes along the chart).
For k > 2 (random chart samples) the points are scattered over the first two chart axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.render.palette import class_colour
from simulator.render.pyplot import pyplot, save_png


def plot_height_map(run, path: Path) -> Path:
    plt = pyplot()

    with np.load(run.path / "height_field.npz") as stored:
        field = {key: stored[key] for key in stored.files}
    u, h, t_max = field["u"], field["h"], float(field["t_max"])
    grid_shape = tuple(int(v) for v in field["grid_shape"])
    figure, axis = plt.subplots(figsize=(6.4, 5.2))
    colormap = plt.get_cmap("RdBu_r").with_extremes(bad="0.75")  # grey: no boundary within t_max
    if len(grid_shape) == 2:
        shape = grid_shape
        heights = np.ma.masked_invalid(h.reshape(shape))
        first, second = u[:, 0].reshape(shape), u[:, 1].reshape(shape)
        image = axis.pcolormesh(first, second, heights, cmap=colormap, vmin=-t_max, vmax=t_max, shading="auto")
        axis.contour(first, second, field["label"].reshape(shape).astype(float), levels=np.arange(0.5, 10),
                     colors="black", linewidths=0.8)
    else:
        axis.scatter(u[np.isnan(h), 0], u[np.isnan(h), 1], s=6, color="0.75", label="none within t_max")
        image = axis.scatter(u[~np.isnan(h), 0], u[~np.isnan(h), 1], c=h[~np.isnan(h)], s=6, cmap=colormap,
                             vmin=-t_max, vmax=t_max)
    train_u, train_y = run.data.u_train, run.data.y_train
    axis.scatter(train_u[:, 0], train_u[:, 1], c=[class_colour(c) for c in train_y], s=7, edgecolors="black",
                 linewidths=0.3)
    figure.colorbar(image, ax=axis, label="h: boundary height along the normal (grey: none within t_max)")
    axis.set_xlabel("chart coordinate u1")
    axis.set_ylabel("chart coordinate u2")
    step = run.metrics["geometry"]["snapshots"][-1]["step"]
    axis.set_title(f"{run.scene.name}: height field at step {step}\n(black: class interfaces on the manifold)",
                   fontsize=10)
    figure.tight_layout()
    return save_png(figure, path, run.scene.render.dpi)
