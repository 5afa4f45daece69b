"""One scene, one field, several values (`sim sweep`): e.g. how the clinging fraction, tau and
MS move as model.init_scale shrinks. Each value is a full `sim run` (its own run directory);
the sweep report (simulator.report.sweep_report) adds a table, a figure and a `sim compare`
report over all of them.
"""

from __future__ import annotations

import re
from typing import Any

from simulator.config.loading import scene_from_dict
from simulator.config.scene import Scene
from simulator.errors import SceneError


def sweep_scenes(scene: Scene, field: str, values: list[Any]) -> list[Scene]:
    """The scene once per value of the dotted `field`, each validated like a --set override and
    named <scene>__<last field part>_<value>."""
    if getattr(scene, "kind", None) == "real":
        raise SceneError(f"{scene.name}: sim sweep varies a field of a synthetic scene; this is a real-image "
                         f"experiment (kind: real). Run it with different values by hand (sim run --set ...).")
    if not values:
        raise SceneError(f"--values: give at least one value for {field}, e.g. --values 1,0.3,0.1")
    base = scene.model_dump(mode="json")
    scenes, names = [], set()
    for value in values:
        # A folder-friendly name: list values like [64, 64] become 64-64.
        label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "value"
        name = f"{scene.name}__{field.rsplit('.', 1)[-1]}_{label}"
        if name in names:
            raise SceneError(f"--values: {value!r} repeats an earlier value (both would write {name}); "
                             f"give each value once")
        names.add(name)
        scenes.append(scene_from_dict({**base, "name": name}, source=f"{scene.name} (sweep)",
                                      overrides={field: value}))
    return scenes


