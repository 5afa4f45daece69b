"""Regenerate the README gallery in renders/gallery/ from fresh runs.

    python scripts/make_gallery.py

Runs sheet_two_class, subspace_highdim and the two stretchy-feature scenes (smaller windows so
the committed files stay small) into renders/, plus sheet_two_class_adversarial with its plain
baseline, and copies their pictures into renders/gallery/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from simulator import load_scene, run_scene

REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "renders" / "gallery"
SMALL = {"render.window_size": [480, 360], "render.fps": 4}
EXTRA = {"sheet_two_class": {"experiments.seed_agreement.enabled": True},  # for seed_boundaries.png
         "stretchy_fur_on": {"experiments.relabel.enabled": True}}  # for relabel.png

PICTURES = {
    "sheet_two_class": ["cross_section.png", "height_map.png", "animation.gif", "seed_boundaries.png"],
    "subspace_highdim": ["geometry_curves.png"],
    "stretchy_fur_on": ["relabel.png"],
    "stretchy_fur_off": [],
}


def main() -> None:
    GALLERY.mkdir(parents=True, exist_ok=True)
    for name, files in PICTURES.items():
        summary = run_scene(load_scene(REPO / "scenes" / f"{name}.yaml", overrides={**SMALL, **EXTRA.get(name, {})}), REPO / "renders")
        step = summary.steps
        for file in files + [f"boundary3d_step{step}.png"]:
            target = GALLERY / f"{name}_{file.replace(f'_step{step}', '')}"
            shutil.copyfile(summary.path / file, target)
            target.chmod(0o644)
            print(f"{target.relative_to(REPO)}  ({target.stat().st_size / 1024:.0f} KiB)")
    adversarial_training_figure()


def adversarial_training_figure() -> None:
    """sim run scenes/sheet_two_class_adversarial.yaml --compare-baseline, robust-accuracy curves."""
    from simulator.experiments.adversarial_comparison import baseline_scene
    from simulator.report.adversarial_training import write_adversarial_comparison

    no_pictures = {"render.three_d": False, "render.animation": False, "render.first_look": False}
    scene = load_scene(REPO / "scenes" / "sheet_two_class_adversarial.yaml", overrides=no_pictures)
    adversarial = run_scene(scene, REPO / "renders").path
    plain = run_scene(baseline_scene(scene), REPO / "renders").path
    out = REPO / "renders" / f"{scene.name}_vs_baseline"
    write_adversarial_comparison(adversarial, plain, out)
    target = GALLERY / f"{scene.name}_robust_accuracy.png"
    shutil.copyfile(out / "robust_accuracy.png", target)
    target.chmod(0o644)
    print(f"{target.relative_to(REPO)}  ({target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
