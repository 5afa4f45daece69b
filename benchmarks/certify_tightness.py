"""How tight are the certified radii (simulator/attacks/certify.py)? IBP, CROWN and CROWN + branch
and bound against the attack's distance and an exhaustive direction search, per attack mode.

Per scene: train the scene's model (as benchmarks/attack_speed.py does), take the first N test
points, and per mode (free, on, off, random_on, random_off; `*_off` modes certify the complement
of the basis the attack reports):

- attack: GreedyProjectedPGD(model, mode)(x, tangent_bases).distance (an upper bound on the true
  minimal distance d*; NaN where it found nothing);
- exhaustive (subspaces of dimension d <= 3 only): rays over the sphere of the subspace (2 for
  d = 1, --directions angles for d = 2, a Fibonacci lattice for d = 3), each marched from the
  certified radius to the attack's distance and bisected at its first label change; the nearest
  change (or the attack's distance) is an upper bound on d*, within a hair of it;
- certified radii: certified_radius(..., bound="ibp"), (..., max_boxes=0) = CROWN, and the
  defaults = CROWN + branch and bound where d <= 3, each timed (median of --repeats calls).

Printed: median (and 10th percentile) certified / attack and certified / exhaustive ratios, the
share of points with certified >= 0.95 x exhaustive, and the wall time per call. A ratio above 1
against the exhaustive search would be a soundness bug (the script says so).

    python benchmarks/certify_tightness.py [SCENE.yaml ...] [--n-points 50] [--directions 2000]
        [--repeats 1] [--threads 1]

Defaults: scenes/sheet_two_class.yaml (n=3, all modes with branch and bound) and
scenes/subspace_highdim.yaml (n=100, k=10: IBP and CROWN only).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

from simulator.attacks.certify import certified_radius
from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.config.loading import load_scene
from simulator.data import make_dataset
from simulator.training.loop import train

SCENES = ["scenes/sheet_two_class.yaml", "scenes/subspace_highdim.yaml"]
MODES = ["free", "on", "off", "random_on", "random_off"]
METHODS = {"IBP": {"bound": "ibp"}, "CROWN": {"max_boxes": 0}, "CROWN+BaB": {}}


def subspace_frame(x: torch.Tensor, basis: torch.Tensor | None, complement: bool) -> torch.Tensor:
    """An orthonormal basis (N, n, d) of the searched subspace, float64."""
    if basis is None:
        return torch.eye(x.shape[1], dtype=torch.float64).expand(len(x), -1, -1)
    q = torch.linalg.qr(basis.double(), mode="complete").Q
    return q[:, :, basis.shape[2]:] if complement else q[:, :, :basis.shape[2]]


def sphere(d: int, count: int) -> torch.Tensor:
    if d == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    if d == 2:
        angle = torch.arange(count, dtype=torch.float64) * (2 * math.pi / count)
        return torch.stack([angle.cos(), angle.sin()], dim=1)
    index = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * index / count
    angle = index * math.pi * (3 - math.sqrt(5))
    ring = (1 - z**2).sqrt()
    return torch.stack([ring * angle.cos(), ring * angle.sin(), z], dim=1)


@torch.no_grad()
def exhaustive_distance(model, x, label, frame, lower, upper, directions: int, march: int = 48,
                        bisections: int = 24) -> torch.Tensor:
    """(N,) the nearest label change over rays of the subspace, marched from lower to upper in
    at least `march` steps of at most 2% of `lower` (at most 2000), then bisected."""
    unit = sphere(frame.shape[2], directions)
    best = upper.clone()
    for point in range(len(x)):
        low, high = float(lower[point]), float(upper[point])
        if not high > low:
            continue
        steps = max(march * 8 if frame.shape[2] == 1 else march,
                    min(2000, math.ceil((high - low) / (0.02 * max(low, 1e-3)))))
        rays = frame[point] @ unit.T  # (n, D)
        radii = torch.linspace(low, high, steps + 1, dtype=torch.float64)[1:]
        points = x[point].double() + radii[:, None, None] * rays.T[None]  # (S, D, n)
        changed = model(points.reshape(-1, x.shape[1]).to(x.dtype)).argmax(1).reshape(steps, -1) != label[point]
        hit = changed.any(0)
        if not hit.any():
            continue
        first = changed.to(torch.int8).argmax(0)[hit]
        ray = rays.T[hit]
        outer = radii[first]
        inner = torch.where(first > 0, radii[(first - 1).clamp(min=0)], torch.full_like(outer, low))
        for _ in range(bisections):
            middle = (inner + outer) / 2
            crossed = model((x[point].double() + middle[:, None] * ray).to(x.dtype)).argmax(1) != label[point]
            outer, inner = torch.where(crossed, middle, outer), torch.where(crossed, inner, middle)
        best[point] = min(high, float(outer.min()))
    return best


def timed(function, repeats: int):
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def quantiles(values: torch.Tensor) -> str:
    values = values[torch.isfinite(values)]
    if not len(values):
        return "n/a"
    return f"{float(values.median()):.3f} ({float(values.quantile(0.1)):.3f})"


def benchmark_scene(path: str, args) -> None:
    scene = load_scene(path, overrides={"train.device": "cpu"})
    data = make_dataset(scene)
    start = time.perf_counter()
    model = train(scene, data, progress=False).model.eval().requires_grad_(False)
    x = torch.as_tensor(data.x_test[: args.n_points], dtype=torch.float32)
    tangent = torch.as_tensor(data.tangent_test[: args.n_points], dtype=torch.float32)
    n, k = x.shape[1], tangent.shape[2]
    with torch.no_grad():
        label = model(x).argmax(1)
    print(f"\n## {scene.name}: n={n}, k={k}, hidden {list(scene.model.hidden)} {scene.model.activation}, "
          f"{len(x)} test points (trained in {time.perf_counter() - start:.1f}s)")
    print("\nmedian (10th percentile) certified / attack and certified / exhaustive; share >= 0.95 x exhaustive; "
          "seconds per call\n")
    print("| mode | d | method | certified / attack | certified / exhaustive | >= 0.95 | CROWN / IBP | s / call |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        attack = GreedyProjectedPGD(model, mode=mode, dim=k)
        result = attack(x, tangent)
        basis, complement = result.basis, mode.endswith("off")
        d = n if basis is None else (n - basis.shape[2] if complement else basis.shape[2])
        found = result.distance.double()
        radii = {}
        for name, settings in METHODS.items():
            radii[name], seconds = timed(lambda settings=settings, basis=basis, complement=complement: certified_radius(
                model, x, basis, label=label, complement=complement, max_radius=args.reach, **settings).double(),
                args.repeats)
            radii[name + " seconds"] = seconds
        reference = None
        if d <= 3:
            upper = torch.where(torch.isnan(found), torch.full_like(found, args.reach), found)
            start = time.perf_counter()
            reference = exhaustive_distance(model, x, label, subspace_frame(x, basis, complement),
                                            radii["CROWN+BaB"], upper, args.directions)
            exhaustive_seconds = time.perf_counter() - start
            for name in METHODS:
                above = radii[name] > reference * (1 + 1e-9)
                if above.any():
                    print(f"SOUNDNESS VIOLATION: {mode} {name}: certified above the exhaustive distance at points "
                          f"{above.nonzero()[:, 0].tolist()}")
        for name in METHODS:
            if name == "CROWN+BaB" and d > 3:
                continue
            radius = radii[name]
            versus_reference = "n/a" if reference is None else quantiles(radius / reference)
            share = "n/a" if reference is None else f"{float((radius >= 0.95 * reference).double().mean()):.0%}"
            gain = quantiles(radius / radii["IBP"]) if name != "IBP" else ""
            print(f"| {mode} | {d} | {name} | {quantiles(radius / found)} | {versus_reference} | {share} | {gain} "
                  f"| {radii[name + ' seconds']:.3f} |")
        if reference is not None:
            excess = found / reference
            excess = excess[torch.isfinite(excess)]
            print(f"| {mode} | {d} | (attack / exhaustive: median, max) | {float(excess.median()):.3f}, "
                  f"{float(excess.max()):.3f} | | | | {exhaustive_seconds:.1f} (search) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="*", default=SCENES)
    parser.add_argument("--n-points", type=int, default=50)
    parser.add_argument("--modes", nargs="*", default=MODES)
    parser.add_argument("--reach", type=float, default=10.0, help="max_radius of the certificates")
    parser.add_argument("--directions", type=int, default=4000, help="rays of the exhaustive search (d = 2, 3)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    for path in args.scenes:
        benchmark_scene(path, args)


if __name__ == "__main__":
    main()
