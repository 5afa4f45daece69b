"""What a worker process does for one run of a sweep (either backend)."""

from __future__ import annotations

import os
import time
import traceback

import torch

from simulator.config.loading import scene_from_dict
from simulator.errors import SimulatorError
from simulator.pipeline import run_scene


def execute_run(raw_scene: dict, runs_dir: str, threads: int) -> dict:
    """One run in a worker process: the scene (as JSON data) validated again here, `threads` torch
    threads, `run_scene` with resume. Never raises: the outcome says done or failed, and why."""
    torch.set_num_threads(threads)
    name = raw_scene.get("name", "?")
    started = time.perf_counter()
    try:
        scene = scene_from_dict(raw_scene, source=f"sweep run {name}")
        run_scene(scene, out_root=runs_dir, progress=False, resume=True)
    except SimulatorError as error:  # a diverging run, a memory refusal, ...: the user's to read
        return {"name": name, "status": "failed", "error": str(error), "seconds": time.perf_counter() - started}
    except Exception as error:  # a bug in one run must not stop the others; keep the traceback to report it
        return {"name": name, "status": "failed", "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - started}
    return {"name": name, "status": "done", "seconds": time.perf_counter() - started, "pid": os.getpid()}
