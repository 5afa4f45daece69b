"""Sweep backends against a serial loop: 8 small runs of sheet_two_class.

- serial: `run_scene` eight times in one process (torch's default threads: every core);
- local: `sim sweep`'s process pool (workers = cores, one torch thread each);
- ray: the same sweep on a local Ray started for it (one CPU per run), if Ray is installed.

Each timing includes starting the workers (or Ray) and writing every run folder. Ray's overhead
per run is (ray wall - local wall) / runs: what its scheduling, start-up and object transfer
add to the same work. Goal (issue #16): local at least 1.6x faster than serial on 2 cores.

    python benchmarks/sweep_speed.py [--runs 8] [--steps 400] [--out docs/sweep_speed.md]
"""

from __future__ import annotations

import argparse
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


def sweep_file(folder: Path, runs: int, steps: int) -> Path:
    path = folder / "speed.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "sweep", "name": "speed", "scene": str(ROOT / "scenes" / "sheet_two_class.yaml"),
        "set": {"train.steps": steps, "snapshots.count": 4, "measure.n_points": 50, "measure.attacks.n_points": 50,
                "measure.attacks.modes": ["free", "on", "off"], "measure.attacks.bootstrap": 200,
                "render.three_d": False, "render.animation": False, "render.first_look": False,
                "train.device": "cpu"},
        "grid": {"seed": list(range(runs))}}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", help="Write the table as markdown here (e.g. docs/sweep_speed.md).")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        path = sweep_file(scratch, args.runs, args.steps)
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
            import dataclasses

            ray_sweep = dataclasses.replace(sweep, backend=sweep.backend.model_copy(update={"name": "ray"}))
            started = time.perf_counter()
            outcome = run_sweep(ray_sweep, scratch / "ray", progress=False)
            assert not outcome.failed, outcome.failed
            results["ray backend (local Ray, 1 CPU per run; includes starting Ray)"] = time.perf_counter() - started
            print("ray", results, flush=True)
    serial = next(iter(results.values()))
    local = list(results.values())[1]
    lines = [f"# Sweep backends: {args.runs} small runs of sheet_two_class ({args.steps} steps each)", "",
             f"`python benchmarks/sweep_speed.py --runs {args.runs} --steps {args.steps}`, {datetime.date.today()}: "
             f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}. Each timing includes "
             f"starting the workers and writing every run folder.", "",
             "| how | wall | per run | speed-up over serial |", "|---|---|---|---|"]
    for name, seconds in results.items():
        lines.append(f"| {name} | {seconds:.1f} s | {seconds / args.runs:.1f} s | {serial / seconds:.2f}x |")
    if len(results) == 3:
        ray = list(results.values())[2]
        lines += ["", f"Ray's overhead per run against the local pool: {(ray - local) / args.runs:+.2f} s "
                      f"(({ray:.1f} - {local:.1f}) / {args.runs})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
