"""The seed-agreement record as rows and a terminal table."""

from __future__ import annotations

from simulator.formatting import fmt, percent


def agreement_rows(result: dict, with_seconds: bool = True) -> list[tuple[str, str]]:
    """(quantity, value) pairs summarising a result (for the CLI table and the report). Reports
    pass `with_seconds=False`: a duration differs from run to run, and a report must not."""
    # A share is missing (None or NaN) for a model with no boundary in the frame.
    seconds = result["training"].get("seconds") if with_seconds else None
    rows = [("seeds", ", ".join(str(s) for s in result["seeds"])),
            ("training", result["training"]["note"] + (f" ({seconds:.1f} s)" if seconds is not None else "")),
            ("test accuracy", ", ".join(percent(a) for a in result["training"]["test_accuracy"]))]
    for key, where in (("test", "test points"), ("manifold", "manifold (uniform by volume)"),
                       ("frame", "render frame (uniform by volume)")):
        part = result.get(key)
        if part:
            rows.append((f"disagreement on {where}",
                         f"mean pairwise {percent(part['mean_pairwise'], 2)}, "
                         f"not all agree {percent(part['not_all_agree'], 2)} ({part['n_points']} points)"))
    for key, what, profile in (("manifold", "manifold points by distance to the data", "by_distance_to_data"),
                               ("frame", "frame points by distance to the manifold", "by_distance_to_manifold")):
        bins = (result.get(key) or {}).get(profile)
        if bins:
            rows.append((f"mean pairwise disagreement, {what} ({len(bins)} equal-count bins)",
                         ", ".join(f"up to {fmt(row['to'], 2)}: {percent(row['mean_pairwise'], 2)}" for row in bins)))
    chamfer = result.get("chamfer")
    if chamfer:
        rows.append(("Chamfer distance between boundaries",
                     f"mean {fmt(chamfer['mean'])}, max {fmt(chamfer['max'])} input units (grid spacing "
                     f"{fmt(chamfer['grid_spacing'])}, frame diagonal {fmt(chamfer['frame_diagonal'])})"))
    elif result.get("note"):
        rows.append(("render frame", result["note"]))
    return rows


def agreement_table(result: dict, title: str):
    """A rich table of `agreement_rows`."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for quantity, value in agreement_rows(result):
        table.add_row(quantity, value)
    return table
