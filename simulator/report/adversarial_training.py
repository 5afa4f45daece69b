"""Adversarial training against plain training of the same scene (`sim run --compare-baseline`).

The two explanations predict different geometry changes, and both are measured on the same
data: the dimpled-manifold paper says adversarial training only deepens the dimples (the
boundary stays along the manifold, pushed further from the points: larger |h| at the data,
clinging and tau unchanged); the stretchy-features view says it removes the non-robust
feature (the gradient turns towards the robust feature, the on/off-manifold distances and MS
move). Writes adversarial_training.md, robust_accuracy.png and a `sim compare` report, from
the two runs' stored metrics.
"""

from __future__ import annotations

from pathlib import Path

from simulator.formatting import fmt
from simulator.render.experiment_plots import plot_robust_accuracy
from simulator.report.attack_tables import specificity_summary
from simulator.report.comparison import (
    final_attacks,
    final_geometry,
    median_distance_cell,
    write_comparison,
)
from simulator.report.markdown import markdown_cell, markdown_text
from simulator.runs.format import read_metrics
from simulator.runs.io import write_text

ROWS = [  # (label, how to read it from metrics.json)
    ("clean test accuracy", lambda m: m["training"]["final"]["test_accuracy"]),
    ("RMS tau / sqrt(k/n)", lambda m: final_geometry(m)["tangent"]["ratio_to_baseline"]),
    ("clinging fraction", lambda m: (final_geometry(m).get("height") or {}).get("clinging_fraction")),
    ("median |h| at training points", lambda m: (final_geometry(m).get("height") or {}).get("median_abs_h_at_train_points")),
    ("median |h| over the manifold", lambda m: (final_geometry(m).get("height") or {}).get("median_abs_h")),
    ("median free distance", lambda m: median_distance_cell(m, "free")),
    ("median on-manifold distance", lambda m: median_distance_cell(m, "on")),
    ("median off-manifold distance", lambda m: median_distance_cell(m, "off")),
    ("manifold specificity MS", lambda m: specificity_summary(final_attacks(m))),
    ("free attack along v_1", lambda m: (final_attacks(m).get("stretch_alignment") or {}).get("mean_alignment")),
]


def robust_row(metrics: dict, epsilon: float) -> tuple[float | None, float | None, float | None]:
    """(minimal-distance, PGD, certified) robust accuracy at `epsilon` (None when not measured
    there; certified None for runs from before the certified bounds)."""
    report = final_attacks(metrics).get("robust_accuracy") or {"epsilons": []}
    for row in report["epsilons"]:
        if abs(row["epsilon"] - epsilon) <= 1e-9 * max(1.0, epsilon):
            return row["minimal_distance"], row["pgd"], row.get("certified")
    return None, None, None


def write_adversarial_comparison(adversarial_dir: Path, baseline_dir: Path, out_dir: Path) -> dict:
    """Side-by-side table, robust-accuracy curves and the generic comparison; returns the rows."""

    adversarial = read_metrics(adversarial_dir)
    baseline = read_metrics(baseline_dir)
    settings = adversarial["training"]["adversarial"]
    epsilon = settings["epsilon"]
    rows = []
    for label, read in ROWS:
        rows.append({"measurement": label, "plain": _safe(read, baseline), "adversarial": _safe(read, adversarial)})
    robust = [robust_row(m, epsilon) for m in (baseline, adversarial)]  # [(minimal-distance, PGD, certified)]
    rows.insert(1, {"measurement": f"robust accuracy at eps = {epsilon:.3g} (minimal-distance attack)",
                    "plain": robust[0][0], "adversarial": robust[1][0]})
    rows.insert(2, {"measurement": f"robust accuracy at eps = {epsilon:.3g} (PGD-20)",
                    "plain": robust[0][1], "adversarial": robust[1][1]})
    rows.insert(3, {"measurement": f"robust accuracy at eps = {epsilon:.3g} (certified: a lower bound)",
                    "plain": robust[0][2], "adversarial": robust[1][2]})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = [(label, final_attacks(m)["robust_accuracy"]) for label, m in (("plain", baseline), ("adversarial", adversarial))
              if final_attacks(m).get("robust_accuracy")]
    if curves:
        plot_robust_accuracy(curves, out_dir / "robust_accuracy.png",
                             f"{adversarial['scene']}: robust accuracy\nplain vs adversarial training "
                             f"({settings['mode']} mode, eps {epsilon:.3g})", marked_epsilon=epsilon)
    lines = [f"# Adversarial training vs plain training: {markdown_text(adversarial['scene'])}", "",
             f"Adversarial training: mode {settings['mode']}, epsilon {epsilon:.4g}, {settings['steps']} PGD steps "
             f"of {settings['step_size']:.3g}, {settings['fraction']:.0%} of each batch.", "",
             "| measurement | plain | adversarial |", "|---|---|---|"]
    lines += ["| " + " | ".join(markdown_cell(text) for text in (row["measurement"], fmt(row["plain"]),
                                                                    fmt(row["adversarial"]))) + " |" for row in rows]
    if curves:  # drawn only where the attacks measured robust accuracy
        lines += ["", "![robust accuracy](robust_accuracy.png)"]
    lines += ["", "Full side-by-side table: comparison.md", ""]
    write_text(out_dir / "adversarial_training.md", "\n".join(lines))
    write_comparison([baseline_dir, adversarial_dir], out_dir)
    return {"settings": settings, "rows": rows}


def _safe(read, metrics):
    try:
        return read(metrics)
    except (KeyError, TypeError, IndexError):
        return None
