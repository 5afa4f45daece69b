"""Sweep backends against a serial loop: 8 small runs of sheet_two_class.

- serial: `run_scene` eight times in one process (torch's default threads: every core);
- local: `sim sweep`'s process pool (workers = cores, one torch thread each);
- ray: the same sweep on a local Ray started for it (one CPU per run), if Ray is installed;
- stacked: the local backend with the seed-only runs trained as one stacked model
  (`backend.stack_seeds: on`; on CUDA `auto` does this), and, separately, the training alone:
  `train_stacked` of the 8 seeds against 8 `train()` calls (what stacking speeds up).

Each timing includes starting the workers (or Ray) and writing every run folder. Ray's overhead
per run is (ray wall - local wall) / runs: what its scheduling, start-up and object transfer
add to the same work. Goal (issue #16): local at least 1.6x faster than serial on 2 cores.

    python benchmarks/sweep_speed.py [--runs 8] [--steps 400] [--device cpu|cuda] [--out docs/sweep_speed.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from simulator.config.sweep import load_sweep
from simulator.pipeline import run_scene
from simulator.sweeps.backends import machine_cores
from simulator.sweeps.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]


def sweep_file(folder: Path, runs: int, steps: int, device: str = "cpu") -> Path:
    path = folder / "speed.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "sweep", "name": "speed", "scene": str(ROOT / "scenes" / "sheet_two_class.yaml"),
        "set": {"train.steps": steps, "snapshots.count": 4, "measure.n_points": 50, "measure.attacks.n_points": 50,
                "measure.attacks.modes": ["free", "on", "off"], "measure.attacks.bootstrap": 200,
                "render.three_d": False, "render.animation": False, "render.first_look": False,
                "train.device": device},
        "grid": {"seed": list(range(runs))}}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="train.device of every run.")
    parser.add_argument("--out", help="Write the table as markdown here (e.g. docs/sweep_speed.md).")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        path = sweep_file(scratch, args.runs, args.steps, args.device)
        sweep = load_sweep(path)
        started = time.perf_counter()
        for run in sweep.runs:
            run_scene(run.scene, out_root=scratch / "serial", progress=False)
        results["serial loop (one process, all cores per run)"] = time.perf_counter() - started
        print("serial", results, flush=True)
        outcome = run_sweep(sweep, scratch / "local", progress=False)
        assert not outcome.failed, outcome.failed
        results[f"local backend ({machine_cores()} workers x 1 thread)"] = outcome.seconds
        print("local", outcome.seconds, flush=True)
        if importlib.util.find_spec("ray") is not None:
            ray_sweep = dataclasses.replace(sweep, backend=sweep.backend.model_copy(update={"name": "ray"}))
            started = time.perf_counter()
            outcome = run_sweep(ray_sweep, scratch / "ray", progress=False)
            assert not outcome.failed, outcome.failed
            results["ray backend (local Ray, 1 CPU per run; includes starting Ray)"] = time.perf_counter() - started
            print("ray", results, flush=True)
        stacked_sweep = dataclasses.replace(sweep, backend=sweep.backend.model_copy(update={"stack_seeds": "on"}))
        outcome = run_sweep(stacked_sweep, scratch / "stacked", progress=False)
        assert not outcome.failed, outcome.failed
        results[f"local backend, the {args.runs} seeds trained as one stacked model"] = outcome.seconds
        print("stacked", outcome.seconds, flush=True)
        training = training_only(sweep)
    serial = results["serial loop (one process, all cores per run)"]
    local = list(results.values())[1]
    lines = [f"# Sweep backends: {args.runs} small runs of sheet_two_class ({args.steps} steps each)", "",
             f"`python benchmarks/sweep_speed.py --runs {args.runs} --steps {args.steps}`, {datetime.date.today()}: "
             f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}. Each timing includes "
             f"starting the workers and writing every run folder.", "",
             f"Training on `{args.device}`.", "",
             "| how | wall | per run | runs per minute | speed-up over serial |", "|---|---|---|---|---|"]
    for name, seconds in results.items():
        lines.append(f"| {name} | {seconds:.1f} s | {seconds / args.runs:.1f} s | {60 * args.runs / seconds:.1f} | "
                     f"{serial / seconds:.2f}x |")
    ray = results.get("ray backend (local Ray, 1 CPU per run; includes starting Ray)")
    if ray is not None:
        lines += ["", f"Ray's overhead per run against the local pool: {(ray - local) / args.runs:+.2f} s "
                      f"(({ray:.1f} - {local:.1f}) / {args.runs})."]
    alone, together = training
    lines += ["", f"Training alone, in this process ({torch.get_num_threads()} torch threads as set by the training "
                  f"loop): {args.runs} `train()` calls {alone:.2f} s, `train_stacked` of the {args.runs} seeds "
                  f"{together:.2f} s (**{alone / together:.2f}x**; the same weights, snapshots and history, bit for "
                  f"bit on the CPU)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def training_only(sweep) -> tuple[float, float]:
    """Seconds of the runs' training alone: one `train()` per seed, then `train_stacked` of all
    (each seed on its own data set, as in the sweep); the best of three of each."""
    from simulator.data import make_dataset
    from simulator.training.loop import resolve_device, train
    from simulator.training.stacked import train_stacked

    scenes = [run.scene for run in sweep.runs]
    datasets = [make_dataset(scene) for scene in scenes]
    device = resolve_device(scenes[0].train.device)

    def timed(work) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            work()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        return best

    alone = timed(lambda: [train(scene, data, progress=False) for scene, data in zip(scenes, datasets)])
    together = timed(lambda: train_stacked(scenes[0], datasets, [scene.seed for scene in scenes], device))
    return alone, together


if __name__ == "__main__":
    main()
