"""Dimpled-manifold simulator: why do adversarial examples exist? Test it on exact geometry.

Library entry points (the `sim` command is a thin wrapper around these):

    load_scene(path)        -> Scene         validated scene file
    run_scene(scene, out)   -> RunSummary    data, training with snapshots, run directory
    load_run(path)          -> Run           scene, data and every snapshot as a torch module
                            (a RealRun for a real-image run: experiment, images, state dicts)

They load on first use (PEP 562), so `import simulator.errors` stays light.
"""

import importlib

_EXPORTS = {
    "RunError": "simulator.errors", "SceneError": "simulator.errors", "SimulatorError": "simulator.errors",
    "TrainingError": "simulator.errors", "RunSummary": "simulator.pipeline", "run_scene": "simulator.pipeline",
    "RUN_FORMAT_VERSION": "simulator.runs.format", "Run": "simulator.runs.loading", "load_run": "simulator.runs.loading",
    "load_scene": "simulator.config.loading", "Scene": "simulator.config.scene",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
