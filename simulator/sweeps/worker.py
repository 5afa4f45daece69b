"""What a worker process does for one job of a sweep (either backend): one run, or a stack of
runs that differ only in seed, trained together as one stacked model."""

from __future__ import annotations

import os
import time
import traceback

import torch

from simulator.config.loading import scene_from_dict
from simulator.data import make_dataset
from simulator.errors import SimulatorError, TrainingError
from simulator.pipeline import run_scene
from simulator.training.loop import resolve_device
from simulator.training.stacked import train_stacked


def execute_job(raw_scenes: list[dict], runs_dir: str, threads: int) -> list[dict]:
    """Every run of a job, in order: one run alone, or several trained stacked. Never raises."""
    if len(raw_scenes) == 1:
        return [execute_run(raw_scenes[0], runs_dir, threads)]
    return execute_stacked(raw_scenes, runs_dir, threads)


def execute_run(raw_scene: dict, runs_dir: str, threads: int, trained=None, seconds_before: float = 0.0) -> dict:
    """One run in a worker process: the scene (as JSON data) validated again here, `threads` torch
    threads, `run_scene` with resume (storing `trained` instead of training, when given). Never
    raises: the outcome says done or failed, and why."""
    torch.set_num_threads(threads)
    name = raw_scene.get("name", "?")
    started = time.perf_counter() - seconds_before
    try:
        scene = scene_from_dict(raw_scene, source=f"sweep run {name}")
        run_scene(scene, out_root=runs_dir, progress=False, resume=True, trained=trained)
    except SimulatorError as error:  # a diverging run, a memory refusal, ...: the user's to read
        return {"name": name, "status": "failed", "error": str(error), "seconds": time.perf_counter() - started}
    except Exception as error:  # a bug in one run must not stop the others; keep the traceback to report it
        return {"name": name, "status": "failed", "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - started}
    return {"name": name, "status": "done", "seconds": time.perf_counter() - started, "pid": os.getpid()}


def execute_stacked(raw_scenes: list[dict], runs_dir: str, threads: int) -> list[dict]:
    """Runs that differ only in seed: their data drawn, their models trained as one stacked model
    (`train_stacked`, the same numbers as training each alone), then each run's other stages in
    turn. A seed whose training fails is recorded with train()'s error; if stacking itself cannot
    go ahead, every run trains alone."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        scenes = [scene_from_dict(raw, source=f"sweep run {raw.get('name', '?')}") for raw in raw_scenes]
        datasets = [make_dataset(scene, scene.manifold.build()) for scene in scenes]
        results = train_stacked(scenes[0], datasets, [scene.seed for scene in scenes],
                                resolve_device(scenes[0].train.device))
    except Exception:  # noqa: BLE001 - e.g. data sets of different sizes: train alone, which reports any real error
        return [execute_run(raw, runs_dir, threads) for raw in raw_scenes]
    share = (time.perf_counter() - started) / len(scenes)
    outcomes = []
    for raw, data, result in zip(raw_scenes, datasets, results):
        if isinstance(result, TrainingError):
            outcomes.append({"name": raw["name"], "status": "failed", "error": str(result), "seconds": share})
        else:
            outcomes.append(execute_run(raw, runs_dir, threads, trained=(data, result), seconds_before=share))
    return outcomes
