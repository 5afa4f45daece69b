"""The attack table (the paper's rows plus the random-subspace controls) and MS as text,
for the terminal (rich) and markdown, drawn from a stored attack record."""

from __future__ import annotations

from simulator.formatting import fmt, percent

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
        return f"{'>=' if bound['kind'] == 'lower' else '<='} {fmt(bound['value'], 3)}"
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
        table.add_row(mode, str(summary["subspace_dim"]), fmt(summary["median_distance_counting_failures"]),
                      fmt(summary["mean_distance"]), percent(summary["success_rate"], 0), fmt(summary["median_steps"]),
                      fmt(summary.get("ratio_to_free")), fmt(summary.get("dimension_only_ratio")))
    return table


def attack_markdown(report: dict) -> str:
    lines = ["| attack | subspace | median L2 | mean L2 | success | median steps | ratio to free | dimension-only |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, summary in report["modes"].items():
        label, subspace = PAPER_ROWS[mode]
        lines.append(f"| {label} | {subspace} | {fmt(summary['median_distance_counting_failures'])} | "
                     f"{fmt(summary['mean_distance'])} | {percent(summary['success_rate'], 0)} | "
                     f"{fmt(summary['median_steps'])} | {fmt(summary.get('ratio_to_free'))} | "
                     f"{fmt(summary.get('dimension_only_ratio'))} |")
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
        return fmt(value, 3)
    low, high = interval
    level = report.get("manifold_specificity_confidence", 0.95)
    return f"{fmt(value, 3)} [{fmt(low)}, {fmt(high)}] ({percent(level, 0)} bootstrap interval over points)"


def specificity_bound_text(bound: dict) -> str:
    sign = ">=" if bound["kind"] == "lower" else "<="
    where = "on-manifold" if bound["missing_mode"] == "on" else "off-manifold"
    return (f"{sign} {fmt(bound['value'], 3)} (the {where} attack found no label change for "
            f"{percent(bound['share_not_found'], 0)} of points; those count as its reach {fmt(bound['reach'], 3)})")
