"""The verdict table (DESIGN.md section 4, item 7): what each hypothesis predicts, what was measured.

Every line it draws comes from `measure.thresholds` in the scene (documented defaults), never
from a constant in code. A row with nothing measured says so instead of guessing.
"""

from __future__ import annotations

import math

from simulator.formatting import fmt


def verdict_rows(summary: dict, thresholds: dict, attacks: dict | None = None) -> list[dict]:
    """Rows of {measurement, dimpled, stretchy, measured, reading} for one snapshot's summary."""
    rows = []
    height = summary.get("height")
    cling_line = thresholds["clinging_fraction"]
    if height is not None:
        clinging = height["clinging_fraction"]
        rows.append({
            "measurement": "clinging fraction",
            "dimpled": f">= {cling_line:g}",
            "stretchy": "no prediction",
            "measured": f"{fmt(clinging, 3)} (eps = {fmt(height['clinging_epsilon'], 3)})",
            "reading": "clings (dimpled)" if clinging >= cling_line else "does not cling (against dimpled)",
        })
        depth = height["dimple_depth"]
        rows.append({
            "measurement": "dimple depth",
            "dimpled": "> 0, shallow",
            "stretchy": "no prediction",
            "measured": fmt(depth, 3),
            "reading": "n/a: no boundary within t_max" if depth is None else
            ("deeper at data (dimples)" if depth > 0 else "not deeper at data (no dimples)"),
        })
    tangent = summary.get("tangent")  # absent when there is no manifold estimate (a real run with manifold: none)
    line = thresholds["tangent_ratio"]
    if tangent is None:
        measured, reading = "no manifold estimate", "n/a"
    else:
        ratio = tangent["ratio_to_baseline"]
        measured = f"{fmt(ratio, 3)} (tau {fmt(tangent['rms_tau'], 3)}, random {fmt(tangent['baseline_rms_tau'], 3)})"
        random_share = tangent["baseline_rms_tau"] ** 2  # k/n
        along_line = random_share + thresholds["tangent_along"] * (1 - random_share)
        if math.isnan(ratio):
            reading = "n/a"
        elif ratio <= line:
            reading = "perpendicular (dimpled)"
        elif tangent["rms_tau"] ** 2 >= along_line:
            reading = "along the manifold"
        elif line < 1 and ratio >= 1 / line:
            # Symmetric to "perpendicular" (e.g. Fashion-MNIST's 2.6): well above a random
            # direction, yet short of the "along the manifold" line.
            reading = "towards the manifold (more than random)"
        else:
            reading = "like a random direction"
    rows.append({
        "measurement": "RMS tau / sqrt(k/n)",
        "dimpled": f"<= {line:g}",
        "stretchy": "~1",
        "measured": measured,
        "reading": reading,
    })
    ms_line = thresholds["specificity"]
    row = {"measurement": "manifold specificity MS", "dimpled": f">= {ms_line:g}",
           "stretchy": f"{1 / ms_line:.3g} to {ms_line:g}"}
    if attacks is None or "manifold_specificity" not in attacks:
        row.update(measured="attacks not run", reading="n/a")
    elif attacks["manifold_specificity"] is None and attacks.get("manifold_specificity_bound"):
        bound = attacks["manifold_specificity_bound"]
        if bound["kind"] == "lower":
            measured = f">= {fmt(bound['value'], 3)} (on-manifold: no crossing within reach)"
            reading = "manifold specially robust (dimpled)" if bound["value"] >= ms_line else "n/a (bound too loose)"
        else:
            measured = f"<= {fmt(bound['value'], 3)} (off-manifold: no crossing within reach)"
            reading = "manifold directions are the weak ones" if bound["value"] <= 1 / ms_line else "n/a (bound too loose)"
        row.update(measured=measured, reading=reading)
    elif attacks["manifold_specificity"] is None:
        row.update(measured="undefined (a distance not found)", reading="n/a")
    else:
        value = attacks["manifold_specificity"]
        interval = attacks.get("manifold_specificity_interval")
        measured = fmt(value, 3) + (f" [{fmt(interval[0], 3)}, {fmt(interval[1], 3)}]" if interval else "")
        if value >= ms_line:
            reading = "manifold specially robust (dimpled)"
        elif value <= 1 / ms_line:
            reading = "manifold directions are the weak ones"
        else:
            reading = "dimension effect only (critique)"
        row.update(measured=measured, reading=reading)
    rows.append(row)
    alignment = (attacks or {}).get("stretch_alignment")
    if alignment is not None and alignment.get("mean_alignment") is not None:
        line = thresholds["stretch_alignment"]
        value = alignment["mean_alignment"]
        rows.append({
            "measurement": "free attack along v_1",
            "dimpled": "no prediction",
            "stretchy": f">= {line:g}",
            "measured": f"{fmt(value, 3)} (random {fmt(alignment['random_baseline'], 3)})",
            "reading": "pushes the most stretched feature (stretchy)" if value >= line else "not along v_1",
        })
    stretch = summary.get("stretch")
    if stretch is not None:
        share, baseline = stretch["normal_energy_share"], stretch["normal_energy_baseline"]
        rows.append({
            "measurement": "off-manifold feature energy",
            "dimpled": f"> (n-k)/n",
            "stretchy": "either",
            "measured": f"{fmt(share, 3)} (isotropic {fmt(baseline, 3)})",
            "reading": "above baseline" if share > baseline else "at or below baseline",
        })
    return rows




def snapshot_verdicts(geometry_snapshots: list[dict], thresholds: dict, attack_snapshots: list[dict] = ()) -> list[list[dict]]:
    """The verdict rows of every measured snapshot, each with the attack report of the same
    training step when that step was attacked (MS and stretch alignment need the attacks)."""
    by_step = {report["step"]: report for report in attack_snapshots}
    return [verdict_rows(summary, thresholds, by_step.get(summary["step"])) for summary in geometry_snapshots]
