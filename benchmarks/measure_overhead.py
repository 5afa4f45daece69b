"""Does measuring every snapshot cost less than training? (Goal: yes, on 2 CPU cores.)

Trains a scene in-process, then times the geometry measurements of all its snapshots
(tangent fraction and stretch on every snapshot, the height field on every
`measure.height_every`-th and on the last at the finer grid), separately from:
- one-time process costs: the first torch.func call imports torch._dynamo (~1 s here);
- writing files and drawing the curves figure.

    python benchmarks/measure_overhead.py [scenes/sheet_two_class.yaml] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from simulator import load_run, load_scene, run_scene
from simulator.config.resolve import resolve_measure_settings
from simulator.pipeline import measure_step
from simulator.stages.measure import class_feature_directions, measure_snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", nargs="?", default="scenes/sheet_two_class.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    overrides = {"train.device": args.device, "measure.enabled": False, "measure.attacks.enabled": False,
                 "render.first_look": False}
    scene = load_scene(args.scene, overrides=overrides)
    with tempfile.TemporaryDirectory() as folder:
        summary = run_scene(scene, folder, progress=False)
        run = load_run(summary.path)
        settings = resolve_measure_settings(run.scene.measure, run.manifold().immersion(run.data.u_train))
        directions = class_feature_directions(run, settings.n_points)
        device = torch.device(args.device)
        started = time.perf_counter()
        measure_snapshots(run, settings, device, directions)  # cold: includes the one-time torch.func/_dynamo import
        cold = time.perf_counter() - started
        warm = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            measure_snapshots(run, settings, device, directions)
            warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        measure_step(run, progress=False)  # the stage as the pipeline runs it, with storing
        with_files = time.perf_counter() - started
        training = []
        for _ in range(args.repeats):
            training.append(run_scene(scene, folder, progress=False).seconds)
    train_s, measure_s = statistics.median(training), statistics.median(warm)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"device {args.device}")
    print(f"scene {scene.name}: {scene.train.steps} steps, {len(run.snapshots)} snapshots, height field on "
          f"1 in {settings.height_every} ({settings.height_resolution}^k grid) and the last "
          f"({settings.final_height_resolution}^k)")
    print(f"training (median of {args.repeats}):             {train_s:.3f} s")
    print(f"measuring all snapshots (median, warm):  {measure_s:.3f} s  = {measure_s / train_s:.2f} x training")
    print(f"first measurement in a process (cold):   {cold:.3f} s  (one-time imports included)")
    print(f"measure stage incl. storing the results:  {with_files:.3f} s")


if __name__ == "__main__":
    main()
