"""A sweep's report: sweep.md and sweep.html beside sweep.csv, with a figure per varying field.

The figures plot the headline measurements (MS, the tangent-fraction ratio, the random-subspace
ratio with the dimension-only line, the clinging fraction) against each varying field other
than the seed, averaged over the seeds with standard-error bars (`plot.py`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from simulator.config.sweep import Sweep
from simulator.formatting import fmt
from simulator.report.markdown import markdown_cell, markdown_text
from simulator.runs.io import write_text
from simulator.sweeps.plot import plot_sweep

HEADLINE = ("ms", "tau_ratio", "random_on_over_free", "clinging_fraction")
TABLE_COLUMNS = ("test_accuracy", "clinging_fraction", "tau_ratio", "d_free", "on_over_free", "random_on_over_free",
                 "dimension_only", "ms", "ms_low", "ms_high")


def figure_fields(sweep: Sweep) -> list[str]:
    return [field for field in sweep.varying_fields if field != "seed"]


def write_sweep_report(sweep: Sweep, folder: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """The figures, sweep.md and sweep.html. Returns the paths written."""
    folder = Path(folder)
    written = []
    shown = [y for y in HEADLINE if any(row.get(y) is not None for row in rows)]
    for field in figure_fields(sweep):
        if not shown:
            break
        numeric = all(isinstance(row.get(field), (int, float)) for row in rows)
        spread = [row[field] for row in rows if isinstance(row.get(field), (int, float)) and row[field] > 0]
        log_x = numeric and len(spread) == len(rows) and max(spread) / min(spread) >= 30
        reference = "dimension_only" if "random_on_over_free" in shown else None
        written.append(plot_sweep(rows, field, shown, folder / f"sweep_{field}.png", reference=reference, log_x=log_x,
                                  title=f"{sweep.name}: means over all runs at each value (the seeds, and any other "
                                        f"varying field), standard-error bars"))
    counts = {state: sum(row["status"] == state for row in rows) for state in ("done", "failed", "missing")}
    params = [*sweep.varying_fields]
    header = ["run", *params, "status", *TABLE_COLUMNS]
    lines = [f"# Sweep {markdown_text(sweep.name)}", ""]
    if sweep.description:
        lines += [markdown_text(sweep.description), ""]
    lines += [f"Base scene `{markdown_text(sweep.base_scene.name)}`; fixed: "
              f"{markdown_text(', '.join(f'{k} = {v}' for k, v in sweep.fixed.items()) or 'nothing')}. "
              f"{counts['done']} runs done, {counts['failed']} failed, {counts['missing']} not run. "
              f"All columns: `sweep.csv` (and `sweep.parquet`).", ""]
    lines += [f"![{markdown_text(path.stem)}]({path.name})" for path in written] + [""]
    lines += ["| " + " | ".join(markdown_cell(column) for column in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(markdown_cell(fmt(row.get(column))) for column in header) + " |")
    failures = [row for row in rows if row["status"] == "failed"]
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- `{markdown_text(row['run'])}`: {markdown_text(row['error'])}"
                                               for row in failures]
    write_text(folder / "sweep.md", "\n".join(lines) + "\n")
    write_text(folder / "sweep.html", _html(sweep, rows, header, written, counts, failures))
    return [*written, folder / "sweep.md", folder / "sweep.html"]


def _html(sweep: Sweep, rows, header, figures, counts, failures) -> str:
    escape = html.escape
    cells = "".join(f"<th>{escape(column)}</th>" for column in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(row.get(column)))}</td>" for column in header) + "</tr>"
                   for row in rows)
    failed = "".join(f"<li><code>{escape(row['run'])}</code>: {escape(str(row['error']))}</li>" for row in failures)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {escape(sweep.name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>Sweep {escape(sweep.name)}</h1><p>{escape(sweep.description)}</p>"
            f"<p>{counts['done']} runs done, {counts['failed']} failed, {counts['missing']} not run; all columns in "
            "<a href='sweep.csv'>sweep.csv</a>.</p>"
            + "".join(f"<p><img src='{escape(path.name)}' alt='{escape(path.stem)}'></p>" for path in figures)
            + f"<table><tr>{cells}</tr>{body}</table>"
            + (f"<h2>Failed runs</h2><ul>{failed}</ul>" if failed else "") + "</body></html>\n")
