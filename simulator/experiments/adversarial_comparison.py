"""Adversarial training against plain training of the same scene (`sim run --compare-baseline`):
the plain twin of an adversarially trained scene. The side-by-side report is
simulator.report.adversarial_training.
"""

from __future__ import annotations

from simulator.config.scene import Scene
from simulator.errors import SceneError


def baseline_scene(scene: Scene) -> Scene:
    """The same scene trained normally, named <name>_baseline."""
    if getattr(scene, "kind", None) == "real":
        raise SceneError(f"{scene.name}: --compare-baseline compares adversarial with plain training of a synthetic "
                         f"scene; real-image experiments have no adversarial training. Drop the flag.")
    if not scene.train.adversarial.enabled:
        raise SceneError(
            f"--compare-baseline compares adversarial training with plain training, but {scene.name} has "
            f"train.adversarial.enabled false; add --set train.adversarial.enabled=true (or use a scene with "
            f"adversarial training, e.g. scenes/sheet_two_class_adversarial.yaml).")
    plain = scene.train.adversarial.model_copy(update={"enabled": False})
    return scene.model_copy(update={"name": f"{scene.name}_baseline",
                                    "train": scene.train.model_copy(update={"adversarial": plain})})


