"""Regenerate the README gallery in renders/gallery/ from fresh runs.

    python scripts/make_gallery.py

Runs sheet_two_class and subspace_highdim (smaller windows so the committed files stay small)
into renders/ and copies their pictures into renders/gallery/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from simulator import load_scene, run_scene

REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "renders" / "gallery"
SMALL = {"render.window_size": [480, 360], "render.fps": 4}

PICTURES = {
    "sheet_two_class": ["cross_section.png", "height_map.png", "animation.gif"],
    "subspace_highdim": ["geometry_curves.png"],
}


def main() -> None:
    GALLERY.mkdir(parents=True, exist_ok=True)
    for name, files in PICTURES.items():
        summary = run_scene(load_scene(REPO / "scenes" / f"{name}.yaml", overrides=SMALL), REPO / "renders")
        step = summary.steps
        for file in files + [f"boundary3d_step{step}.png"]:
            target = GALLERY / f"{name}_{file.replace(f'_step{step}', '')}"
            shutil.copyfile(summary.path / file, target)
            target.chmod(0o644)
            print(f"{target.relative_to(REPO)}  ({target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
