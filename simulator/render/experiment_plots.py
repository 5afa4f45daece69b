"""Figures of the classic experiments (matplotlib PNGs): relabelling and robust accuracy."""

from __future__ import annotations

from pathlib import Path

from simulator.formatting import fmt, percent
from simulator.render.pyplot import pyplot, save_png


def plot_relabel(run, report: dict, path: Path) -> Path:
    """Clean test accuracy: the original model, the fresh model trained on relabelled
    adversarial examples only (with its 95% Wilson interval), and chance."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    accuracy = report["fresh_model_clean_test_accuracy"]
    low, high = report["clean_test_accuracy_interval"]
    bars = [("original model", report["original_model_test_accuracy"], None, "tab:gray"),
            ("fresh model on\nrelabelled adversarial set", accuracy, (accuracy - low, high - accuracy), "tab:blue")]
    for index, (label, value, error, colour) in enumerate(bars):
        axis.bar(index, value, color=colour, yerr=None if error is None else [[error[0]], [error[1]]], capsize=6)
        axis.text(index, value + 0.03, percent(value), ha="center", fontsize=9)
    axis.axhline(report["chance"], color="tab:red", ls="--", lw=1.2, label=f"chance ({percent(report['chance'])})")
    axis.set_xticks(range(len(bars)), [label for label, *_ in bars], fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("clean test accuracy")
    settings = report["settings"]
    axis.set_title(f"{run.scene.name}: features-not-bugs relabelling\n"
                   f"(targets {settings['target']}, L2 budget {fmt(settings['epsilon'], 3)}; "
                   f"{percent(report['target_reached'], 0)} of targets reached)", fontsize=9)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return save_png(figure, path, run.scene.render.dpi)


def plot_robust_accuracy(runs: list[tuple[str, dict]], path: Path, title: str, dpi: int = 120,
                         marked_epsilon: float | None = None) -> Path:
    """Robust accuracy against the L2 radius for one or more runs ((label, robust_accuracy
    report) pairs), by the minimal-distance attack (solid) and fixed-budget PGD (dashed);
    `marked_epsilon` (e.g. the adversarial-training radius) is drawn as a vertical line."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    colours = plt.get_cmap("tab10")
    for index, (label, report) in enumerate(runs):
        epsilons = [0.0] + [row["epsilon"] for row in report["epsilons"]]
        minimal = [report["clean"]] + [row["minimal_distance"] for row in report["epsilons"]]
        pgd = [report["clean"]] + [row["pgd"] for row in report["epsilons"]]
        axis.plot(epsilons, minimal, "o-", color=colours(index), label=f"{label} (minimal-distance attack)")
        axis.plot(epsilons, pgd, "s--", color=colours(index), alpha=0.7, label=f"{label} (PGD-{report['pgd_steps']})")
    if marked_epsilon is not None:
        axis.axvline(marked_epsilon, color="0.5", ls=":", lw=1, label=f"training radius {fmt(marked_epsilon, 3)}")
    axis.set_xlabel("L2 radius epsilon (input units)")
    axis.set_ylabel("robust accuracy")
    axis.set_ylim(-0.03, 1.03)
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, path, dpi)
