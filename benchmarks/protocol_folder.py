"""The paper's protocol on an image folder: EfficientNet-Lite0 + a convolutional autoencoder, streamed.

Generates folders of 224 x 224 JPEG photos-like images (smooth random colour fields, in
ImageFolder layout: train/<class>/, val/<class>/) of two sizes, runs
`docs/examples/imagenet_efficientnet_autoencoder.yaml` on each with settings cut for a CPU
(`CPU_SETTINGS`, printed in the output), each run in its own process, and records wall time,
peak resident memory (VmHWM), the stage times and the run's tau ratio and on/off ratio.
Streaming means the peak does not grow with the folder; the images are not ImageNet, so the
numbers are about cost, not about ImageNet's geometry.

    pip install -e '.[pretrained]'
    python benchmarks/protocol_folder.py [--sizes 200 800] [--out docs/protocol_folder.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scaling import read_status_kb  # benchmarks/scaling.py, beside this script

from simulator.formatting import fmt

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "imagenet_efficientnet_autoencoder.yaml"
# What the example file asks of a GPU machine, cut to minutes on 2 CPU cores.
CPU_SETTINGS = {
    "device": "cpu", "examples": 0, "dataset.n_train": None, "dataset.labels": "predicted", "dataset.workers": 1,
    "autoencoder.channels": [16, 32, 64, 64, 64], "autoencoder.latent_dim": 32, "autoencoder.steps": 150,
    "autoencoder.batch_size": 16, "measure.n_points": 4, "measure.attacks.max_steps": 100,
    "measure.attacks.bootstrap": 0, "measure.attacks.check_with_deepfool": False,
    "measure.attacks.search.starts": 0, "measure.attacks.search.walk_rounds": 2,
}


def write_folder(root: Path, images: int, side: int = 224, classes: int = 4, seed: int = 0) -> Path:
    """`images` JPEGs, 80% under train/, 20% under val/, `classes` class folders each: smooth random
    colour fields (a 7 x 7 random image upsampled), so an autoencoder has structure to learn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(images):
        split = "train" if index % 5 else "val"
        folder = root / split / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = (rng.random((7, 7, 3)) * 255).astype(np.uint8)
        Image.fromarray(coarse).resize((side + 32, side), Image.BICUBIC).save(folder / f"{index:05d}.jpg", quality=90)
    return root


def child(folder: str, out: str) -> None:
    """One run in this process; prints a JSON line with what the table needs."""
    from simulator.config.real import load_real_experiment
    from simulator.pipeline import run_real

    overrides = {"dataset.path": folder, **CPU_SETTINGS}
    experiment = load_real_experiment(EXAMPLE, overrides={k: v for k, v in overrides.items()})
    started = time.perf_counter()
    run_real(experiment, out)
    wall = time.perf_counter() - started
    metrics = json.loads((Path(out) / experiment.name / "metrics.json").read_text())
    timings = json.loads((Path(out) / experiment.name / "timings.json").read_text())
    modes = metrics["attacks"]["final"]["modes"]
    median = {mode: summary["median_distance_counting_failures"] for mode, summary in modes.items()}
    real = metrics["real"]
    print(json.dumps({
        # VmHWM, this process's own peak (ru_maxrss would include the parent's: Linux carries it
        # across fork and exec)
        "wall": wall, "peak": read_status_kb("VmHWM") * 1024,
        "n_train": real["dataset"]["n_train"], "n_test": real["dataset"]["n_test"],
        "autoencoder_seconds": timings["real.autoencoder.seconds"], "jacobian_seconds": timings["real.jacobian.seconds"],
        "attack_seconds": timings["attacks.seconds"],
        "tau_ratio": metrics["geometry"]["snapshots"][-1]["tangent"]["ratio_to_baseline"],
        "median": median, "test_rmse": real["autoencoder"]["reconstruction"]["test"]["rmse"]}))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 800], help="Images per folder.")
    parser.add_argument("--out", help="Write the table as markdown here (e.g. docs/protocol_folder.md).")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            folder = write_folder(Path(scratch) / f"images_{size}", size)
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), str(Path(scratch) / f"run_{size}")],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(done.stderr[-4000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((size, result))
            print(size, result, flush=True)
    lines = [
        "# The paper's protocol on an image folder (EfficientNet-Lite0 + conv autoencoder, streamed)",
        "",
        f"`python benchmarks/protocol_folder.py --sizes {' '.join(map(str, args.sizes))}`, "
        f"{datetime.date.today()}: {os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}. "
        f"`{EXAMPLE.relative_to(EXAMPLE.parents[2])}` with, for a CPU: `{json.dumps(CPU_SETTINGS)}`. "
        "Generated 224 x 224 JPEGs (smooth random colour fields), 80% train / 20% val; each run in its own "
        "process; peak = VmHWM. Not ImageNet: the numbers are the pipeline's cost, not ImageNet's geometry.",
        "",
        "| images (train / val) | wall | peak memory | autoencoder training | decoder Jacobians | attacks | "
        "test RMSE | tau / sqrt(k/n) | on / free | off / free | random_on / free |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in rows:
        free = r["median"]["free"]
        ratio = {mode: (r["median"][mode] / free if free and r["median"].get(mode) else None)
                 for mode in ("on", "off", "random_on")}
        lines.append(f"| {size} ({r['n_train']} / {r['n_test']}) | {r['wall']:.0f} s | {r['peak'] / 2**30:.2f} GiB | "
                     f"{r['autoencoder_seconds']:.0f} s | {r['jacobian_seconds']:.1f} s | {r['attack_seconds']:.0f} s | "
                     f"{fmt(r['test_rmse'], 3)} | {fmt(r['tau_ratio'], 3)} | {fmt(ratio['on'], 3)} | "
                     f"{fmt(ratio['off'], 3)} | {fmt(ratio['random_on'], 3)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
