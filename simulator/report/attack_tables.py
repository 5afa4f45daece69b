"""The attack table (the paper's rows plus the random-subspace controls, every distance a
bracket) and MS as text, for the terminal (rich), markdown and HTML, drawn from a stored
attack record."""

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


# Table columns (markdown, HTML and terminal share them).
ATTACK_COLUMNS = ["attack", "subspace", "median L2 [certified, found]", "mean L2 [certified, found]", "found",
                  "none within reach", "median gap", "settled", "ratio to free", "dimension-only"]
TABLE_NOTE = ("Every statistic is over all attacked points. Each point's minimal distance lies in its bracket "
              "[certified lower bound, distance of a verified adversarial point]; a point with no adversarial "
              "point found counts as infinitely far (upper end ∞), so a median or mean of the upper ends that "
              "is ∞ means 'not found'. found: share with an upper end; none within reach: share certified to "
              "have no boundary within the search's reach; median gap: median (upper - lower) / upper over the "
              "found points; settled: share whose bracket is within the search tolerance, or certified none. "
              "Ratios use the medians of the upper ends.")
UNBOUNDED = "∞"


def bracket_text(lower, upper, digits: int = 4) -> str:
    """'[lower, upper]' with ∞ for a missing upper end; only the upper end for runs from
    before the brackets (lower None)."""
    if lower is None:
        return fmt(upper, digits)
    return f"[{fmt(lower, digits)}, {fmt(upper, digits) if upper is not None else UNBOUNDED}]"


def attack_rows(report: dict, labels: str = "paper") -> list[dict]:
    """One row per mode (cells as text). labels: "paper" (the paper's row names) or "modes"."""
    rows = []
    for mode, summary in report["modes"].items():
        label, subspace = PAPER_ROWS.get(mode, (mode, "?"))
        rows.append({
            "attack": label if labels == "paper" else mode,
            "subspace": subspace if labels == "paper" else str(summary.get("subspace_dim")),
            "median L2 [certified, found]": bracket_text(summary.get("median_lower_bound"),
                                                         summary.get("median_distance_counting_failures")),
            "mean L2 [certified, found]": bracket_text(summary.get("mean_lower_bound"), summary.get("mean_distance")),
            "found": percent(summary.get("success_rate"), 0),
            "none within reach": percent(summary.get("share_none_within_reach"), 0),
            "median gap": percent(summary.get("median_relative_gap"), 1),
            "settled": percent(summary.get("share_settled"), 0),
            "ratio to free": fmt(summary.get("ratio_to_free")),
            "dimension-only": fmt(summary.get("dimension_only_ratio")),
        })
    return rows


def attack_table(report: dict, title: str):
    """The attack table for the terminal (rich): modes by name, subspace dimensions."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", caption="brackets: [certified lower bound, verified distance]")
    columns = ["mode", "dim", *ATTACK_COLUMNS[2:]]
    for column in columns:
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for row in attack_rows(report, labels="modes"):
        table.add_row(*row.values())
    return table


def attack_markdown(report: dict) -> str:
    lines = ["| " + " | ".join(ATTACK_COLUMNS) + " |", "|" + "---|" * len(ATTACK_COLUMNS)]
    lines += ["| " + " | ".join(row.values()) + " |" for row in attack_rows(report)]
    lines += ["", TABLE_NOTE, "", f"MS = {specificity_text(report)}"]
    return "\n".join(lines) + "\n"


def specificity_summary(report: dict):
    """MS as a number, a one-sided bound as text (e.g. '>= 2.31') when only the interval
    covering the brackets bounds it, or None: the short form tables use (sim compare, sweeps,
    the adversarial-training comparison)."""
    value = report.get("manifold_specificity")
    if value is not None:
        return value
    covering = report.get("manifold_specificity_covering")
    if covering is not None:
        low, high = covering
        if low:  # a certified, non-trivial lower end
            return f">= {fmt(low, 3)}"
        if high is not None:
            return f"<= {fmt(high, 3)}"
        return None
    bound = report.get("manifold_specificity_bound")  # runs from before the brackets
    if bound:
        return f"{'>=' if bound['kind'] == 'lower' else '<='} {fmt(bound['value'], 3)} (attack reach, not certified)"
    return None


def interval_text(interval) -> str:
    low, high = interval
    return f"[{fmt(low, 3)}, {fmt(high, 3) if high is not None else UNBOUNDED}]"


def specificity_text(report: dict) -> str:
    """MS with its sampling interval, the bracket the per-point brackets allow, and the interval
    covering both."""
    if "manifold_specificity" not in report:
        return "not measured (needs modes on, off, random_on, random_off)"
    value = report.get("manifold_specificity")
    level = percent(report.get("manifold_specificity_confidence", 0.95), 0)
    parts = []
    if value is None:
        parts.append("undefined point estimate (a median distance was 'not found')")
    else:
        interval = report.get("manifold_specificity_interval")
        parts.append(fmt(value, 3) + (f" {interval_text(interval)} ({level} bootstrap interval over points)"
                                      if interval is not None else ""))
    bracket, covering = report.get("manifold_specificity_bracket"), report.get("manifold_specificity_covering")
    if bracket is not None:
        parts.append(f"the distance brackets allow {interval_text(bracket)}")
    if covering is not None:
        parts.append(f"{level} interval covering both: {interval_text(covering)}")
    if bracket is None and value is None and report.get("manifold_specificity_bound"):
        parts.append(f"{specificity_summary(report)}")
    return "; ".join(parts)
