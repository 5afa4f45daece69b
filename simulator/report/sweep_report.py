"""The report of a one-field sweep (`sim sweep`): a table and a figure of the measurements
against the value, and a `sim compare` report over the runs, read from their metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from simulator.formatting import fmt
from simulator.report.attack_tables import specificity_summary
from simulator.report.comparison import (
    final_attacks,
    final_geometry,
    median_distance_cell,
    write_comparison,
)
from simulator.report.markdown import markdown_cell, markdown_text
from simulator.runs.format import read_metrics
from simulator.runs.io import atomic_path, write_text

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


def read_row(run_dir: Path) -> dict:
    metrics = read_metrics(run_dir)
    row = {}
    for column, read in SWEEP_COLUMNS:
        try:
            row[column] = read(metrics)
        except (KeyError, TypeError, IndexError):
            row[column] = None
    return row


def write_sweep_report(field: str, values: list[Any], run_dirs: list[Path], out_dir: Path) -> list[dict]:
    """sweep.md (table), sweep.png (each measurement against the value) and a comparison report."""
    rows = [{"value": value, **read_row(path)} for value, path in zip(values, run_dirs)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_sweep(field, rows, out_dir / "sweep.png")
    header = ["value"] + [column for column, _ in SWEEP_COLUMNS]
    # The field, its values and the run folders come from the user's command line and scene: escaped.
    lines = [f"# Sweep of {markdown_text(field)}", "",
             "| " + " | ".join(markdown_cell(name) for name in [field] + header[1:]) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(markdown_cell(fmt(row[column])) for column in header) + " |")
    lines += ["", "![sweep](sweep.png)", "", "Runs: " + ", ".join(markdown_text(p) for p in run_dirs), ""]
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
