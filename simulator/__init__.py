"""Dimpled-manifold simulator: why do adversarial examples exist? Test it on exact geometry.

Library entry points (the `sim` command is a thin wrapper around these):

    load_scene(path)        -> Scene         validated scene file
    run_scene(scene, out)   -> RunSummary    data, training with snapshots, run directory
    load_run(path)          -> Run           scene, data and every snapshot as a torch module
"""

from simulator.errors import RunError, SceneError, SimulatorError, TrainingError
from simulator.pipeline import RunSummary, run_scene
from simulator.runs.loading import RUN_FORMAT_VERSION, Run, load_run
from simulator.config.scene import Scene, load_scene

__all__ = [
    "RUN_FORMAT_VERSION", "Run", "RunError", "RunSummary", "Scene", "SceneError", "SimulatorError",
    "TrainingError", "load_run", "load_scene", "run_scene",
]
__version__ = "0.1.0"
