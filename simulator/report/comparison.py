"""Synthetic and real runs side by side (`sim compare RUN_DIR...`).

Reads only each run's metrics.json and scene.yaml, so it works for both kinds of run (a
real-image run has no snapshots file) and for runs made by older versions with the same
format. For every run: tau against the random baseline sqrt(k/n), the attack ratios to the
free distance with the dimension-only prediction for the random subspace, manifold
specificity MS with its bootstrap interval, and the clinging fraction where it is defined
(synthetic manifolds only). Writes comparison.md, comparison.html (self-contained, like a run
report) and comparison.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.config.loading import parse_yaml
from simulator.errors import RunError
from simulator.formatting import fmt, percent
from simulator.render.pyplot import pyplot, save_png
from simulator.report.attack_tables import specificity_summary
from simulator.report.html import Section, figure_html, html_page, html_table
from simulator.report.markdown import markdown_cell
from simulator.runs.format import read_metrics
from simulator.runs.io import write_text

COLUMNS = ["run", "kind", "data", "k", "n", "test_accuracy", "tau_ratio", "on", "off", "random_on",
           "random_on_dimension_only", "random_off", "ms", "clinging"]
HEADERS = ["run", "kind", "data", "k", "n", "test acc", "RMS tau / sqrt(k/n)", "d_on/d_free", "d_off/d_free",
           "d_rand_on/d_free", "dimension-only", "d_rand_off/d_free", "MS [interval]", "clinging fraction"]
# The MS interval: covers both the bootstrap over points and the per-point distance brackets.


def final_geometry(metrics: dict) -> dict:
    """The last snapshot's geometry summary of a run's metrics ({} when not measured)."""
    return ((metrics.get("geometry") or {}).get("snapshots") or [{}])[-1]


def final_attacks(metrics: dict) -> dict:
    """The last snapshot's attack report of a run's metrics ({"modes": {}} when not attacked)."""
    return (metrics.get("attacks") or {}).get("final") or {"modes": {}}


def median_distance_cell(metrics: dict, mode: str):
    """The median minimal distance of `mode`, "not found (share)" when most points had none, or None."""
    summary = final_attacks(metrics)["modes"].get(mode)
    if summary is None:
        return None
    value = summary.get("median_distance_counting_failures")
    return value if value is not None else f"not found ({percent(1 - summary['success_rate'], 0)})"


def run_summary(path: str | Path) -> dict:
    """The comparison row of one run directory (numbers as floats or None; `ms_interval` apart)."""
    path = Path(path)
    metrics = read_metrics(path)
    scene = parse_yaml((path / "scene.yaml").read_text()) if (path / "scene.yaml").is_file() else {}
    real = metrics.get("kind") == "real"
    if real:
        # k: the autoencoder's latent dimension, or the random subspaces' without a manifold estimate
        k, n = metrics["real"]["latent_dim"] or metrics["real"].get("subspace_dim"), metrics["real"]["ambient_dim"]
        data = (scene.get("dataset") or {}).get("source", "images")
    else:
        manifold = scene.get("manifold", {})
        k, n = manifold.get("dim", 2), manifold.get("ambient_dim")
        data = manifold.get("family", "?")
    row = {"run": metrics.get("scene") or path.name, "kind": "real" if real else "synthetic", "data": data,
           "k": k, "n": n, "test_accuracy": metrics.get("training", {}).get("final", {}).get("test_accuracy")}
    geometry = final_geometry(metrics)
    row["tau_ratio"] = (geometry.get("tangent") or {}).get("ratio_to_baseline")
    height = geometry.get("height")
    row["clinging"] = height.get("clinging_fraction") if height else None
    attacks = final_attacks(metrics)
    modes = attacks["modes"]
    for mode in ("on", "off", "random_on", "random_off"):
        row[mode] = modes.get(mode, {}).get("ratio_to_free")
    row["random_on_dimension_only"] = modes.get("random_on", {}).get("dimension_only_ratio")
    row["ms"] = attacks.get("manifold_specificity")
    # The interval covering both the sampling and the distance brackets (runs from before the
    # brackets: the bootstrap interval alone).
    row["ms_interval"] = attacks.get("manifold_specificity_covering") or attacks.get("manifold_specificity_interval")
    row["ms_summary"] = specificity_summary(attacks)
    return row


def _cell(row: dict, column: str) -> str:
    value = row.get(column)
    if column == "ms":
        summary = row.get("ms_summary")
        if isinstance(summary, str):  # one median not found: a one-sided bound (or none)
            return summary
        if value is None:
            return fmt(value)
        interval = row.get("ms_interval")
        text = fmt(value, 3)
        if interval:  # an end that is "not found" (infinite resamples) prints as such
            low, high = (fmt(end, 3) if end is not None else "not found" for end in interval)
            text += f" [{low}, {high}]"
        return text
    if column == "test_accuracy":
        return percent(value)
    return fmt(value, 3)


def comparison_markdown(rows: list[dict]) -> str:
    """The table; every cell escaped (run names and data sources come from the users' files)."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(markdown_cell(_cell(row, column)) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict], path: Path, specificity_line: float = 2.0) -> Path:
    """MS with intervals (log scale) and the tau ratio per run."""
    plt = pyplot()

    names = [row["run"] for row in rows]
    positions = np.arange(len(rows))
    figure, (ms_axis, tau_axis) = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 2.2))
    ms_axis.axvspan(1 / specificity_line, specificity_line, color="0.9", label="dimension effect only")
    ms_axis.axvline(1.0, color="black", lw=1)
    for index, row in enumerate(rows):
        if row["ms"] is None:
            continue
        colour = "tab:orange" if row["kind"] == "real" else "tab:blue"
        interval = row.get("ms_interval")
        error = None
        if interval and None not in interval:
            error = [[row["ms"] - interval[0]], [interval[1] - row["ms"]]]
        ms_axis.errorbar(row["ms"], index, xerr=error, fmt="o", color=colour, capsize=4)
    ms_axis.set_xscale("log")
    ms_axis.set_yticks(positions, names)
    ms_axis.invert_yaxis()
    ms_axis.set_xlabel("manifold specificity MS (log; > 1: manifold specially robust)")
    ms_axis.legend(fontsize=8, loc="lower right")
    ratios = [row["tau_ratio"] if row["tau_ratio"] is not None else np.nan for row in rows]
    tau_axis.barh(positions, ratios, color=["tab:orange" if r["kind"] == "real" else "tab:blue" for r in rows])
    tau_axis.axvline(1.0, color="black", ls="--", lw=1, label="random direction")
    tau_axis.set_yticks(positions, names)
    tau_axis.invert_yaxis()
    tau_axis.set_xlabel("RMS tau / sqrt(k/n) (0 = perpendicular to the manifold)")
    tau_axis.legend(fontsize=8, loc="lower right")
    figure.suptitle("synthetic (blue) and real (orange) runs", fontsize=10)
    figure.tight_layout()
    return save_png(figure, path, dpi=120)


def write_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """Write comparison.md / comparison.html / comparison.png into out_dir."""
    if not run_dirs:
        raise RunError("sim compare needs at least one run directory (e.g. renders/sheet_two_class).")
    rows = [run_summary(path) for path in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_comparison(rows, out_dir / "comparison.png")
    explanation = ("MS = (d_on/d_off)/(d_rand_on/d_rand_off): about 1 when the on/off gap is only a "
                   "dimension effect (the critique), well above 1 when the manifold is specially robust "
                   "(the dimpled model), below 1 when the manifold directions are the weak ones. Its interval "
                   "covers both the sampling over points and the per-point distance brackets. "
                   "Real runs use the autoencoder-estimated tangent space; clinging is defined only where "
                   "the manifold is known exactly.")
    markdown = (f"# Comparison of {len(rows)} runs\n\n{explanation}\n\n{comparison_markdown(rows)}\n"
                f"![comparison](comparison.png)\n")
    table_rows = [{header: _cell(row, column) for header, column in zip(HEADERS, COLUMNS)} for row in rows]
    html = html_page(f"Comparison of {len(rows)} runs", [
        Section("Side by side", f"<p>{explanation}</p>" + html_table(table_rows, HEADERS)),
        Section("Figure", figure_html(figure, caption="MS with its bootstrap interval, and the tangent fraction "
                                                      "of the margin gradient against a random direction")),
    ])
    md_path, html_path = out_dir / "comparison.md", out_dir / "comparison.html"
    write_text(md_path, markdown)
    write_text(html_path, html)
    return md_path, html_path
