"""Our minimal adversarial distances per subspace mode against foolbox's and torchattacks' attacks.

Question: in every attack mode (free, on/off, random_on/off, coordinate_on/off), does another
library's minimal-norm attack find a shorter adversarial example than `attack_points` does?
Protocol (written into docs/attack_peers.md with the figures):

- One trained model per scene, trained exactly as `sim run` trains it (`pipeline.trained_run`:
  same data, same seed; no measuring or drawing), cached under --runs and reused while the
  scene's data, model and training sections are unchanged. A run folder written by `sim run`
  can be passed instead of a scene.
- The attacked points, the attack settings and the device are the run's: the settings are the
  ones `pipeline.compute_attacks` resolves (captured from that very call), the points are the
  first `settings.n_points` test points (or --n-points), labels are the model's predictions there.
- Ours: one `attack_points(model, x, tangent_bases, settings, scene seed)` call with every mode
  (its DeepFool side check off: it changes no distance); `report["distances"][mode]` are our
  (verified upper-bound) distances, `report["modes"][mode]["seconds"]` our time, and
  `report["lower_bounds"][mode]`, where present, our certified lower bounds: a peer's verified
  distance below one is a counterexample to the certificate and is listed. Our free-mode
  perturbations (`report["free_delta"]`) are re-checked with a forward pass as the peers' are.
- Peers attack, per point i, the model restricted to the mode's subspace,
  z -> model(x0_i + B_i z) / T, with B_i an orthonormal basis of that subspace (for `*_off`
  modes the orthogonal complement of `mode_bases`' span, from a complete QR in float64), starting
  at z = 0, so ||z|| is the distance within the subspace. T (logit temperature) = the largest
  logit margin at the points / 5 (at least 1): no decision changes, but cross-entropy losses no
  longer saturate in float32 (see benchmarks/attack_speed.py).
  The attacks see z in coordinates: foolbox z = R u with bounds u in [-reach/R, reach/R]^m
  (R the data radius; the libraries' default step sizes and epsilons are then in units of the
  data radius, as image attacks' are in units of the pixel range), torchattacks
  z = 2 reach (u - 1/2), u in [0, 1]^m (it clamps to [0, 1]). Within the reach no clamp binds.
  One wrapper holds every point's (x0_i, B_i) and maps the batch row j to the j-th point of the
  set being attacked; each call's batch size is checked against that set (all four attacks call
  the model on their whole batch, in order).
- Every peer's result is checked with one forward pass of the original model at x0 + B z: a
  point whose label did not change (or that the attack did not return) counts as not found.
  The distance is ||x_adv - x0|| of that verified float32 point.
- Medians count not-found as +inf ("inf" when more than half are not found).

Peers (library defaults unless stated):
  fb_fmn        foolbox L2FMNAttack (steps=100, max_stepsize=1, gamma=0.05), as shipped.
                foolbox <= 3.3.4's L2FMNAttack.project computes min(1, norms / norms) == 1, so
                it never projects onto the epsilon ball: it is a normalized-gradient walk that
                keeps the shortest adversarial iterate.
  fb_fmn_fixed  the same with the projection of Pintor et al.'s algorithm,
                delta * min(1, epsilon / ||delta||) (a 4-line subclass below).
  fb_ddn        foolbox DDNAttack (L2; init_epsilon=1, i.e. one data radius, steps=100, gamma=0.05).
  fb_bb         foolbox L2BrendelBethgeAttack (steps=1000, lr=1e-3, ...), started from foolbox's
                own default init (LinearSearchBlendedUniformNoiseAttack, random: torch is seeded
                per scene, mode and peer); points that init cannot make adversarial are not
                attacked (not found). Its trust region grows with the batch size (foolbox scales
                it by prod(x.shape), batch axis included). Needs numba.
  ta_pgd        torchattacks PGDL2 (no random start) with a per-point epsilon search: double
                from eps0 (10 run step sizes) until adversarial, the last try at the reach
                itself, then bisect to a bracket of 0.1 step; L2 step = the run's step_size;
                ceil(1.25 eps / step) steps per trial (as in benchmarks/attack_speed.py).

    python benchmarks/attack_peers.py [--scenes NAME|SCENE.yaml|RUN_DIR ...] [--n-points N]
        [--modes MODE ...] [--peers PEER ...] [--out docs/attack_peers.md] [--runs DIR] [--per-point]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from simulator import pipeline
from simulator.attacks.subspaces import MODES, mode_bases
from simulator.config.resolve import AttackSettings, resolve_attack_settings
from simulator.runs.integrity import content_digest
from simulator.runs.io import staged_run_dir
from simulator.runs.loading import load_run
from simulator.stages.attack import attack_points
from simulator.training.loop import resolve_device

REPO = Path(__file__).resolve().parents[1]
PEERS = ("fb_fmn", "fb_fmn_fixed", "fb_ddn", "fb_bb", "ta_pgd")
PEER_LABELS = {"ours": "ours (attack_points)", "fb_fmn": "foolbox L2FMN as shipped", "fb_fmn_fixed": "L2FMN, projection fixed",
               "fb_ddn": "foolbox L2DDN", "fb_bb": "foolbox L2 Brendel-Bethge", "ta_pgd": "torchattacks PGDL2 + eps search"}
SHORTER = 0.01  # a per-point distance counts as shorter than another's when it is more than 1% shorter


def default_scenes() -> list[str]:
    return sorted(p.stem for p in (REPO / "scenes").glob("*.yaml") if not p.stem.startswith("real_"))


# --------------------------------------------------------------------------- the run: model, points, settings


# The scene sections that decide the data and the trained weights: a cached run is reused while
# these are unchanged (edits of measure/render/experiments, or new schema defaults there, keep it).
TRAINING_SECTIONS = ("seed", "manifold", "labels", "data", "model", "train", "snapshots")


def training_digest(scene) -> str:
    settings = yaml.safe_load(scene.to_yaml())
    return content_digest({section: settings.get(section) for section in TRAINING_SECTIONS})


def load_or_train(spec: str, runs_root: Path, log=print):
    """A synthetic run: RUN_DIR as it is, or the scene (a name in scenes/ or a YAML path) trained
    as `sim run` trains it, into runs_root/<name>. A cached run is reused while the scene's
    training sections are unchanged; its scene is then replaced by the current one, so the
    attack settings are resolved from today's scene file and schema defaults."""
    path = Path(spec)
    if path.is_dir() and (path / "metrics.json").is_file():
        return load_run(path)
    if path.suffix not in (".yaml", ".yml"):
        path = REPO / "scenes" / f"{spec}.yaml"
    scene = pipeline.load_experiment(path)
    if getattr(scene, "kind", None) == "real":
        raise SystemExit(f"{path}: a real-image experiment; this benchmark takes synthetic scenes only")
    folder = Path(runs_root) / scene.name
    if (folder / "metrics.json").is_file():
        try:
            run = load_run(folder)
            if training_digest(run.scene) == training_digest(scene):
                log(f"{scene.name}: reusing the trained run in {folder}")
                run.scene = scene
                return run
        except Exception as error:  # noqa: BLE001 -- a damaged or outdated cache is retrained
            log(f"{folder}: not reusable ({type(error).__name__}: {error}); training again")
    log(f"{scene.name}: training as `sim run` does, into {folder}")
    started = time.perf_counter()
    with staged_run_dir(folder) as staging:
        pipeline.trained_run(staging, scene, progress=False, log=log)
    log(f"{scene.name}: trained in {time.perf_counter() - started:.0f} s")
    return load_run(folder)


class _Captured(Exception):
    pass


def run_attack_settings(run) -> tuple[AttackSettings, torch.device, str]:
    """The settings and device `sim run`'s attack stage uses for this run: `compute_attacks` is
    called with its `attack_snapshots` replaced by a stub that records its arguments and stops.
    Falls back to the call `compute_attacks` makes today if that no longer works."""
    captured = {}

    def stub(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, AttackSettings):
                captured["settings"] = value
            elif isinstance(value, torch.device):
                captured["device"] = value
        raise _Captured

    original = pipeline.attack_snapshots
    pipeline.attack_snapshots = stub
    try:
        pipeline.compute_attacks(run, progress=False)
    except _Captured:
        pass
    finally:
        pipeline.attack_snapshots = original
    if "settings" in captured:
        return captured["settings"], captured.get("device") or resolve_device(run.scene.train.device), "compute_attacks"
    spec = run.scene.measure.attacks
    trained = (run.metrics["training"].get("adversarial") or {}).get("epsilon")
    settings = resolve_attack_settings(spec, run.scene.seed, spec.n_points or run.scene.measure.n_points,
                                       run.data_radius(), trained_epsilons=(trained, run.scene.train.adversarial.epsilon))
    return settings, resolve_device(run.scene.train.device), "resolve_attack_settings (fallback)"


def reach_of(settings: AttackSettings) -> float:
    return float(getattr(settings, "reach", settings.max_steps * settings.step_size))


# --------------------------------------------------------------------------- subspaces and the wrapper


def orthonormal(basis: torch.Tensor) -> tuple[torch.Tensor, float]:
    """basis (N, n, k) -> an orthonormal basis of the same span (QR in float64), and the largest
    deviation of the given one from orthonormality."""
    b = basis.double()
    eye = torch.eye(b.shape[-1], dtype=b.dtype, device=b.device)
    deviation = float((b.transpose(1, 2) @ b - eye).abs().max())
    if deviation < 1e-5:
        return basis, deviation
    q, _ = torch.linalg.qr(b)
    return q.to(basis.dtype), deviation


def complement(basis: torch.Tensor) -> torch.Tensor:
    """(N, n, k) orthonormal -> (N, n, n - k) orthonormal basis of the orthogonal complement."""
    k = basis.shape[-1]
    q, _ = torch.linalg.qr(basis.double(), mode="complete")
    out = q[:, :, k:]
    assert float((basis.double().transpose(1, 2) @ out).abs().max()) < 1e-8
    return out.to(basis.dtype)


def search_basis(mode: str, x: torch.Tensor, tangent: torch.Tensor, settings: AttackSettings) -> tuple:
    """The orthonormal basis (N, n, m) of the subspace mode searches (None: all of R^n), and notes."""
    k = tangent.shape[-1]
    basis = mode_bases(mode, x, tangent, k, settings.seed)
    if basis is None:
        return None, {}
    basis, deviation = orthonormal(basis)
    notes = {"basis_orthonormality_deviation": deviation} if deviation >= 1e-5 else {}
    on = mode.endswith("on")  # "on", "random_on", "coordinate_on"
    return (basis if on else complement(basis)), notes


class SubspaceModel(nn.Module):
    """u (M, m) -> model(x0_i + B_i z) / temperature with z = scale (u - offset), where row j of
    the batch is point i = active[j] (`select` sets the active points; all by default).

    Inputs may carry image-style axes (torchattacks needs (M, 1, 1, m)); they are flattened.
    Every call's batch size must equal the number of active points."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, basis: torch.Tensor | None, scale: float, offset: float,
                 temperature: float):
        super().__init__()
        self.model, self.scale, self.offset, self.temperature = model, float(scale), float(offset), float(temperature)
        self.register_buffer("x0", x0)
        self.basis = basis
        self.active = torch.arange(len(x0), device=x0.device)
        self.calls = 0

    @contextlib.contextmanager
    def select(self, index: torch.Tensor):
        previous, self.active = self.active, index
        try:
            yield self
        finally:
            self.active = previous

    def points(self, u: torch.Tensor) -> torch.Tensor:
        u = u.flatten(1)
        if len(u) != len(self.active):
            raise RuntimeError(f"the attack called the model on {len(u)} inputs while {len(self.active)} points "
                               f"are being attacked: its batch cannot be mapped to the points")
        z = self.scale * (u - self.offset)
        x0 = self.x0[self.active]
        if self.basis is None:
            return x0 + z
        return x0 + torch.einsum("bnm,bm->bn", self.basis[self.active], z)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(self.points(u)) / self.temperature


# --------------------------------------------------------------------------- peers


def _fixed_fmn_class():
    import eagerpy as ep
    import foolbox as fb
    from foolbox.devutils import atleast_kd, flatten

    class FixedL2FMNAttack(fb.attacks.L2FMNAttack):
        """L2FMNAttack with Pintor et al.'s projection onto the epsilon ball around x0."""

        def project(self, x, x0, epsilon):
            norms = ep.maximum(flatten(x - x0).norms.l2(axis=-1), 1e-12)
            return x0 + (x - x0) * atleast_kd(ep.minimum(1, epsilon / norms), x.ndim)

    return FixedL2FMNAttack


class Peers:
    """The peer attacks behind one signature: peer(name, problem) -> (u_adv (N, m) with NaN rows
    where it returned nothing, notes). Instances are built once (Brendel-Bethge compiles its
    numba solver when first built)."""

    def __init__(self, names, args):
        self.names, self.args = list(names), args
        self._bb = None

    def bb(self):
        if self._bb is None:
            import foolbox as fb
            self._bb = fb.attacks.L2BrendelBethgeAttack(steps=self.args.bb_steps)
        return self._bb

    def run(self, name: str, problem: Problem):
        return getattr(self, name)(problem)

    # foolbox: z = R u, bounds [-reach/R, reach/R]
    def _foolbox(self, problem, attack, **kwargs):
        import foolbox as fb
        box = problem.foolbox_box
        fmodel = fb.PyTorchModel(box, bounds=problem.foolbox_bounds, device=problem.device)
        u0 = torch.zeros(problem.n_points, problem.m, device=problem.device)
        criterion = fb.criteria.Misclassification(problem.label)
        return attack.run(fmodel, u0, criterion, **kwargs).detach(), {}

    def fb_fmn(self, problem):
        import foolbox as fb
        return self._foolbox(problem, fb.attacks.L2FMNAttack(steps=self.args.fmn_steps))

    def fb_fmn_fixed(self, problem):
        return self._foolbox(problem, _fixed_fmn_class()(steps=self.args.fmn_steps))

    def fb_ddn(self, problem):
        import foolbox as fb
        return self._foolbox(problem, fb.attacks.DDNAttack(steps=self.args.ddn_steps))

    def fb_bb(self, problem):
        import foolbox as fb
        box = problem.foolbox_box
        fmodel = fb.PyTorchModel(box, bounds=problem.foolbox_bounds, device=problem.device)
        u0 = torch.zeros(problem.n_points, problem.m, device=problem.device)
        criterion = fb.criteria.Misclassification(problem.label)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "failed to draw sufficient random inputs": counted below
            start = fb.attacks.LinearSearchBlendedUniformNoiseAttack().run(fmodel, u0, criterion).detach()
        with torch.no_grad():
            adversarial = box(start).argmax(1) != problem.label
        out = torch.full_like(u0, math.nan)
        index = adversarial.nonzero()[:, 0]
        notes = {"init_not_adversarial": int(len(u0) - len(index))}
        if len(index):
            with box.select(index):
                out[index] = self.bb().run(fmodel, u0[index], fb.criteria.Misclassification(problem.label[index]),
                                           starting_points=start[index]).detach()
        return out, notes

    # torchattacks: z = 2 reach (u - 1/2), u in [0, 1]
    def ta_pgd(self, problem):
        import torchattacks
        box, s = problem.torchattacks_box, problem.torchattacks_box.scale
        step, cap = problem.settings.step_size / s, problem.reach / s
        eps0, tol = min(self.args.eps0_steps * problem.settings.step_size / s, cap), self.args.tol_steps * step
        u0 = torch.full((problem.n_points, problem.m), 0.5, device=problem.device)
        label, n = problem.label, problem.n_points
        low = torch.zeros(n, device=u0.device)
        high = torch.full((n,), math.inf, device=u0.device)
        best = torch.full_like(u0, math.nan)
        counts = {"trials": 0, "gradients": 0}

        def trial(points, eps):
            steps = math.ceil(1.25 * float(eps.max()) / step)
            with box.select(points):
                attack = torchattacks.PGDL2(box, eps=eps, alpha=step, steps=steps, random_start=False)
                adversarial = attack(u0[points][:, None, None, :], label[points]).flatten(1).detach()
                assert 0 < adversarial.min() and adversarial.max() < 1, "a [0, 1] clamp bound: widen the box"
                with torch.no_grad():
                    hit = box(adversarial).argmax(1) != label[points]
            counts["trials"] += 1
            counts["gradients"] += len(points) * steps
            return hit, adversarial

        eps = torch.full((n,), eps0, device=u0.device)
        open_ = torch.arange(n, device=u0.device)
        while len(open_):  # doubling
            hit, adversarial = trial(open_, eps[open_])
            high[open_[hit]], best[open_[hit]] = eps[open_[hit]], adversarial[hit]
            low[open_[~hit]] = eps[open_[~hit]]
            last = eps[open_] >= cap
            eps[open_] = torch.clamp(eps[open_] * 2, max=cap)  # the last trial is at the reach itself
            open_ = open_[~hit & ~last]
        open_ = ((high - low > tol) & torch.isfinite(high)).nonzero()[:, 0]
        while len(open_):  # bisection
            middle = (low[open_] + high[open_]) / 2
            hit, adversarial = trial(open_, middle)
            high[open_[hit]], best[open_[hit]] = middle[hit], adversarial[hit]
            low[open_[~hit]] = middle[~hit]
            open_ = open_[(high[open_] - low[open_]) > tol]
        return best, counts


@dataclasses.dataclass
class Problem:
    """One scene and mode: the points, their subspace bases and the two wrapped models."""

    model: nn.Module
    x0: torch.Tensor
    basis: torch.Tensor | None
    label: torch.Tensor
    settings: AttackSettings
    reach: float
    radius: float
    temperature: float
    device: torch.device

    def __post_init__(self):
        self.n_points = len(self.x0)
        self.m = self.x0.shape[1] if self.basis is None else self.basis.shape[-1]
        self.foolbox_box = SubspaceModel(self.model, self.x0, self.basis, self.radius, 0.0, self.temperature).eval()
        self.foolbox_bounds = (-self.reach / self.radius, self.reach / self.radius)
        self.torchattacks_box = SubspaceModel(self.model, self.x0, self.basis, 2 * self.reach, 0.5,
                                              self.temperature).eval()

    @torch.no_grad()
    def verified_distances(self, u: torch.Tensor, box: SubspaceModel) -> tuple[np.ndarray, int]:
        """||x_adv - x0|| where x_adv = x0 + B z(u) changes the original model's label (NaN
        elsewhere), and how many returned points moved away from x0 without changing it (foolbox
        returns x0 itself where it found nothing: that is "not found", not "unverified")."""
        distance = np.full(self.n_points, np.nan)
        returned = torch.isfinite(u).all(1)
        if not returned.any():
            return distance, 0
        index = returned.nonzero()[:, 0]
        with box.select(index):
            x_adv = box.points(u[index].to(self.x0.dtype))
        flipped = (self.model(x_adv).argmax(1) != self.label[index]).cpu().numpy()
        norms = (x_adv.double() - self.x0[index].double()).norm(dim=1).cpu().numpy()
        index = index.cpu().numpy()
        distance[index[flipped]] = norms[flipped]
        return distance, int(((norms > 0) & ~flipped).sum())


# --------------------------------------------------------------------------- statistics


def median_inf(distance: np.ndarray) -> float:
    return float(np.median(np.where(np.isnan(distance), np.inf, distance))) if len(distance) else math.nan


def compare(ours: np.ndarray, peers: dict[str, np.ndarray]) -> dict:
    """Per point: ours against the shortest verified peer distance (not found = +inf)."""
    if not peers:
        return {}
    def as_inf(d):
        return np.where(np.isnan(d), np.inf, d)

    names = list(peers)
    stack = np.stack([as_inf(peers[name]) for name in names])
    best = stack.min(0)
    which = stack.argmin(0)
    own = as_inf(ours)
    peer_shorter = best < own * (1 - SHORTER)
    ours_shorter = own < best * (1 - SHORTER)
    both = np.isfinite(best) & np.isfinite(own)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(both, (best - own) / np.where(own > 0, own, np.nan), np.nan)
    worst = []  # the points where a peer beats us most (relative), most first
    order = np.argsort(np.where(peer_shorter, np.nan_to_num(relative, nan=-np.inf), np.inf))
    for i in order[:5]:
        if not peer_shorter[i]:
            break
        worst.append({"point": int(i), "ours": None if not np.isfinite(own[i]) else float(own[i]),
                      "peer": names[which[i]], "peer_distance": float(best[i])})
    return {"best_of_peers_median": median_inf(np.where(np.isfinite(best), best, np.nan)),
            "points_peer_shorter": int(peer_shorter.sum()), "points_ours_shorter": int(ours_shorter.sum()),
            "points_peer_found_ours_not": int((np.isfinite(best) & ~np.isfinite(own)).sum()),
            "points_ours_found_peers_not": int((np.isfinite(own) & ~np.isfinite(best)).sum()),
            "median_relative_best_peer_minus_ours": float(np.nanmedian(relative)) if both.any() else None,
            "min_relative_best_peer_minus_ours": float(np.nanmin(relative)) if both.any() else None,
            "worst_points": worst}


# --------------------------------------------------------------------------- one scene


def ours_per_mode(model, x, tangent, settings, seed, modes) -> tuple[dict, dict, dict, dict]:
    """Our distances, seconds, certified lower bounds (None where the report has none) and
    check failures per mode: one `attack_points` call with every mode; when the report has no
    per-mode seconds, one call per mode, timed here."""
    settings = dataclasses.replace(settings, modes=tuple(modes))
    report = attack_points(model, x, tangent, settings, seed)

    def lower_of(report, mode):
        lower = (report.get("lower_bounds") or {}).get(mode)
        return None if lower is None else np.nan_to_num(np.asarray(lower, dtype=float), nan=0.0)

    distances = {mode: np.asarray(report["distances"][mode], dtype=float) for mode in modes}
    lower = {mode: lower_of(report, mode) for mode in modes}
    warnings = {}
    if "free" in modes and report.get("free_delta") is not None:
        problem = check_free_delta(model, x, np.asarray(report["free_delta"], dtype=float), distances["free"])
        if problem:
            print(f"  WARNING: {problem}")
            warnings["free"] = problem
    seconds = {mode: (report.get("modes", {}).get(mode) or {}).get("seconds") for mode in modes}
    if all(isinstance(value, (int, float)) for value in seconds.values()):
        return distances, seconds, lower, warnings
    for mode in modes:  # no per-mode time in the report: time each mode alone
        started = time.perf_counter()
        report = attack_points(model, x, tangent, dataclasses.replace(settings, modes=(mode,)), seed)
        seconds[mode] = time.perf_counter() - started
        distances[mode] = np.asarray(report["distances"][mode], dtype=float)
        lower[mode] = lower_of(report, mode)
    return distances, seconds, lower, warnings


def check_free_delta(model, x: torch.Tensor, delta: np.ndarray, distance: np.ndarray) -> str | None:
    """Our free-mode perturbations must change the label and have the reported norm: None when
    they do, else what is wrong."""
    found = np.isfinite(distance)
    if not found.any():
        return None
    index = np.flatnonzero(found)
    d = torch.as_tensor(delta[index], dtype=x.dtype, device=x.device)
    with torch.no_grad():
        flipped = (model(x[index] + d).argmax(1) != model(x[index]).argmax(1)).cpu().numpy()
    norms = np.linalg.norm(delta[index], axis=1)
    off = np.abs(norms - distance[index]) > 1e-5 * np.maximum(distance[index], 1e-12) + 1e-7
    if flipped.all() and not off.any():
        return None
    return (f"ours: {int((~flipped).sum())} reported free perturbations do not change the label and "
            f"{int(off.sum())} have a norm other than the reported distance")


def below_lower_bound(distance: np.ndarray, lower: np.ndarray | None) -> np.ndarray:
    """Points whose verified adversarial distance is below our certified lower bound (beyond
    float32 slack): each one is a counterexample to the certificate."""
    if lower is None:
        return np.zeros(len(distance), dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(distance) & (distance < lower * (1 - 1e-5) - 1e-7)


def benchmark_scene(spec: str, args, peers: Peers, log=print) -> dict:
    run = load_or_train(spec, args.runs, log)
    settings, device, settings_source = run_attack_settings(run)
    if args.device:
        device = torch.device(args.device)
    if hasattr(settings, "check_with_deepfool"):  # a side check that changes no distance
        settings = dataclasses.replace(settings, check_with_deepfool=False)
    n_points = min(args.n_points or settings.n_points, len(run.data.x_test))
    settings = dataclasses.replace(settings, n_points=n_points)
    modes = [mode for mode in (args.modes or settings.modes)]
    model = run.snapshots[-1].model().to(device).eval().requires_grad_(False)
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(run.data.x_test[:n_points], dtype=dtype, device=device)
    tangent = torch.as_tensor(run.data.tangent_test[:n_points], dtype=dtype, device=device)
    with torch.no_grad():
        logits = model(x)
    label = logits.argmax(1)
    top2 = logits.topk(2, dim=1).values
    temperature = max(1.0, float((top2[:, 0] - top2[:, 1]).max()) / 5) if args.temperature == "auto" \
        else float(args.temperature)
    radius, reach = float(run.data_radius()), reach_of(settings)
    n, k = x.shape[1], tangent.shape[-1]
    meta = {"scene": run.scene.name, "run": str(run.path), "ambient_dim": n, "manifold_dim": k,
            "n_points": n_points, "n_classes": int(run.data.n_classes), "data_radius": radius, "reach": reach,
            "temperature": temperature, "device": str(device), "settings_source": settings_source,
            "settings": settings.as_record() if hasattr(settings, "as_record") else dataclasses.asdict(settings),
            "test_accuracy": run.metrics["training"]["final"].get("test_accuracy")}
    log(f"\n## {run.scene.name}: n={n}, k={k}, {n_points} points, R={radius:.3g}, reach={reach:.3g}, "
        f"step={settings.step_size:.3g}, T={temperature:.2f}, device {device}")

    ours, ours_seconds, ours_lower, ours_warnings = ours_per_mode(model, x, tangent, settings, run.scene.seed, modes)
    results = {}
    for mode in modes:
        basis, notes = search_basis(mode, x, tangent, settings)
        problem = Problem(model, x, basis, label, settings, reach, radius, temperature, device)
        lower = ours_lower[mode]
        rows = {"ours": {"median": median_inf(ours[mode]), "found": float(np.isfinite(ours[mode]).mean()),
                         "seconds": float(ours_seconds[mode]),
                         "lower_bound_median": None if lower is None else float(np.median(lower))}}
        if mode in ours_warnings:
            notes["ours_check"] = ours_warnings[mode]
        violations = []  # (point, peer, verified peer distance, our lower bound)
        distances = {}
        for name in peers.names:
            torch.manual_seed(zlib.crc32(f"{run.scene.name}/{mode}/{name}".encode()))  # BB's random init
            started = time.perf_counter()
            try:
                u, extra = peers.run(name, problem)
                seconds = time.perf_counter() - started
                box = problem.torchattacks_box if name.startswith("ta_") else problem.foolbox_box
                distance, unverified = problem.verified_distances(u, box)
                below = below_lower_bound(distance, lower)
                rows[name] = {"median": median_inf(distance), "found": float(np.isfinite(distance).mean()),
                              "seconds": seconds, "unverified": unverified,
                              "below_our_lower_bound": int(below.sum()), **extra}
                violations += [(int(i), name, float(distance[i]), float(lower[i])) for i in np.flatnonzero(below)]
                distances[name] = distance
            except Exception as error:  # noqa: BLE001 -- one failing peer must not stop the benchmark
                rows[name] = {"median": None, "found": None, "seconds": time.perf_counter() - started,
                              "error": f"{type(error).__name__}: {error}"}
                log(f"  {mode} {name}: FAILED {type(error).__name__}: {error}")
                if args.verbose:
                    traceback.print_exc()
        peer_medians = {name: rows[name]["median"] for name in distances}
        best_peer = min(peer_medians, key=lambda name: peer_medians[name], default=None)
        ratio = None
        if best_peer is not None:
            a, b = rows["ours"]["median"], peer_medians[best_peer]
            ratio = a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else (
                1.0 if a == b else (math.inf if not math.isfinite(a) else 0.0))
        if violations:
            log(f"  {mode}: {len(violations)} peer distances BELOW our certified lower bound, e.g. {violations[:3]}")
        results[mode] = {"subspace_dim": problem.m, "notes": notes, "methods": rows, "best_peer": best_peer,
                         "ours_over_best_peer": ratio, "per_point": compare(ours[mode], distances),
                         "has_lower_bounds": lower is not None,
                         "points_below_our_lower_bound": len({v[0] for v in violations}),
                         "lower_bound_violations": [{"point": i, "peer": name, "peer_distance": d, "lower_bound": b}
                                                    for i, name, d, b in violations[:20]]}
        if args.per_point:
            results[mode]["distances"] = {name: [None if not np.isfinite(v) else float(f"{v:.6g}") for v in d]
                                          for name, d in {"ours": ours[mode], **distances}.items()}
        cells = ", ".join(f"{name} {fmt_median(rows[name]['median'])}/{fmt_share(rows[name]['found'])}/"
                          f"{rows[name]['seconds']:.2f}s" for name in rows)
        log(f"  {mode} (m={problem.m}): {cells}; ours/best peer {fmt_ratio(ratio)}")
    return {"meta": meta, "modes": results}


# --------------------------------------------------------------------------- the markdown


def fmt_median(value) -> str:
    if value is None:
        return "error"
    return "inf" if not math.isfinite(value) else f"{value:.4g}"


def fmt_share(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def fmt_ratio(value) -> str:
    if value is None:
        return "–"
    return "inf" if not math.isfinite(value) else f"{value:.3f}"


PROTOCOL = __doc__.split("Protocol (written into docs/attack_peers.md with the figures):\n", 1)[1].split("\n    python ")[0]


def markdown(results: list[dict], header: dict) -> str:
    methods = ["ours", *header["peers"]]
    lines = ["# Minimal adversarial distances per subspace: ours against foolbox and torchattacks", "",
             f"Generated by `benchmarks/attack_peers.py` on {header['date']}.", "",
             f"- command: `{header['command']}`",
             f"- machine: {header['machine']}",
             f"- versions: {header['versions']}",
             f"- total wall time: {header['seconds']:.0f} s", "",
             "## Protocol", "", "```", PROTOCOL.strip("\n"), "```", "",
             "## Summary", "",
             ("Median distance per mode (data units; not found = +inf, `inf` when more than half are not "
              "found); m the subspace dimension, N the points. Best peer: the peer with the smallest median; "
              "ours / best: the ratio of the medians (< 1: ours shorter). Per point, ours against the "
              "shortest verified distance any peer found there: the median of that per-point best "
              f"(\"all peers\"), the points where it is more than {SHORTER:.0%} shorter than ours (\"peer "
              f"shorter\") and where ours is more than {SHORTER:.0%} shorter than every peer's. Below LB: "
              "points where some peer's verified distance is below our certified lower bound (a "
              "counterexample to the certificate: must be 0; – where the report has no lower bounds). "
              "Times are wall seconds for all N points."), "",
             ("| scene | mode | m | N | ours median | found | s | best peer | its median | found | s "
              "| ours / best | all peers | peer shorter | ours shorter | below LB |"),
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scene in results:
        meta = scene["meta"]
        for mode, r in scene["modes"].items():
            o, best = r["methods"]["ours"], r["best_peer"]
            b = r["methods"].get(best, {}) if best else {}
            p = r["per_point"]
            peer = (f"{best} | {fmt_median(b['median'])} | {fmt_share(b['found'])} | {b['seconds']:.2f}"
                    if b else "– | – | – | –")
            lines.append(f"| {meta['scene']} | {mode} | {r['subspace_dim']} | {meta['n_points']} | "
                         f"{fmt_median(o['median'])} | {fmt_share(o['found'])} | {o['seconds']:.2f} | {peer} | "
                         f"{fmt_ratio(r['ours_over_best_peer'])} | {fmt_median(p['best_of_peers_median']) if p else '–'} | "
                         f"{p.get('points_peer_shorter', '–')} | "
                         f"{p.get('points_ours_shorter', '–')} | "
                         f"{r['points_below_our_lower_bound'] if r.get('has_lower_bounds') else '–'} |")
    lines += ["", "## Per scene", "",
              "Each cell: median distance (not found = +inf) / share found / wall seconds."]
    for scene in results:
        meta = scene["meta"]
        acc = meta.get("test_accuracy")
        lines += ["", f"### {meta['scene']}", "",
                  (f"n = {meta['ambient_dim']}, k = {meta['manifold_dim']}, {meta['n_points']} attacked test "
                   f"points, data radius R = {meta['data_radius']:.4g}, reach = {meta['reach']:.4g}, "
                   f"step = {meta['settings']['step_size']:.4g}, logit temperature {meta['temperature']:.3g}, "
                   f"test accuracy {acc if acc is None else f'{acc:.3f}'}, device {meta['device']}, "
                   f"settings from {meta['settings_source']}."), "",
                  ("| mode | m | " + " | ".join(PEER_LABELS.get(name, name) for name in methods)
                   + " | ours / best | our certified lower bound (median) |"),
                  "|---|---:|" + "---:|" * (len(methods) + 2)]
        notes = []
        for mode, r in scene["modes"].items():
            cells = []
            for name in methods:
                row = r["methods"].get(name)
                if row is None:
                    cells.append("–")
                elif "error" in row:
                    cells.append("error")
                    notes.append(f"{mode}, {name}: {row['error']}")
                else:
                    cells.append(f"{fmt_median(row['median'])} / {fmt_share(row['found'])} / {row['seconds']:.2f}")
                    if row.get("unverified"):
                        notes.append(f"{mode}, {name}: {row['unverified']} returned perturbations did not change "
                                     f"the original model's label (counted as not found)")
                    if row.get("init_not_adversarial"):
                        notes.append(f"{mode}, {name}: foolbox's init found no adversarial start for "
                                     f"{row['init_not_adversarial']} points (not attacked, not found)")
            lower = r["methods"]["ours"].get("lower_bound_median")
            lines.append(f"| {mode} | {r['subspace_dim']} | " + " | ".join(cells) +
                         f" | {fmt_ratio(r['ours_over_best_peer'])} | {'–' if lower is None else f'{lower:.4g}'} |")
            for v in r.get("lower_bound_violations", [])[:5]:
                notes.append(f"{mode}: point {v['point']}: {v['peer']} verified {v['peer_distance']:.6g} BELOW our "
                             f"certified lower bound {v['lower_bound']:.6g}")
            p = r["per_point"]
            for w in p.get("worst_points", [])[:3]:
                ours_text = "not found" if w["ours"] is None else f"{w['ours']:.5g}"
                notes.append(f"{mode}: point {w['point']}: ours {ours_text}, {w['peer']} {w['peer_distance']:.5g}")
            if r["notes"]:
                notes.append(f"{mode}: {r['notes']}")
        if notes:
            lines += ["", "Notes (peer errors, unverified points, points where a peer beats ours most):", ""]
            lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def versions() -> str:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("foolbox", "torchattacks", "eagerpy", "numba"):
        try:
            parts.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            parts.append(f"{name} missing")
    return ", ".join(parts)


def warm_up(args, peers: Peers, log=print) -> None:
    """One small untimed round of every method (lazy imports, allocator, numba compilation)."""
    started = time.perf_counter()
    saved = args.n_points, args.modes, args.per_point
    args.n_points, args.modes, args.per_point = 2, ["free"], False
    try:
        benchmark_scene(args.scenes[0], args, peers, log=lambda *a: None)
    finally:
        args.n_points, args.modes, args.per_point = saved
    log(f"warm-up: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PROTOCOL)
    parser.add_argument("--scenes", nargs="+", default=default_scenes(),
                        help="scene names (scenes/NAME.yaml), YAML paths or `sim run` folders; default every "
                             "synthetic scene (not real_*)")
    parser.add_argument("--n-points", type=int, default=None, help="attacked test points (default: the run's)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None, help="default: the run's modes")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "attack_peers.md",
                        help="markdown; a JSON with the same stem goes beside it")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/attack_peers_runs"),
                        help="where trained runs are cached (reused while the scene is unchanged)")
    parser.add_argument("--device", default=None, help="default: the run's (train.device)")
    parser.add_argument("--temperature", default="auto", help="'auto' (max logit margin / 5) or a number")
    parser.add_argument("--fmn-steps", type=int, default=100, help="FMN steps (foolbox default 100)")
    parser.add_argument("--ddn-steps", type=int, default=100, help="DDN steps (foolbox default 100)")
    parser.add_argument("--bb-steps", type=int, default=1000, help="Brendel-Bethge steps (foolbox default 1000)")
    parser.add_argument("--eps0-steps", type=float, default=10, help="PGD search: first epsilon, in run step sizes")
    parser.add_argument("--tol-steps", type=float, default=0.1, help="PGD search: final bracket, in run step sizes")
    parser.add_argument("--per-point", action="store_true", help="store every per-point distance in the JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failing peers")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "fb_bb" in args.peers:
        try:
            import numba  # noqa: F401
        except ImportError:
            print("fb_bb skipped: foolbox's Brendel-Bethge attack needs numba (pip install numba)")
            args.peers = [p for p in args.peers if p != "fb_bb"]
    peers = Peers(args.peers, args)
    header = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f} at start",
              "versions": versions(), "peers": args.peers}
    print(f"{header['machine']}; {header['versions']}")
    started = time.perf_counter()
    if not args.no_warm_up:
        print(f"warm-up on {args.scenes[0]} (trains it first unless cached in {args.runs}) ...", flush=True)
        warm_up(args, peers)
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.scenes:
        results.append(benchmark_scene(spec, args, peers))
        header["seconds"] = time.perf_counter() - started
        args.out.write_text(markdown(results, header))  # after every scene: a crash keeps what was measured
        args.out.with_suffix(".json").write_text(json.dumps(_jsonable({"header": header, "scenes": results}), indent=1,
                                                            allow_nan=False) + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.json')} ({time.perf_counter() - started:.0f} s)")


def _jsonable(value):
    """JSON-safe copy: numpy scalars as Python numbers, +-inf as "inf"/"-inf", NaN as null."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


if __name__ == "__main__":
    main()
