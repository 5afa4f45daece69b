"""`sim sweep-plot`: any parameter against any measurement of a sweep's table, averaged over
every run with the same x (and hue) value, with error bars. In a grid of x and seeds that is
the seed mean; with more varying fields, hold the others fixed with `--where` (or use `--hue`),
or the mean pools over them too.

Each point is the mean over its group; the bar is the standard error of that mean (the
standard deviation over the group / sqrt(size)); a group of one has no bar. Failed and missing
runs, and empty cells (a distance not found), are left out and counted in the legend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from simulator.errors import SceneError
from simulator.runs.io import atomic_path


def select_rows(rows: list[dict[str, Any]], where: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows whose parameters equal every `where` value (SceneError when none do)."""
    for field in where:
        if rows and field not in rows[0]:
            raise SceneError(f"--where {field}: not a column of this sweep's table; choose from "
                             f"{', '.join(sorted(c for c in rows[0] if c != 'error'))}.")
    kept = [row for row in rows if all(row.get(field) == value for field, value in where.items())]
    if rows and where and not kept:
        raise SceneError(f"--where: no run has {', '.join(f'{k} = {v!r}' for k, v in where.items())}.")
    return kept


def grouped(rows: list[dict[str, Any]], x: str, y: str, hue: str | None = None) -> dict[Any, list[tuple]]:
    """{hue value: [(x, mean, standard error, runs used, runs left out), ...] sorted by x}."""
    groups: dict[Any, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get(y) if row.get("status") == "done" else None
        groups[_hashable(row.get(hue)) if hue else None][_hashable(row.get(x))].append(value)
    out = {}
    for key, by_x in groups.items():
        points = []
        for x_value, values in sorted(by_x.items(), key=lambda item: _sort_key(item[0])):
            kept = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            if kept:
                mean = sum(kept) / len(kept)
                spread = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)) if len(kept) > 1 else 0.0
                points.append((x_value, mean, spread / math.sqrt(len(kept)), len(kept), len(values) - len(kept)))
            else:
                points.append((x_value, math.nan, 0.0, 0, len(values)))
        out[key] = points
    return out


def _hashable(value):
    """A list-valued parameter (model.hidden: [128, 128]) as a tuple, so it can key a group."""
    return tuple(_hashable(item) for item in value) if isinstance(value, list) else value


def _sort_key(value):
    """Numbers in order, then tuples of numbers (layer widths) in order, then anything else by text."""
    if isinstance(value, (int, float)):
        return (0, value, "")
    if isinstance(value, tuple) and all(isinstance(item, (int, float)) for item in value):
        return (1, value, "")
    return (2, (), str(value))


def _label(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def plot_sweep(rows: list[dict[str, Any]], x: str, ys: list[str], path: Path, hue: str | None = None,
               reference: str | None = None, log_x: bool = False, log_y: bool = False, title: str = "") -> Path:
    """One panel per measurement in `ys` against parameter `x`: group means with standard-error
    bars, one line per value of `hue`, and `reference` (a column, e.g. dimension_only) dashed."""
    columns = set(rows[0]) if rows else set()
    for name, what in [(x, "--x"), *((y, "--y") for y in ys), (hue, "--hue"), (reference, "--reference")]:
        if name is not None and name not in columns:
            raise SceneError(f"{what} {name}: not a column of this sweep's table; choose from "
                             f"{', '.join(sorted(c for c in columns if c not in ('error',)))}.")
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.4), squeeze=False)
    for axis, y in zip(axes[0], ys):
        left_out, numeric_xs = 0, set()
        for key, points in grouped(rows, x, y, hue).items():
            numeric = [p for p in points if isinstance(p[0], (int, float))]
            numeric_xs.update(p[0] for p in numeric if p[0] > 0)
            shown = numeric if len(numeric) == len(points) else points
            xs = [p[0] for p in shown] if shown is numeric else list(range(len(shown)))
            label = f"{hue} = {_label(key)}" if hue else y
            axis.errorbar(xs, [p[1] for p in shown], yerr=[p[2] for p in shown], marker="o", capsize=3, label=label)
            left_out += sum(p[4] for p in points)
            if shown is not numeric:
                axis.set_xticks(xs, [_label(p[0]) for p in shown])
        if reference:
            line = grouped(rows, x, reference)[None]
            axis.plot([p[0] for p in line], [p[1] for p in line], "k--", lw=1, label=reference)
        if left_out:
            axis.plot([], [], " ", label=f"{left_out} run(s) without a value")
        axis.set_xlabel(x)
        axis.set_ylabel(y)
        if log_x:
            axis.set_xscale("log")
            # Label the swept values themselves: matplotlib's minor log labels overlap at a few values.
            if numeric_xs:  # a categorical x keeps the labels set above
                axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                axis.set_xticks(sorted(numeric_xs), [f"{value:g}" for value in sorted(numeric_xs)])
        if log_y:
            axis.set_yscale("log")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return path
