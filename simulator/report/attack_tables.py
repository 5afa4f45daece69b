"""The attack table (the paper's rows plus the random-subspace controls) and MS as text,
for the terminal (rich) and markdown, drawn from a stored attack record."""

from __future__ import annotations

import numpy as np


PAPER_ROWS = {  # mode -> (row label, subspace)
    "free": ("PGD (unconstrained)", "R^n"),
    "on": ("on-manifold PGD", "tangent space, k"),
    "off": ("off-manifold PGD", "normal space, n-k"),
    "random_on": ("random-subspace PGD", "random k-dim"),
    "random_off": ("off-random-subspace PGD", "its complement, n-k"),
    "coordinate_on": ("coordinate-subset PGD", "k random pixels"),
    "coordinate_off": ("off-coordinate-subset PGD", "the other n-k"),
}


def specificity_summary(report: dict):
    """MS as a number, its one-sided bound as text (e.g. '<= 0.0166'), or None: the short form
    tables use (sim compare, sweeps, the adversarial-training comparison)."""
    bound = report.get("manifold_specificity_bound")
    if report.get("manifold_specificity") is None and bound:
        return f"{'>=' if bound['kind'] == 'lower' else '<='} {bound['value']:.3g}"
    return report.get("manifold_specificity")


def attack_table(report: dict, title: str):
    """The paper's table (unconstrained, on-, off-manifold) with the random-subspace rows added.

    Terminal version: modes by name (the markdown report uses the paper's row labels).
    """
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("mode", "dim", "median L2", "mean L2", "found", "steps", "/ free", "dim-only"):
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for mode, summary in report["modes"].items():
        table.add_row(mode, str(summary["subspace_dim"]), _fmt(summary["median_distance_counting_failures"]),
                      _fmt(summary["mean_distance"]), f"{summary['success_rate']:.0%}", _fmt(summary["median_steps"]),
                      _fmt(summary.get("ratio_to_free")), _fmt(summary.get("dimension_only_ratio")))
    return table


def attack_markdown(report: dict) -> str:
    lines = ["| attack | subspace | median L2 | mean L2 | success | median steps | ratio to free | dimension-only |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, summary in report["modes"].items():
        label, subspace = PAPER_ROWS[mode]
        lines.append(f"| {label} | {subspace} | {_fmt(summary['median_distance_counting_failures'])} | "
                     f"{_fmt(summary['mean_distance'])} | {summary['success_rate']:.0%} | {_fmt(summary['median_steps'])} | "
                     f"{_fmt(summary.get('ratio_to_free'))} | {_fmt(summary.get('dimension_only_ratio'))} |")
    lines.append("")
    lines.append(f"MS = {specificity_text(report)}")
    return "\n".join(lines) + "\n"


def specificity_text(report: dict) -> str:
    value = report.get("manifold_specificity")
    if "manifold_specificity" not in report:
        return "not measured (needs modes on, off, random_on, random_off)"
    if value is None:
        bound = report.get("manifold_specificity_bound")
        if bound is not None:
            return specificity_bound_text(bound)
        return "undefined (a median distance was 'not found'; raise measure.attacks.max_steps)"
    interval = report.get("manifold_specificity_interval")
    if interval is None:
        return f"{value:.3g}"
    low, high = interval
    level = report.get("manifold_specificity_confidence", 0.95)
    return f"{value:.3g} [{_fmt(low)}, {_fmt(high)}] ({level:.0%} bootstrap interval over points)"


def specificity_bound_text(bound: dict) -> str:
    sign = ">=" if bound["kind"] == "lower" else "<="
    where = "on-manifold" if bound["missing_mode"] == "on" else "off-manifold"
    return (f"{sign} {bound['value']:.3g} (the {where} attack found no label change for "
            f"{bound['share_not_found']:.0%} of points; those count as its reach {bound['reach']:.3g})")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.4g}"
