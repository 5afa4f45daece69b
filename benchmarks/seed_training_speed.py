"""How much faster is training S seeds batched (stacked parameters, one optimiser) than S `train()` calls?

Trains the same S seeds of a scene three ways, interleaved so that a busy machine slows all of
them alike, and reports the median of each:

* sequential: S calls of `simulator.training.loop.train` (what the experiment falls back to);
* batched: `simulator.experiments.seed_agreement.train_seeds` as the simulator runs it (each
  layer one batched matrix product over the stacked parameters);
* batched, vmap: the same with the forward pass as torch.func.vmap of functional_call.

All three give the same weights (tests/test_seed_agreement.py checks it).

    python benchmarks/seed_training_speed.py [scenes/sheet_two_class.yaml] [--count 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from simulator.data import make_dataset
from simulator.experiments import seed_agreement
from simulator.config.loading import load_scene
from simulator.training.loop import train


def batched(scene, data, seeds, method: str) -> None:
    original = seed_agreement.stacked_forward
    seed_agreement.stacked_forward = lambda template: original(template, method)
    try:
        seed_agreement.train_seeds(scene, data, seeds)
    finally:
        seed_agreement.stacked_forward = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", nargs="?", default="scenes/sheet_two_class.yaml")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scene = load_scene(args.scene, overrides={"train.device": "cpu"})
    data = make_dataset(scene)
    seeds = [scene.seed + i for i in range(args.count)]
    for method in ("auto", "vmap"):  # warm-up (allocator, vmap's first trace)
        batched(scene, data, seeds[:2], method)
    times: dict[str, list[float]] = {"sequential train()": [], "batched": [], "batched, vmap": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        for seed in seeds:
            train(scene.model_copy(update={"seed": seed}), data, progress=False)
        times["sequential train()"].append(time.perf_counter() - started)
        for name, method in (("batched", "auto"), ("batched, vmap", "vmap")):
            started = time.perf_counter()
            batched(scene, data, seeds, method)
            times[name].append(time.perf_counter() - started)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__}, one training thread")
    print(f"scene {scene.name}: {args.count} seeds x {scene.train.steps} steps, batch {scene.train.batch_size}, "
          f"{args.repeats} repeats (median, all runs in brackets)")
    baseline = statistics.median(times["sequential train()"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:20s} {median:6.2f} s  x{baseline / median:4.2f}  "
              f"[{', '.join(f'{v:.2f}' for v in values)}]")


if __name__ == "__main__":
    main()
