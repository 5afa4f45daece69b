"""The critique's experiment at its scale: k = 3500 random subspaces of 224 x 224 x 3 photos.

Runs `scenes/real_photos_critique_k3500.yaml` (EfficientNet-Lite0 on scikit-image's four colour
photos, n = 150528, five attack modes) end to end in this process, as `sim run` does, and
records its wall time and peak resident memory (VmHWM) with the table the issue asks for: median
distance, ratio to free, the dimension-only prediction, per mode. Goal (issue #15): at most 10
minutes and 2 GiB on 2 CPU cores.

    pip install -e '.[pretrained,photos]'
    python benchmarks/critique_photos.py [--scene scenes/real_photos_critique_k3500.yaml]
        [--set measure.subspace_dim=500 ...] [--out docs/critique_photos.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scaling import read_status_kb  # benchmarks/scaling.py, beside this script

from simulator.config.real import load_real_experiment
from simulator.formatting import fmt
from simulator.pipeline import run_real

MODE_NAMES = {"free": "PGD (unconstrained)", "random_on": "random-subspace PGD", "random_off": "off-random-subspace PGD",
              "coordinate_on": "coordinate-subset PGD", "coordinate_off": "off-coordinate-subset PGD"}


def peak_rss_bytes() -> int | None:
    """The process's peak resident memory so far (Linux VmHWM), or None elsewhere."""
    kilobytes = read_status_kb("VmHWM")
    return None if kilobytes is None else kilobytes * 1024


def parse_overrides(pairs: list[str]) -> dict:
    import yaml

    return {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="scenes/real_photos_critique_k3500.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a field.")
    parser.add_argument("--out", help="Write the table as markdown here (e.g. docs/critique_photos.md).")
    parser.add_argument("--haar", action="store_true",
                        help="Dense Haar-random bases (QR of a Gaussian) for the random modes at any size, as "
                        "before the structured operators: for comparing the two at k = 500.")
    args = parser.parse_args()
    if args.haar:
        import simulator.attacks.subspaces as subspaces

        subspaces.HAAR_MAX_ENTRIES = float("inf")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    experiment = load_real_experiment(args.scene, overrides=parse_overrides(args.set))
    before = peak_rss_bytes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        summary = run_real(experiment, folder, log=print)
        wall = time.perf_counter() - started
        with np.load(summary.path / "attack_distances.npz") as stored:  # per photo, upper ends
            per_photo = {mode: stored[mode].tolist() for mode in summary.attacks["modes"] if mode in stored.files}
        names = [str(name) for name in np.load(summary.path / "points.npz").get("names", [])]
    peak = peak_rss_bytes()
    attacks = summary.attacks
    lines = [f"# {experiment.description}", "",
             f"Written by `python benchmarks/critique_photos.py --scene {args.scene}"
             + "".join(f" --set {pair}" for pair in args.set) + (" --haar" if args.haar else "") + "`.", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, device "
             f"{summary.device}, {torch.get_num_threads()} torch threads",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; load average "
             f"at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
             f"- wall time end to end (photos, classifier, attacks, report): {wall:.0f} s; peak resident memory "
             f"{(peak or 0) / 2**30:.2f} GiB (the process before the run: {(before or 0) / 2**30:.2f} GiB)",
             "- random subspaces: " + ("dense Haar-random bases (--haar)" if args.haar else
                                       "seeded structured orthogonal operators above n k = 2^17 entries"),
             f"- n = {experiment.dataset.image_size[0]}^2 x 3, k = {experiment.measure.subspace_dim}, "
             f"photos {', '.join(names or experiment.photo_names)}; distances are the upper ends of the brackets "
             "(a found adversarial perturbation), the lower ends are 0 (certified bounds cover MLPs only)",
             "", "| attack | median L2 | per photo | ratio to free | dimension-only | success | seconds |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for mode, row in attacks["modes"].items():
        per_point = ", ".join(fmt(value, 3) for value in per_photo.get(mode, []))
        lines.append(f"| {MODE_NAMES.get(mode, mode)} | {fmt(row.get('median_distance_counting_failures'), 3)} | "
                     f"{per_point} | "
                     f"{fmt(row.get('ratio_to_free'), 3)} | {fmt(row.get('dimension_only_ratio'), 3)} | "
                     f"{fmt(row.get('success_rate'), 3)} | {fmt(row.get('seconds'), 3)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
