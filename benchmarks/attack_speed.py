"""Minimal L2 adversarial distances: GreedyProjectedPGD against torchattacks' PGDL2 and foolbox's L2PGD.

Goal (issue 4): give every test point its minimal adversarial example in at least 3x less time
than the fastest peer, at an equal or smaller median norm. Protocol (docs/attack_benchmark.md):

- One trained MLP per scene, the same first N test points, the same L2 step size for everyone.
- The model is wrapped in an isotropic affine map from [0, 1]^n (torchattacks clamps to [0, 1]);
  the box leaves a margin of the largest epsilon ever tried on every side, so no clamp binds.
  All methods, ours included, attack the same wrapped model; norms are reported in data units.
- The wrapper also divides the logits by a temperature (default: the largest logit margin at
  the points / 5). Decisions do not change, but the peers' cross-entropy no longer saturates:
  with raw logits (--temperature 1) its float32 gradient vanishes on confident points and
  their PGD never moves there.
- Peers take a fixed epsilon, so each point gets a batched per-point search over epsilon: double
  from eps0 until the attack succeeds, then bisect until the bracket is narrower than `tol`.
  Every trial is a full PGD run (no random start) with a fixed step count
  T = ceil(1.25 * max epsilon in the trial / step) (foolbox's default steps * rel_stepsize = 1.25),
  on the points whose bracket is still open. A point's norm is that of its smallest-epsilon
  successful adversarial example.
- Ours: one GreedyProjectedPGD(mode="free") call with its defaults (bisection refinement,
  two normal rounds), and once with the plain greedy walk (normal_rounds=0) for comparison.

    python benchmarks/attack_speed.py [SCENE.yaml ...] [--n-points 500] [--step-size 0.01] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
from torch import nn

from simulator.attacks.deepfool import DeepFoolL2
from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.data import make_dataset
from simulator.geometry.margins import predicted_margin
from simulator.config.loading import load_scene
from simulator.training.loop import train

SCENES = ["scenes/subspace_highdim.yaml", "scenes/sheet_two_class.yaml"]


class UnitBox(nn.Module):
    """model(center + scale (u - 1/2)) / temperature for u in [0, 1]^n.

    The map is isotropic, so L2 norms scale by `scale`; dividing the logits by a temperature
    changes no decision and no margin-gradient direction, but keeps the cross-entropy of a
    confident model from saturating (its gradient underflows in float32 once the logit margin
    exceeds ~17, and PGD then stands still). Inputs may carry image-style extra axes
    (torchattacks needs (N, C, H, W)); they are flattened.
    """

    def __init__(self, model: nn.Module, center: torch.Tensor, scale: float, temperature: float):
        super().__init__()
        self.model, self.scale, self.temperature = model, scale, temperature
        self.register_buffer("center", center)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.center + self.scale * (u.flatten(1) - 0.5)) / self.temperature


def unit_box(model: nn.Module, x: torch.Tensor, eps_cap: float, temperature: str) -> tuple[UnitBox, torch.Tensor]:
    """The wrapped model and the points in its [0, 1]^n coordinates (no clamp can bind within eps_cap).

    temperature "auto": the largest logit margin at the points / 5, so every margin is <= 5.
    """
    center = (x.amax(0) + x.amin(0)) / 2
    scale = 2 * (float((x - center).abs().max()) + eps_cap)
    if temperature == "auto":
        with torch.no_grad():
            temperature = max(1.0, float(predicted_margin(model(x)).max()) / 5)
    return UnitBox(model, center, scale, float(temperature)).eval(), (x - center) / scale + 0.5


# --------------------------------------------------------------------------- peers behind one signature


def torchattacks_trial(box: UnitBox, step: float):
    import torchattacks

    def trial(u, label, eps, steps):
        attack = torchattacks.PGDL2(box, eps=eps, alpha=step, steps=steps, random_start=False)
        return attack(u[:, None, None, :], label).flatten(1)  # PGDL2 reshapes norms as (N, 1, 1, 1)
    return trial


def foolbox_trial(box: UnitBox, step: float):
    import eagerpy as ep
    import foolbox

    model = foolbox.PyTorchModel(box, bounds=(0, 1))

    def trial(u, label, eps, steps):
        attack = foolbox.attacks.L2PGD(abs_stepsize=step, steps=steps, random_start=False)
        # `run` with a per-point epsilon tensor: the batched form of __call__'s scalar epsilons.
        return attack.run(model, u, foolbox.criteria.Misclassification(label), epsilon=ep.astensor(eps))
    return trial


def minimal_by_epsilon_search(box: UnitBox, u: torch.Tensor, trial, step: float, eps0: float, eps_cap: float,
                              tol: float) -> dict:
    """Per-point doubling then bisection over epsilon, batched over the points still open (unit-box units)."""
    start = time.perf_counter()
    with torch.no_grad():
        label = box(u).argmax(1)
    n = len(u)
    low = torch.zeros(n, device=u.device)
    high = torch.full((n,), math.inf, device=u.device)
    best = torch.full((n,), math.nan, device=u.device)
    gradients = forwards = trials = 0

    def run(points, eps):
        nonlocal gradients, forwards, trials
        steps = math.ceil(1.25 * float(eps.max()) / step)
        adversarial = trial(u[points], label[points], eps, steps).detach()
        assert 0 < adversarial.min() and adversarial.max() < 1, "a [0, 1] clamp would have bound: widen the box"
        with torch.no_grad():
            hit = box(adversarial).argmax(1) != label[points]
        gradients += len(points) * steps
        forwards += len(points)
        trials += 1
        norms = (adversarial - u[points]).norm(dim=1)
        return hit, norms

    eps = torch.full((n,), eps0, device=u.device)
    open_ = torch.arange(n, device=u.device)
    while len(open_):  # doubling
        hit, norms = run(open_, eps[open_])
        high[open_[hit]], best[open_[hit]] = eps[open_[hit]], norms[hit]
        low[open_[~hit]] = eps[open_[~hit]]
        eps[open_] *= 2
        open_ = open_[~hit & (eps[open_] <= eps_cap)]
    open_ = ((high - low > tol) & torch.isfinite(high)).nonzero()[:, 0]  # unreached points stay failures
    while len(open_):  # bisection
        middle = (low[open_] + high[open_]) / 2
        hit, norms = run(open_, middle)
        high[open_[hit]], best[open_[hit]] = middle[hit], norms[hit]
        low[open_[~hit]] = middle[~hit]
        open_ = open_[(high[open_] - low[open_]) > tol]
    return {"norms": best, "gradients": gradients, "forwards": forwards, "trials": trials,
            "seconds": time.perf_counter() - start}


def ours(box: UnitBox, u: torch.Tensor, step: float, eps_cap: float, refine_steps: int, normal_rounds: int) -> dict:
    attack = GreedyProjectedPGD(box, mode="free", step_size=step, max_steps=math.ceil(eps_cap / step),
                                refine_steps=refine_steps, normal_rounds=normal_rounds)
    result = attack(u)
    return {"norms": result.distance.cpu(), "gradients": result.gradient_evaluations,
            "forwards": result.forward_evaluations, "trials": 1, "seconds": result.seconds, "repr": repr(attack)}


def deepfool(box: UnitBox, u: torch.Tensor) -> dict:
    result = DeepFoolL2(box)(u)
    return {"norms": result.distance.cpu(), "gradients": result.gradient_evaluations,
            "forwards": result.forward_evaluations, "trials": 1, "seconds": result.seconds}


# --------------------------------------------------------------------------- main


def benchmark_scene(path: str, args) -> list[dict]:
    scene = load_scene(path, overrides={"train.device": args.device})
    data = make_dataset(scene)
    model = train(scene, data, progress=False).model.to(args.device).eval().requires_grad_(False)
    x = torch.as_tensor(data.x_test[: args.n_points], dtype=torch.float32, device=args.device)
    box, u = unit_box(model, x, args.eps_cap, args.temperature)
    s = box.scale  # every setting below is converted to unit-box units, every norm back to data units
    with torch.no_grad():
        accuracy = float((model(x).argmax(1).cpu() == torch.as_tensor(data.y_test[: len(x)])).float().mean())
    print(f"\n## {scene.name}: n={data.ambient_dim}, {len(x)} test points, step {args.step_size}, "
          f"unit box scale {s:.3f}, logit temperature {box.temperature:.2f}, test accuracy {accuracy:.3f}")

    ours_settings = (box, u, args.step_size / s, args.eps_cap / s, args.refine_steps)
    methods = {"GreedyProjectedPGD (ours, defaults)": lambda: ours(*ours_settings, normal_rounds=2),
               "GreedyProjectedPGD, normal_rounds=0": lambda: ours(*ours_settings, normal_rounds=0),
               "DeepFoolL2 (ours, reference)": lambda: deepfool(box, u)}
    search = dict(step=args.step_size / s, eps0=args.eps0 / s, eps_cap=args.eps_cap / s, tol=args.tol / s)
    for peer in args.peers:
        make = {"torchattacks": torchattacks_trial, "foolbox": foolbox_trial}[peer]
        try:
            trial = make(box, args.step_size / s)
        except ImportError as error:
            print(f"{peer}: not installed ({error}); skipped")
            continue
        label = {"torchattacks": "torchattacks PGDL2 + eps search", "foolbox": "foolbox L2PGD + eps search"}[peer]
        methods[label] = lambda trial=trial: minimal_by_epsilon_search(box, u, trial, **search)

    rows = []
    for name, method in methods.items():
        method()  # a warm-up call pays the one-time costs (allocator, lazy imports)
        runs = [method() for _ in range(args.repeats)]
        result = runs[-1]
        norms = result["norms"].cpu() * s
        found = norms[~torch.isnan(norms)]
        rows.append({"method": name, "seconds": statistics.median(r["seconds"] for r in runs),
                     "gradients": result["gradients"], "forwards": result["forwards"], "trials": result["trials"],
                     "success": float((~torch.isnan(norms)).float().mean()),
                     "median": float(found.median()) if len(found) else math.nan,
                     "mean": float(found.mean()) if len(found) else math.nan, "norms": norms})
        if "repr" in result:
            print(f"ours: {result['repr']} (in unit-box units)")
    reference = rows[0]["norms"]
    fastest_peer = min((r for r in rows[3:]), key=lambda r: r["seconds"], default=None)
    print("\n| method | time (s) | grad evals | extra forwards | trials | success | median norm | mean norm "
          "| median per-point diff to ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        diff = r["norms"] - reference
        diff = float(diff[~torch.isnan(diff)].median()) if (~torch.isnan(diff)).any() else math.nan
        print(f"| {r['method']} | {r['seconds']:.3f} | {r['gradients']:,} | {r['forwards']:,} | {r['trials']} | "
              f"{r['success']:.1%} | {r['median']:.4f} | {r['mean']:.4f} | {diff:+.5f} |")
    if fastest_peer:
        print(f"\nspeed-up over the fastest peer ({fastest_peer['method']}): "
              f"{fastest_peer['seconds'] / rows[0]['seconds']:.1f}x in time, "
              f"{fastest_peer['gradients'] / rows[0]['gradients']:.1f}x in gradient evaluations; "
              f"median norm ours {rows[0]['median']:.4f} vs {fastest_peer['median']:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="*", default=SCENES)
    parser.add_argument("--n-points", type=int, default=500)
    parser.add_argument("--step-size", type=float, default=0.01, help="L2 step for every method (data units)")
    parser.add_argument("--refine-steps", type=int, default=10, help="our bisection iterations")
    parser.add_argument("--eps0", type=float, default=0.1, help="peers' first epsilon (data units)")
    parser.add_argument("--eps-cap", type=float, default=4.0, help="largest epsilon / reach tried (data units)")
    parser.add_argument("--tol", type=float, default=0.001, help="peers' final bracket width (data units)")
    parser.add_argument("--peers", nargs="*", default=["torchattacks", "foolbox"])
    parser.add_argument("--temperature", default="auto",
                        help="logit temperature of the wrapper: 'auto' (max margin / 5) or a number (1 = raw logits)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: small batches gain nothing from more, and on a shared "
                             "2-core machine spinning OpenMP threads make timings collapse under load)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = []
    for name in ("torchattacks", "foolbox"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name} missing")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {', '.join(versions)}, "
          f"device {args.device}, load average {os.getloadavg()[0]:.2f}")
    for path in args.scenes:
        benchmark_scene(path, args)


if __name__ == "__main__":
    main()
