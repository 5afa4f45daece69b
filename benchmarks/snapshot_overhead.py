"""How much do boundary snapshots slow training down? (Goal: < 25% at default settings.)

Trains a scene twice with the same seed: with its snapshot schedule, and with only the two
snapshots every run takes (step 0 and the last step). Repeats and reports the median.

    python benchmarks/snapshot_overhead.py [scenes/sheet_two_class.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from simulator.data import make_dataset
from simulator.config.loading import load_scene
from simulator.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", nargs="?", default="scenes/sheet_two_class.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    scene = load_scene(args.scene, overrides={"train.device": args.device})
    bare = load_scene(args.scene, overrides={"train.device": args.device, "snapshots.schedule": "every",
                                              "snapshots.every": scene.train.steps})
    data = make_dataset(scene)
    train(bare, data, progress=False)  # warm-up (allocator, kernels)
    with_snapshots, without = [], []
    for _ in range(args.repeats):
        without.append(train(bare, data, progress=False).seconds)
        result = train(scene, data, progress=False)
        with_snapshots.append(result.seconds)
    a, b = statistics.median(with_snapshots), statistics.median(without)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"scene {scene.name}: {scene.train.steps} steps, {len(result.snapshots)} snapshots")
    print(f"median training time with snapshots {a:.3f} s, without {b:.3f} s, overhead {100 * (a / b - 1):+.1f}%")


if __name__ == "__main__":
    main()
