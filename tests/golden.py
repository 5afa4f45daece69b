"""Golden numbers: what every shipped scene measures, pinned so a refactor cannot move them.

Each case is a shipped scene file plus `--set` overrides, run through the CLI (`sim run`, the
interface users see, so the cases survive any reorganisation of the library). From the run's
metrics.json it keeps the numbers a reader relies on: test accuracy, the tangent fraction and its
ratio to the random baseline, the height-field summaries (clinging fraction, dimple depth), each
attack mode's median distance (both ends of the bracket), success rate and share settled, MS with its interval, bracket and covering interval, and the relabel
and seed-agreement figures where a case runs them.

Two sets of cases:
- "tiny": every shipped scene at a small budget (plus the two experiments on sheet_two_class):
  runs in the quick suite in about a minute.
- "full": every shipped scene at its own budget, renders off: the README's published numbers.
  Marked slow (about five minutes on 2 CPU cores).

Regenerate (only when a change is *meant* to move numbers; say why in the commit):

    python tests/golden.py            # writes tests/golden_numbers.json
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN_FILE = Path(__file__).with_name("golden_numbers.json")

# Renders cost seconds and draw nothing the golden numbers depend on.
NO_RENDERS = {"render.three_d": False, "render.animation": False, "render.report": False,
              "render.first_look": False}
TINY_SYNTHETIC = {"train.steps": 60, "data.n_train": 200, "data.n_test": 100, "measure.n_points": 50,
                  "snapshots.count": 5, "train.device": "cpu", "measure.height_resolution": 12,
                  "measure.final_height_resolution": 16, "measure.attacks.bootstrap": 50, **NO_RENDERS}
TINY_REAL = {"dataset.n_train": 300, "dataset.n_test": 100, "autoencoder.steps": 150, "classifier.steps": 150,
             "measure.n_points": 20, "measure.attacks.bootstrap": 50, "device": "cpu", "examples": 0}

TINY_PHOTOS = {"measure.n_points": 1, "measure.subspace_dim": 20, "measure.attacks.max_steps": 20,
               "measure.attacks.bootstrap": 50, "device": "cpu", "examples": 0}

# Scenes that need something a fresh checkout does not have: (file stem, (paths or modules), what it needs).
NEEDS = {
    "real_fashion_mnist": (("/usr/share/datasets/fashion-mnist",), "Debian's dataset-fashion-mnist package"),
    "real_photos_efficientnet": (("efficientnet_lite_pytorch",), "the pretrained extra"),
    "real_photos_critique_k3500": (("efficientnet_lite_pytorch", "skimage"), "the pretrained and photos extras"),
}


def shipped_scenes() -> list[Path]:
    return sorted((REPO / "scenes").glob("*.yaml"))


def cases() -> dict[str, dict]:
    """name -> {"scene": file relative to the repo, "set": overrides, "budget": tiny | full}."""
    result = {}
    for path in shipped_scenes():
        real = path.stem.startswith("real_")
        relative = str(path.relative_to(REPO))
        tiny = TINY_PHOTOS if path.stem.startswith("real_photos") else TINY_REAL if real else TINY_SYNTHETIC
        result[f"tiny/{path.stem}"] = {"scene": relative, "budget": "tiny", "set": dict(tiny)}
        result[f"full/{path.stem}"] = {"scene": relative, "budget": "full",
                                       "set": {"device": "cpu"} if real else {"train.device": "cpu", **NO_RENDERS}}
    result["tiny/sheet_two_class+relabel"] = {
        "scene": "scenes/sheet_two_class.yaml", "budget": "tiny",
        "set": {**TINY_SYNTHETIC, "measure.enabled": False, "experiments.relabel.enabled": True,
                "experiments.relabel.steps": 10}}
    result["tiny/sheet_two_class+seed_agreement"] = {
        "scene": "scenes/sheet_two_class.yaml", "budget": "tiny",
        "set": {**TINY_SYNTHETIC, "measure.enabled": False, "experiments.seed_agreement.enabled": True,
                "experiments.seed_agreement.count": 3, "experiments.seed_agreement.n_points": 2000,
                "render.grid_resolution": 16}}
    return result


def missing_requirement(case: dict) -> str | None:
    """Why a case cannot run on this machine, or None."""
    stem = Path(case["scene"]).stem
    if stem not in NEEDS:
        return None
    import importlib.util

    needed, what = NEEDS[stem]
    for need in needed:
        if need.startswith("/") and not Path(need).exists():
            return f"needs {what} ({need})"
        if not need.startswith("/") and importlib.util.find_spec(need) is None:
            return f"needs {what}"
    return None


def run_case(case: dict, out_root: Path) -> dict:
    """Run one case through the CLI; return its metrics.json."""
    from click.testing import CliRunner

    from cli import main

    arguments = ["run", str(REPO / case["scene"]), "--out", str(out_root), "--quiet"]
    for key, value in case["set"].items():
        arguments += ["--set", f"{key}={json.dumps(value)}"]
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    if result.exit_code != 0:
        raise AssertionError(f"sim {' '.join(arguments)} exited {result.exit_code}:\n{result.output}")
    (run_dir,) = [p for p in out_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return json.loads((run_dir / "metrics.json").read_text())


def _final(section: dict | None) -> dict:
    snapshots = (section or {}).get("snapshots") or [{}]
    return snapshots[-1]


def golden_numbers(metrics: dict) -> dict:
    """The pinned numbers of one run's metrics.json (a flat {name: number or None} dict)."""
    numbers: dict = {"test_accuracy": metrics["training"]["final"]["test_accuracy"]}
    geometry = _final(metrics.get("geometry"))
    for key in ("mean_tau", "rms_tau", "ratio_to_baseline"):
        if "tangent" in geometry:
            numbers[f"tangent.{key}"] = geometry["tangent"][key]
    for key in ("clinging_fraction", "median_abs_h", "median_abs_h_near_data", "median_abs_h_far_from_data",
                "median_abs_h_at_train_points", "dimple_depth", "none_fraction"):
        if "height" in geometry:
            numbers[f"height.{key}"] = geometry["height"][key]
    attacks = (metrics.get("attacks") or {}).get("final") or {}
    for mode, summary in attacks.get("modes", {}).items():
        numbers[f"attack.{mode}.median"] = summary["median_distance_counting_failures"]
        numbers[f"attack.{mode}.median_lower"] = summary["median_lower_bound"]
        numbers[f"attack.{mode}.success_rate"] = summary["success_rate"]
        numbers[f"attack.{mode}.share_settled"] = summary["share_settled"]
    if "manifold_specificity" in attacks:
        numbers["ms"] = attacks["manifold_specificity"]
        interval = attacks.get("manifold_specificity_interval") or [None, None]
        numbers["ms.low"], numbers["ms.high"] = interval
        numbers["ms.bracket.low"], numbers["ms.bracket.high"] = attacks["manifold_specificity_bracket"]
        numbers["ms.covering.low"], numbers["ms.covering.high"] = attacks["manifold_specificity_covering"] or [None, None]
    relabel = metrics.get("relabel")
    if relabel:
        numbers["relabel.fresh_model_clean_test_accuracy"] = relabel["fresh_model_clean_test_accuracy"]
        numbers["relabel.target_reached"] = relabel["target_reached"]
    agreement = metrics.get("seed_agreement")
    if agreement:
        numbers["seed_agreement.manifold.mean_pairwise"] = agreement["manifold"]["mean_pairwise"]
        numbers["seed_agreement.test.mean_pairwise"] = agreement["test"]["mean_pairwise"]
        if agreement.get("frame"):
            numbers["seed_agreement.frame.mean_pairwise"] = agreement["frame"]["mean_pairwise"]
        if agreement.get("chamfer"):
            numbers["seed_agreement.chamfer.mean"] = agreement["chamfer"]["mean"]
    return numbers


def differences(expected: dict, measured: dict, rel_tol: float = 1e-9) -> list[str]:
    """Readable lines for every number that moved (JSON round trips are exact; the tolerance
    only forgives the last bits of a float printed by another Python)."""
    lines = []
    for key in sorted(set(expected) | set(measured)):
        if key not in measured:
            lines.append(f"{key}: expected {expected[key]!r}, no longer measured")
        elif key not in expected:
            lines.append(f"{key}: newly measured {measured[key]!r} (not in the golden file)")
        else:
            a, b = expected[key], measured[key]
            same = a == b or (isinstance(a, float) and isinstance(b, float)
                              and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12))
            if not same:
                lines.append(f"{key}: expected {a!r}, measured {b!r}")
    return lines


def regenerate(selected: list[str] | None = None) -> None:
    stored = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}
    for name, case in cases().items():
        if selected and name not in selected:
            continue
        reason = missing_requirement(case)
        if reason:
            print(f"skip {name}: {reason}")
            continue
        with tempfile.TemporaryDirectory() as folder:
            stored[name] = {**case, "numbers": golden_numbers(run_case(case, Path(folder)))}
        print(f"{name}: {len(stored[name]['numbers'])} numbers")
    GOLDEN_FILE.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    regenerate(sys.argv[1:] or None)
