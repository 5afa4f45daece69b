"""The verdict table for the terminal (rich) and markdown, and what each row means. Warnings
(`simulator.stages.verdict.WARNING` rows) are printed above the table, never as a row of it."""

from __future__ import annotations

from simulator.report.markdown import markdown_text
from simulator.stages.verdict import split_warnings

# What each row means, for reports (the terminal table stays short).
ROW_EXPLANATIONS = {
    "clinging fraction": "area share of the manifold where the boundary lies within eps along the normal",
    "dimple depth": "median |h| at training points minus median |h| far from data (> 0: boundary bent "
                    "away from the manifold around the data)",
    "RMS tau / sqrt(k/n)": "how much of the margin gradient lies in the tangent space, relative to a random "
                           "direction (0 = perpendicular, 1 = random, above 1 = along the manifold)",
    "manifold specificity MS": "(d_on/d_off) / (d_rand_on/d_rand_off) from the attacks, with a bootstrap "
                               "interval over points",
    "free attack along v_1": "mean |<delta_free/||delta_free||, v_1>|: alignment of the unconstrained "
                             "adversarial direction with the most stretched input direction of the features",
    "off-manifold feature energy": "||J P_N||_F^2 / ||J||_F^2 of the penultimate-feature Jacobian against "
                                   "the isotropic value (n-k)/n",
}


def warning_text(row: dict) -> str:
    """One warning as a sentence: what was found, then what it means and how to fix it."""
    return f"{row['measured']}: {row['reading']}"


def verdict_table(rows: list[dict], title: str):
    """A rich Table of the rows (for the terminal), the warnings under the title."""
    from rich.table import Table
    from rich.text import Text

    warnings, rows = split_warnings(rows)
    heading = Text(title)  # Text, not a markup string: "[...]" in a warning is not rich markup
    for row in warnings:
        heading.append("\nwarning: ", style="bold yellow")
        heading.append(warning_text(row))
    table = Table(title=heading, title_justify="left", show_lines=False)
    for column in ("measurement", "dimpled predicts", "stretchy predicts", "measured", "reading"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["measurement"], row["dimpled"], row["stretchy"], row["measured"], row["reading"])
    return table


def _cell(text: str) -> str:
    """A verdict cell: the project's own words (no user text), so only the table syntax is escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def verdict_markdown(rows: list[dict]) -> str:
    """The warnings (one paragraph each), then the table."""
    warnings, rows = split_warnings(rows)
    lines = [f"**Warning:** {markdown_text(warning_text(row))}\n" for row in warnings]
    lines += ["| measurement | dimpled predicts | stretchy predicts | measured | reading |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(r[key]) for key in ("measurement", "dimpled", "stretchy", "measured", "reading"))
              + " |" for r in rows]
    return "\n".join(lines) + "\n"
