"""One scene, one field, several values (`sim sweep`): e.g. how the clinging fraction, tau and
MS move as model.init_scale shrinks. Each value is a full `sim run` (its own run directory);
the sweep adds a table, a figure and a `sim compare` report over all of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from simulator.report.attack_tables import specificity_summary
from simulator.report.comparison import cell_text, final_attacks, final_geometry, median_distance_cell
from simulator.errors import SceneError
from simulator.runs.io import atomic_path, write_text
from simulator.config.scene import Scene, scene_from_dict

# (column, how to read it from a run's metrics.json)
SWEEP_COLUMNS: list[tuple[str, Callable[[dict], Any]]] = [
    ("test accuracy", lambda m: m["training"]["final"]["test_accuracy"]),
    ("clinging fraction", lambda m: (final_geometry(m).get("height") or {}).get("clinging_fraction")),
    ("median |h|", lambda m: (final_geometry(m).get("height") or {}).get("median_abs_h")),
    ("RMS tau / sqrt(k/n)", lambda m: (final_geometry(m).get("tangent") or {}).get("ratio_to_baseline")),
    ("off-manifold feature energy", lambda m: (final_geometry(m).get("stretch") or {}).get("normal_energy_share")),
    ("median d_free", lambda m: median_distance_cell(m, "free")),
    ("median d_off", lambda m: median_distance_cell(m, "off")),
    ("MS", lambda m: _specificity(m)),
]


def _specificity(metrics: dict):
    """MS, or its one-sided bound when one median was not found (e.g. '<= 0.0062')."""
    return specificity_summary(final_attacks(metrics))


def sweep_scenes(scene: Scene, field: str, values: list[Any]) -> list[Scene]:
    """The scene once per value of the dotted `field`, each validated like a --set override and
    named <scene>__<last field part>_<value>."""
    if not values:
        raise SceneError(f"--values: give at least one value for {field}, e.g. --values 1,0.3,0.1")
    base = scene.model_dump(mode="json")
    scenes, names = [], set()
    for value in values:
        # A folder-friendly name: list values like [64, 64] become 64-64.
        label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "value"
        name = f"{scene.name}__{field.rsplit('.', 1)[-1]}_{label}"
        if name in names:
            raise SceneError(f"--values: {value!r} repeats an earlier value (both would write {name}); "
                             f"give each value once")
        names.add(name)
        scenes.append(scene_from_dict({**base, "name": name}, source=f"{scene.name} (sweep)",
                                      overrides={field: value}))
    return scenes


def read_row(run_dir: Path) -> dict:
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    row = {}
    for column, read in SWEEP_COLUMNS:
        try:
            row[column] = read(metrics)
        except (KeyError, TypeError, IndexError):
            row[column] = None
    return row


def write_sweep_report(field: str, values: list[Any], run_dirs: list[Path], out_dir: Path) -> list[dict]:
    """sweep.md (table), sweep.png (each measurement against the value) and a comparison report."""
    from simulator.report.comparison import write_comparison

    rows = [{"value": value, **read_row(path)} for value, path in zip(values, run_dirs)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_sweep(field, rows, out_dir / "sweep.png")
    header = ["value"] + [column for column, _ in SWEEP_COLUMNS]
    lines = [f"# Sweep of {field}", "", "| " + " | ".join([field] + header[1:]) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(cell_text(row[column]) for column in header) + " |")
    lines += ["", "![sweep](sweep.png)", "", "Runs: " + ", ".join(str(p) for p in run_dirs), ""]
    write_text(out_dir / "sweep.md", "\n".join(lines))
    write_comparison(run_dirs, out_dir)
    return rows


def _plot_sweep(field: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["clinging fraction", "RMS tau / sqrt(k/n)", "median d_off", "MS"]
    figure, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3))
    x = list(range(len(rows)))  # evenly spaced, labelled with the values (they are often log-spaced)
    for axis, column in zip(axes, shown):
        # Text cells ("not found", one-sided MS bounds) are written in place of a point.
        y = [row[column] if isinstance(row[column], (int, float)) else float("nan") for row in rows]
        axis.plot(x, y, "o-")
        for position, row in zip(x, rows):
            if isinstance(row[column], str):
                axis.annotate(row[column], (position, 0.5), xycoords=("data", "axes fraction"), fontsize=7,
                              ha="center", rotation=90, color="tab:red")
        axis.set_xlim(-0.5, len(rows) - 0.5)
        axis.set_xticks(x, [str(row["value"]) for row in rows])
        axis.set_title(column, fontsize=9)
        axis.set_xlabel(field, fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
