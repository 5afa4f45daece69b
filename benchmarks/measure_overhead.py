"""Does measuring every snapshot cost less than training? (Goal: yes, on every shipped scene, 2 CPU cores.)

Trains each scene in-process, then times the geometry measurements of all its snapshots (the
tangent fraction on every snapshot, the stretch spectrum on every `measure.stretch_every`-th,
the height field on every `measure.height_every`-th and on the last at the finer grid),
separately from:
- one-time process costs: the first torch.func call imports torch._dynamo (~1 s here);
- writing files and drawing the curves figure.

    python benchmarks/measure_overhead.py [scenes/sheet_two_class.yaml ...] [--repeats 3] [--device cpu]
    python benchmarks/measure_overhead.py --all --repeats 1 --out docs/measure_cost.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from simulator import load_run, load_scene, run_scene
from simulator.config.resolve import resolve_measure_settings
from simulator.pipeline import measure_step
from simulator.stages.measure import class_feature_directions, measure_snapshots

SCENES = Path(__file__).resolve().parents[1] / "scenes"


def shipped_synthetic_scenes() -> list[Path]:
    """Every scene file except the real-image experiments (`kind: real`)."""
    return sorted(path for path in SCENES.glob("*.yaml") if "kind: real" not in path.read_text())


def measure_scene(path, repeats: int, device: str) -> dict:
    """Training (median of `repeats`) and measuring all snapshots (cold once, then median warm)."""
    overrides = {"train.device": device, "measure.enabled": False, "measure.attacks.enabled": False,
                 "render.first_look": False, "render.three_d": False, "render.animation": False,
                 "render.report": False}
    scene = load_scene(path, overrides=overrides)
    with tempfile.TemporaryDirectory() as folder:
        summary = run_scene(scene, folder, progress=False)
        training = [summary.seconds]
        run = load_run(summary.path)
        settings = resolve_measure_settings(run.scene.measure, run.manifold().host_immersion(run.data.u_train))
        directions = class_feature_directions(run, settings.n_points)
        started = time.perf_counter()
        measure_snapshots(run, settings, torch.device(device), directions)  # cold: first calls in the process
        cold = time.perf_counter() - started
        warm = []
        for _ in range(repeats):
            started = time.perf_counter()
            measure_snapshots(run, settings, torch.device(device), directions)
            warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        measure_step(run, progress=False)  # the stage as the pipeline runs it, with storing
        with_files = time.perf_counter() - started
        for _ in range(repeats - 1):
            training.append(run_scene(scene, folder, progress=False).seconds)
    manifold = run.manifold()
    return {"scene": scene.name, "n": manifold.ambient_dim, "k": manifold.dim,
            "steps": summary.steps,
            "snapshots": len(run.snapshots), "height_every": settings.height_every,
            "stretch_every": settings.stretch_every, "training_s": statistics.median(training),
            "measure_s": statistics.median(warm), "cold_s": cold, "with_files_s": with_files}


def markdown(rows: list[dict], repeats: int, device: str, seconds: float) -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = ["# Measuring all snapshots against training, per shipped scene", "",
             "Written by `python benchmarks/measure_overhead.py --all` (issue #14: measuring all snapshots "
             "of a run costs at most as much as training, on every shipped scene at its default settings).", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, device {device}, "
             f"{torch.get_num_threads()} torch threads available (training and measurement each use one)",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
             f"load average at the end: {load}; {seconds:.0f} s in all",
             f"- training: median of {repeats}; measuring: median of {repeats} warm runs of "
             "`measure_snapshots` (no files); cold: the first in the process (one-time imports and first "
             "calls included); with files: the `sim measure` stage (measuring again, storing, the curves figure)",
             "", "| scene | n | k | steps | snapshots | height / stretch every | training s | measuring s | "
             "measuring / training | cold s | with files s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| `{row['scene']}` | {row['n']} | {row['k']} | {row['steps']} | {row['snapshots']} | {row['height_every']} / "
                     f"{row['stretch_every']} | {row['training_s']:.2f} | {row['measure_s']:.2f} | "
                     f"{row['measure_s'] / row['training_s']:.2f} | {row['cold_s']:.2f} | {row['with_files_s']:.2f} |")
    worst = max(rows, key=lambda row: row["measure_s"] / row["training_s"])
    lines += ["", f"Largest ratio: `{worst['scene']}`, {worst['measure_s'] / worst['training_s']:.2f}x."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="*", help="Scene files (default scenes/sheet_two_class.yaml).")
    parser.add_argument("--all", action="store_true", help="Every shipped synthetic scene.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="Also write the table as markdown here (e.g. docs/measure_cost.md).")
    args = parser.parse_args()
    paths = shipped_synthetic_scenes() if args.all else (args.scenes or ["scenes/sheet_two_class.yaml"])
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"device {args.device}")
    started, rows = time.perf_counter(), []
    for path in paths:
        row = measure_scene(path, args.repeats, args.device)
        rows.append(row)
        print(f"{row['scene']}: training {row['training_s']:.3f} s, measuring all {row['snapshots']} snapshots "
              f"{row['measure_s']:.3f} s = {row['measure_s'] / row['training_s']:.2f} x training (cold "
              f"{row['cold_s']:.3f} s, stage with files {row['with_files_s']:.3f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(markdown(rows, args.repeats, args.device, time.perf_counter() - started))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
