"""The verdict table (DESIGN.md section 4, item 7): what each hypothesis predicts, what was measured.

Every line it draws between the hypotheses comes from `measure.thresholds` in the scene
(documented defaults), never from a constant in code. A row with nothing measured says so
instead of guessing.

Warnings say when a run is meaningful but weak: test accuracy at chance level, one class holding
almost all the data, or measurements over very few points. They are rows too (`measurement`
WARNING, after the measurement rows, so stored tables keep their order); the tables put them
above the measurements. Their limits below are sanity checks on the evidence, not lines between
the hypotheses, so they live here. Data too degenerate for any verdict never gets this far:
`simulator.data.make_dataset` refuses it.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.formatting import fmt, percent

WARNING = "warning"  # the `measurement` of a warning row

# With fewer points, the 95% interval of a median spans more than the middle half of the measured
# values (order statistics 6 to 15 of 20), so medians and MS intervals say little.
MIN_MEASURED_POINTS = 20
# Above this share for one class, a constant guess is already right this often and the few other
# points alone shape the boundary.
MAX_MAJORITY_SHARE = 0.95
# Test accuracy within this many binomial standard errors of chance is not told apart from it.
CHANCE_STANDARD_ERRORS = 2.0


def verdict_rows(summary: dict, thresholds: dict, attacks: dict | None = None, data=None) -> list[dict]:
    """Rows of {measurement, dimpled, stretchy, measured, reading} for one snapshot's summary,
    then its warnings. `data` (anything with y_train, y_test, n_classes: a `Dataset`) adds the
    warnings that need the labels (class imbalance, chance-level accuracy)."""
    rows = _measurement_rows(summary, thresholds, attacks)
    rows += point_count_warnings(summary, attacks)
    if data is not None:
        rows += data_warnings(data, summary.get("test_accuracy"))
    return rows


def _measurement_rows(summary: dict, thresholds: dict, attacks: dict | None) -> list[dict]:
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
        if not _finite(ratio):  # no point with a margin gradient (NaN here, null once stored in metrics.json)
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
    elif attacks["manifold_specificity"] is None and attacks.get("manifold_specificity_covering"):
        # No point estimate, but the interval covering the brackets may still bound MS on one side.
        low, high = attacks["manifold_specificity_covering"]
        if low >= ms_line:
            row.update(measured=f">= {fmt(low, 3)} (certified bracket; a median not found)",
                       reading="manifold specially robust (dimpled)")
        elif high is not None and high <= 1 / ms_line:
            row.update(measured=f"<= {fmt(high, 3)} (certified bracket; a median not found)",
                       reading="manifold directions are the weak ones")
        else:
            row.update(measured=f"undefined (a distance not found; bracket [{fmt(low, 3)}, "
                                f"{fmt(high, 3) if high is not None else 'inf'}])", reading="n/a")
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
            "dimpled": "> (n-k)/n",
            "stretchy": "either",
            "measured": f"{fmt(share, 3)} (isotropic {fmt(baseline, 3)})",
            # NaN (stored as null): no feature energy at all, e.g. a network whose ReLUs all died
            "reading": "undefined (no feature energy)" if not _finite(share, baseline)
            else "above baseline" if share > baseline else "at or below baseline",
        })
    return rows


def _finite(*values) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


# --------------------------------------------------------------------------- warnings


def warning_row(check: str, finding: str, meaning: str) -> dict:
    """A warning as a verdict row: `check` names the test (one warning per check), `finding`
    what was found, `meaning` what it does to the verdict and how to fix it."""
    return {"measurement": WARNING, "dimpled": "", "stretchy": "", "measured": finding, "reading": meaning,
            "check": check}


def split_warnings(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(warnings, measurement rows) of a verdict, each in stored order."""
    return [r for r in rows if r["measurement"] == WARNING], [r for r in rows if r["measurement"] != WARNING]


def point_count_warnings(summary: dict, attacks: dict | None = None) -> list[dict]:
    """A warning when the tangent fraction or the attacks rest on fewer than MIN_MEASURED_POINTS
    points (the tangent count leaves out points where the margin gradient vanished)."""
    counts = {}
    if (summary.get("tangent") or {}).get("n_points") is not None:  # counted by every run since #12
        counts["tangent fraction"] = summary["tangent"]["n_points"]
    attack_counts = [mode["n_points"] for mode in ((attacks or {}).get("modes") or {}).values()
                     if mode.get("n_points") is not None]
    if attack_counts:
        counts["attacks"] = min(attack_counts)
    few = {name: count for name, count in counts.items() if count < MIN_MEASURED_POINTS}
    if not few:
        return []
    finding = ", ".join(f"{name} over {count} point{'s' if count != 1 else ''}" for name, count in few.items())
    return [warning_row(
        "few_points", finding,
        f"too few points for stable medians (fewer than {MIN_MEASURED_POINTS}: the 95% interval of a median "
        f"then spans more than the middle half of the values), so the readings below are anecdotes; "
        f"raise measure.n_points (and data.n_test) to at least {MIN_MEASURED_POINTS}")]


def data_warnings(data, test_accuracy: float | None) -> list[dict]:
    """Warnings from the labels: fewer than MIN_MEASURED_POINTS training points (the heights at
    training points behind the dimple depth), one class holding more than MAX_MAJORITY_SHARE of a
    split, and test accuracy within CHANCE_STANDARD_ERRORS standard errors of chance (the majority
    class's share of the test set: what a constant guess scores)."""
    rows = []
    n_train = len(data.y_train)
    if n_train < MIN_MEASURED_POINTS:
        rows.append(warning_row(
            "few_training_points", f"{n_train} training points",
            f"the heights at training points (the dimple depth) rest on fewer than {MIN_MEASURED_POINTS} points "
            f"and the network sees almost no data; raise data.n_train"))
    share, label, split = max((_majority(y, data.n_classes) + (name,)
                               for name, y in (("training", data.y_train), ("test", data.y_test))),
                              key=lambda found: found[0])
    if share > MAX_MAJORITY_SHARE:
        rows.append(warning_row(
            "class_imbalance", f"class {label} holds {percent(share)} of the {split} points",
            f"a constant guess already scores {percent(share)} and the few other points alone shape the "
            f"boundary, so accuracy and the readings below say little; change the labels.* settings so "
            f"that every class has at least {percent(1 - MAX_MAJORITY_SHARE, 0)} of the points"))
    if test_accuracy is not None and math.isfinite(test_accuracy):
        chance, _ = _majority(data.y_test, data.n_classes)
        error = math.sqrt(chance * (1 - chance) / len(data.y_test))
        if test_accuracy < chance + CHANCE_STANDARD_ERRORS * error:
            rows.append(warning_row(
                "chance_accuracy", f"test accuracy {percent(test_accuracy)}, chance {percent(chance)} "
                f"(the majority class's share of {len(data.y_test)} test points)",
                "the network predicts no better than a constant guess, so the geometry below is that of a "
                "boundary that separates nothing it generalises (expected only with random labels); train "
                "longer (train.steps, train.lr) or check the labels"))
    return rows


def _majority(labels, n_classes: int) -> tuple[float, int]:
    """(share, class) of the most common class among `labels`."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return float(counts.max() / max(counts.sum(), 1)), int(counts.argmax())


def snapshot_verdicts(geometry_snapshots: list[dict], thresholds: dict, attack_snapshots: list[dict] = (),
                      data=None) -> list[list[dict]]:
    """The verdict rows of every measured snapshot, each with the attack report of the same
    training step when that step was attacked (MS and stretch alignment need the attacks).
    `data`: the run's `Dataset`, for the warnings that need the labels."""
    by_step = {report["step"]: report for report in attack_snapshots}
    return [verdict_rows(summary, thresholds, by_step.get(summary["step"]), data) for summary in geometry_snapshots]
