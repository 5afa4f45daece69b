"""The project's one palette: the colour of each class, of each seed's boundary, and of the
surfaces, the same in every picture (matplotlib PNGs, the pyvista render and its GIF/MP4, the
plotly 3-D view in report.html).

Colours are hex strings, which matplotlib, pyvista and plotly all accept as they are.
"""

from __future__ import annotations

# Classes: matplotlib's tab10, so class 0 is blue and class 1 orange everywhere.
CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]

# Boundaries of several seeds in one picture: tab10 without its first two entries (the class
# colours of two-class scenes), then evenly spaced viridis colours when there are more models.
SEED_COLOURS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]

# Surfaces: a warm boundary against the grey-blue manifold, neither one a class colour.
BOUNDARY_COLOUR = "#f2c14e"
MANIFOLD_COLOUR = "#8fa9c4"
ARROW_COLOUR = "#c0142c"  # adversarial perturbations


def class_colour(label: int) -> str:
    """The colour of class `label` (classes beyond ten reuse the list)."""
    return CLASS_COLOURS[int(label) % len(CLASS_COLOURS)]


def seed_colour(index: int, count: int) -> str:
    """The colour of model `index` of `count` models drawn together."""
    if count <= len(SEED_COLOURS):
        return SEED_COLOURS[index]
    import matplotlib  # deferred: only pictures of more than eight seeds need the colormap

    return matplotlib.colors.to_hex(matplotlib.colormaps["viridis"](index / (count - 1)))
