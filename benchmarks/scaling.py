"""How do time and memory of each pipeline stage grow with the input dimension n and the manifold dimension k?

Runs the synthetic pipeline stage by stage, in-process, on a round k-sphere (`family: sphere`,
random isometric embedding, random labels: scenes/sphere_random_labels.yaml with overrides; the
sphere works for every n >= k + 1, n = 3 included) at a fixed point count, training budget and
model ([256, 256]), for two sweeps:

    n sweep   n = 3, 20, 100, 784, 3072 at k = 2
    k sweep   k = 2, 5, 10, 20, 50, 100 at n = 200 (n = 784 takes ~4 min at k = 100 alone)

and records for every configuration, per stage,

    data      simulator.data.make_dataset (points, labels)
    training  simulator.training.loop.train (every snapshot; one torch thread on the CPU)
    storing   write_run + load_run (scene.yaml, data.npz, snapshots.pt, metrics.json, read back)
    measure   measure_snapshots on every snapshot + store_geometry (pipeline.measure_step
              without its attacks)
    attacks   pipeline.compute_attacks + store_attacks + store_verdicts
    render    pipeline.draw: the figures (cross-section, curves, height map, attack norms), the
              3-D render or slice with its meshes, and the report (animation only with --animation)

  * wall seconds; the one-time process costs (importing torch, the simulator and pyvista, and
    the first torch.func call) are timed apart, before the stages;
  * peak resident memory: VmHWM from /proc/self/status after resetting it through
    /proc/self/clear_refs before the stage ("n/a" where that file is not writable), and its
    increase over the resident memory at the stage's start; with --device cuda also
    torch.cuda.max_memory_allocated per stage (reset before each);
  * the run folder's size on disk and data.npz's size (and the simulator's own memory estimate).

Each configuration runs in its own fresh subprocess (so peaks do not leak between them) with a
time limit (--timeout). A measure, attack or render stage that raises is recorded as failed and
the next stages still run; a configuration that fails earlier or runs out of time is recorded
as such, the larger configurations of its sweep after a time-out are skipped, and the sweep goes
on. The stages run on one thread by default (--threads sets torch's threads and, through
OMP/OPENBLAS/MKL_NUM_THREADS, numpy's): on a shared 2-core machine two threads were up to 12x
slower (docs/scaling.md).

    python benchmarks/scaling.py --out docs/scaling.md --json docs/scaling.json   # ~10-15 min, 2 cores
    python benchmarks/scaling.py --quick                    # 1-2 min: checks the script, coarse numbers
    python benchmarks/scaling.py --n-values 3,100 --k-values 2,10 --k-sweep-n 784 --steps 500 \
        --points 200 --device cuda --set measure.final_height_resolution=64 --profile --timeout 900
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import math
import os
import platform
import pstats
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_SCENE = "scenes/sphere_random_labels.yaml"
DEFAULT_TITLE = "Scaling benchmark: time and memory per stage against n and k"
STAGES = ("data", "training", "storing", "measure", "attacks", "render")
MB = 2**20

DEFAULTS = {"n_values": [3, 20, 100, 784, 3072], "k_values": [2, 5, 10, 20, 50, 100], "n_sweep_k": 2,
            "k_sweep_n": 200, "steps": 1000, "points": 200, "measured_points": 20, "snapshots": 6}
QUICK = {"n_values": [3, 100, 784], "k_values": [2, 10], "n_sweep_k": 2, "k_sweep_n": 100, "steps": 200,
         "points": 100, "measured_points": 5, "snapshots": 3}
# --quick also makes the measurement, attacks and pictures coarse: it checks the script, not the numbers.
QUICK_OVERRIDES = {"measure.height_resolution": 16, "measure.final_height_resolution": 32,
                   "measure.attacks.bootstrap": 100, "render.grid_resolution": 48,
                   "render.cross_section_resolution": 64}


# =========================================================================== the worker (one configuration)


def read_status_kb(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in kB, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Times one stage and measures its peak memory: `with StageMeter(device) as meter: ...`."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.record: dict = {}

    def __enter__(self):
        import gc

        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.peak_resettable = reset_peak_rss()
        self.rss_before_kb = read_status_kb("VmRSS")
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.started
        peak_kb = read_status_kb("VmHWM") if self.peak_resettable else None
        self.record = {"seconds": seconds, "rss_before_mb": _kb_to_mb(self.rss_before_kb),
                       "peak_rss_mb": _kb_to_mb(peak_kb),
                       "peak_increase_mb": _kb_to_mb(peak_kb - self.rss_before_kb)
                       if peak_kb is not None and self.rss_before_kb is not None else None}
        if self.cuda:
            import torch

            self.record["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / MB
        return False


def _kb_to_mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


class Recorder:
    """The worker's result, rewritten atomically after every step, so a configuration killed by
    the time limit still says which stages it finished and which one it was in."""

    def __init__(self, path: Path, config: dict):
        self.path, self.profile = path, bool(config.get("profile"))
        self.result = {"config": config, "status": "running", "imports": {}, "stages": {}, "current": None}
        self.save()

    def save(self) -> None:
        temporary = self.path.with_suffix(".partial")
        temporary.write_text(json.dumps(self.result, indent=1))
        temporary.replace(self.path)

    def stage(self, name: str, device: str, action, optional: bool = False):
        """Run `action()` as stage `name`, record its time and memory, return its value. An
        `optional` stage that raises is recorded with its error (and None returned), so the
        stages after it still run; any other stage's error ends the configuration."""
        self.result["current"] = name
        self.save()
        error, profiler = None, cProfile.Profile() if self.profile else None
        with StageMeter(device) as meter:
            try:
                value = profiler.runcall(action) if profiler else action()
            except Exception as raised:
                if not optional:
                    raise
                error, value = short_error(raised), None
        self.result["stages"][name] = meter.record | ({"error": error} if error else {})
        if profiler:
            self.result["stages"][name]["profile"] = top_functions(profiler)
        self.result["current"] = None
        self.save()
        return value


def top_functions(profiler: cProfile.Profile, count: int = 12) -> list[dict]:
    """The functions the stage spent most time in (own time), for --profile."""
    stats = pstats.Stats(profiler).stats
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:count]
    return [{"function": f"{Path(file).name}:{line}({name})", "calls": calls, "own_s": own, "cumulative_s": cumulative}
            for (file, line, name), (_, calls, own, cumulative, _) in rows]


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def timed_imports(recorder: Recorder) -> None:
    """Import what the stages need, each timed: one-time process costs kept apart from the stages."""
    steps = [
        ("torch", lambda: __import__("torch")),
        ("simulator pipeline", lambda: __import__("simulator.pipeline")),
        ("pyvista", lambda: __import__("pyvista")),
        ("first torch.func call", warm_torch_func),
    ]
    for name, action in steps:
        started = time.perf_counter()
        action()
        recorder.result["imports"][name] = time.perf_counter() - started
    recorder.save()


def warm_torch_func() -> None:
    """The first torch.func call of a process imports torch._dynamo (about a second)."""
    import torch

    torch.func.vmap(torch.func.grad(lambda x: (x * x).sum()))(torch.ones(2, 3))


def scene_overrides(config: dict) -> dict:
    """The dotted overrides that turn the base scene into this configuration."""
    points, measured = config["points"], min(config["measured_points"], config["points"])
    return {
        "name": f"scaling_n{config['n']}_k{config['k']}",
        "manifold.family": "sphere", "manifold.dim": config["k"], "manifold.ambient_dim": config["n"],
        "manifold.embedding": "random",
        "data.n_train": points, "data.n_test": points,
        "train.steps": config["steps"], "train.device": config["device"],
        "snapshots.count": config["snapshots"],
        "measure.n_points": measured, "measure.attacks.n_points": measured,
        "render.animation": bool(config["animation"]),
        **config.get("overrides", {}),
    }


def memory_estimate(scene) -> dict | None:
    """The simulator's own estimate (config.resources), to compare with the measured peaks."""
    try:
        from simulator.config.resources import estimate_memory

        estimate = estimate_memory(scene)
        return {"peak_mb": estimate.peak / MB, "kept_mb": {k: v / MB for k, v in estimate.kept.items()},
                "stages_mb": {k: v / MB for k, v in estimate.stages.items()}}
    except Exception as error:  # the estimate is a side note; never let it stop the benchmark
        return {"error": f"{type(error).__name__}: {error}"}


def folder_sizes(folder: Path) -> dict:
    """Bytes on disk of the run folder (all files) and of each of its files."""
    files = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return {"folder_mb": sum(files.values()) / MB, "data_npz_mb": files.get("data.npz", 0) / MB,
            "files_mb": {name: size / MB for name, size in sorted(files.items(), key=lambda item: -item[1])}}


def run_stages(recorder: Recorder, config: dict, folder: Path) -> None:
    """Every stage of the pipeline on one configuration, each timed and measured."""
    import gc

    from simulator.config.loading import load_scene

    scene = load_scene(config["scene"], overrides=scene_overrides(config))
    recorder.result["memory_estimate"] = memory_estimate(scene)
    recorder.result["scene"] = {"labels": scene.labels.rule, "hidden": list(scene.model.hidden),
                                "snapshots": scene.snapshot_count()}
    run = trained_run(recorder, scene, config["device"], folder)
    gc.collect()  # the dataset and training result are gone: the stages hold what the pipeline holds
    analyse_and_draw(recorder, run, config["device"])
    recorder.result["sizes"] = folder_sizes(folder)
    recorder.result["pipeline_timings"] = read_pipeline_timings(folder)


def trained_run(recorder: Recorder, scene, device: str, folder: Path):
    """The data, training and storing stages; the run as the pipeline reads it back."""
    from simulator.data import make_dataset
    from simulator.runs.loading import load_run, write_run
    from simulator.training.loop import train

    data = recorder.stage("data", device, lambda: make_dataset(scene))
    result = recorder.stage("training", device, lambda: train(scene, data, progress=False))

    def store_and_reload():
        write_run(folder, scene, data, result)
        return load_run(folder)

    return recorder.stage("storing", device, store_and_reload)


def analyse_and_draw(recorder: Recorder, run, device: str) -> None:
    """The measure, attack and render stages, through the pipeline's own functions."""
    from simulator import pipeline
    from simulator.config.resolve import resolve_measure_settings
    from simulator.stages.measure import class_feature_directions, measure_snapshots
    from simulator.training.loop import resolve_device

    def measure():  # pipeline.measure_step without the attacks, which are timed apart
        settings = resolve_measure_settings(run.scene.measure, run.manifold().host_immersion(run.data.u_train))
        directions = class_feature_directions(run, settings.n_points)
        pipeline.store_geometry(run, measure_snapshots(run, settings, resolve_device(device), directions, False))

    def attack():
        pipeline.store_attacks(run, pipeline.compute_attacks(run, progress=False))
        pipeline.store_verdicts(run, with_attacks=True)

    recorder.stage("measure", device, measure, optional=True)
    recorder.stage("attacks", device, attack, optional=True)
    recorder.stage("render", device, lambda: pipeline.draw(run, progress=False), optional=True)


def read_pipeline_timings(folder: Path) -> dict:
    """The durations the pipeline itself stored (timings.json), as a cross-check."""
    try:
        return json.loads((folder / "timings.json").read_text())
    except (OSError, ValueError):
        return {}


def worker(config: dict, result_path: Path) -> None:
    """One configuration in this (fresh) process; the result goes to `result_path` as JSON."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    recorder = Recorder(result_path, config)
    try:
        timed_imports(recorder)
        import torch

        if config.get("threads"):
            torch.set_num_threads(config["threads"])
        recorder.result["torch_threads"] = torch.get_num_threads()
        recorder.result["thread_variables"] = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        with tempfile.TemporaryDirectory(prefix="scaling-") as root:
            folder = Path(root) / "run"
            folder.mkdir()
            run_stages(recorder, config, folder)
        failed = {name: stage["error"] for name, stage in recorder.result["stages"].items() if "error" in stage}
        recorder.result["status"] = "failed" if failed else "ok"
        if failed:
            recorder.result["error"] = "; ".join(f"{name}: {error}" for name, error in failed.items())
    except BaseException as error:
        recorder.result["status"] = "failed"
        recorder.result["error"] = f"{recorder.result.get('current') or 'start-up'}: {short_error(error)}"
        recorder.save()
        raise
    recorder.save()


# =========================================================================== the driver (all configurations)


def parse_values(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def build_configs(settings: dict, device: str) -> list[dict]:
    """The configurations of both sweeps, in order; each names the sweep(s) it belongs to."""
    shared = {"steps": settings["steps"], "points": settings["points"], "snapshots": settings["snapshots"],
              "measured_points": settings["measured_points"], "device": device,
              "animation": settings["animation"], "scene": settings["scene"], "overrides": settings["overrides"],
              "profile": settings["profile"], "threads": settings["threads"]}
    configs: dict[tuple[int, int], dict] = {}
    for sweep, pairs in (("n", [(n, settings["n_sweep_k"]) for n in settings["n_values"]]),
                         ("k", [(settings["k_sweep_n"], k) for k in settings["k_values"]])):
        for n, k in pairs:
            entry = configs.setdefault((n, k), {"n": n, "k": k, **shared, "sweeps": []})
            entry["sweeps"].append(sweep)
    return list(configs.values())


def run_configuration(config: dict, timeout: float, scratch: Path) -> dict:
    """One configuration in a fresh subprocess with a time limit; its result record."""
    result_path = scratch / f"n{config['n']}_k{config['k']}.json"
    command = [sys.executable, __file__, "--worker", json.dumps(config), "--result-file", str(result_path)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=worker_environment(config))
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the worker's own process group (it and any ffmpeg)
        output, _ = process.communicate()
        timed_out = True
    result = read_result(result_path, config)
    result["process_seconds"] = time.perf_counter() - started
    if timed_out:
        result["status"] = "timeout"
        result["error"] = f"timed out after {timeout:g} s in {result.get('current') or 'start-up'}"
    elif process.returncode != 0 and result.get("status") != "failed":
        result["status"] = "failed"
        result["error"] = last_line(output) or f"exit status {process.returncode}"
    result["output_tail"] = output[-2000:] if result["status"] != "ok" else ""
    return result


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(config: dict) -> dict:
    """The worker's environment: with --threads N, numpy's BLAS/LAPACK (OpenBLAS) limited to N
    threads as well as torch (they read these variables once, when loaded)."""
    environment = dict(os.environ)
    if config.get("threads"):
        environment.update({name: str(config["threads"]) for name in THREAD_VARIABLES})
    return environment


def read_result(path: Path, config: dict) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"config": config, "status": "failed", "stages": {}, "imports": {}, "current": None}


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def swept_value(config: dict, sweep: str) -> int:
    return config["n"] if sweep == "n" else config["k"]


def run_all(configs: list[dict], timeout: float, log) -> list[dict]:
    """Every configuration in turn; after a time-out, the larger ones of the same sweep are skipped."""
    results, timed_out_at = [], {}
    with tempfile.TemporaryDirectory(prefix="scaling-results-") as scratch:
        for config in configs:
            label = f"n={config['n']} k={config['k']}"
            blocker = skipping_reason(config, timed_out_at)
            if blocker:
                log(f"{label}: skipped ({blocker})")
                results.append({"config": config, "status": "skipped", "error": blocker, "stages": {}})
                continue
            log(f"{label}: running ...")
            result = run_configuration(config, timeout, Path(scratch))
            log(f"{label}: {result['status']} in {result['process_seconds']:.1f} s"
                + (f" ({result.get('error')})" if result["status"] != "ok" else ""))
            if result["status"] == "timeout":
                for sweep in config["sweeps"]:
                    timed_out_at.setdefault(sweep, (swept_value(config, sweep), label))
            results.append(result)
    return results


def skipping_reason(config: dict, timed_out_at: dict) -> str | None:
    for sweep in config["sweeps"]:
        if sweep in timed_out_at and swept_value(config, sweep) > timed_out_at[sweep][0]:
            return f"{timed_out_at[sweep][1]} already timed out"
    return None


# =========================================================================== reporting


def machine_description(device: str) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    described = {"cpu": cpu_model(), "cores": cores, "torch": torch.__version__, "device": device,
                 "python": platform.python_version(), "memory_gb": total_memory_gb()}
    if device == "cuda" and torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(0)
    return described


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def finished_stage(result: dict, stage: str) -> dict | None:
    """The record of a stage that ran to its end, or None."""
    record = (result.get("stages") or {}).get(stage)
    return record if record and "error" not in record else None


def stage_total(result: dict) -> float | None:
    records = [finished_stage(result, s) for s in STAGES]
    return sum(r["seconds"] for r in records) if all(records) else None


def seconds_cell(result: dict, stage: str) -> str:
    record = (result.get("stages") or {}).get(stage)
    if record is None:
        return "-"
    return "failed" if "error" in record else fmt_seconds(record["seconds"])


def status_text(result: dict) -> str:
    """The full status with its error, for the notes under a table."""
    if result["status"] == "ok":
        return "ok"
    return f"{result['status']}: {result.get('error') or '?'}".replace("|", "/")[:400]


def short_status(result: dict) -> str:
    """The table cell: ok, skipped, timeout in <stage>, or failed (<stages>)."""
    status = result["status"]
    if status == "failed":
        failed = [name for name, stage in (result.get("stages") or {}).items() if "error" in stage]
        where = failed or [result.get("current") or "start-up"]
        return f"failed ({', '.join(where)})"
    if status == "timeout":
        return f"timeout ({result.get('current') or 'start-up'})"
    return status


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_factor(value: float) -> str:
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x" if value < 10_000 else f"{value:.0e}x"


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def peak_cell(stage: dict | None, cuda: bool) -> str:
    """'peak (+increase)' in MB, and the CUDA peak after a slash with --device cuda."""
    if stage is None:
        return "-"
    if stage.get("peak_rss_mb") is None:
        text = "n/a"
    else:
        text = f"{fmt_mb(stage['peak_rss_mb'])} (+{fmt_mb(stage['peak_increase_mb'])})"
    if cuda:
        text += f" / {fmt_mb(stage.get('cuda_peak_mb'))}"
    return text


def sweep_table(results: list[dict], sweep: str, cuda: bool) -> str:
    """One Markdown table: a row per configuration of the sweep."""
    rows = [r for r in results if sweep in r["config"]["sweeps"]]
    rows.sort(key=lambda r: swept_value(r["config"], sweep))
    head = (["n", "k", "status"] + [f"{s} s" for s in STAGES] + ["total s"]
            + [f"{s} peak MB" for s in STAGES] + ["folder MB", "data.npz MB", "est. peak MB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for result in rows:
        stages, sizes = result.get("stages", {}), result.get("sizes") or {}
        estimate = (result.get("memory_estimate") or {}).get("peak_mb")
        cells = [str(result["config"]["n"]), str(result["config"]["k"]), short_status(result)]
        cells += [seconds_cell(result, s) for s in STAGES]
        cells += [fmt_seconds(stage_total(result))]
        cells += [peak_cell(stages.get(s), cuda) for s in STAGES]
        cells += [fmt_mb(sizes.get("folder_mb")) if sizes else "-",
                  fmt_mb(sizes.get("data_npz_mb")) if sizes else "-", fmt_mb(estimate) if estimate else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {sweep}={swept_value(r['config'], sweep)}: {status_text(r)}" for r in rows if r["status"] != "ok"]
    return "\n".join(lines + ([""] + notes if notes else []))


def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (y ~ x^slope); None with fewer than 2 points."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return None
    mean_x = sum(p[0] for p in pairs) / len(pairs)
    mean_y = sum(p[1] for p in pairs) / len(pairs)
    spread = sum((p[0] - mean_x) ** 2 for p in pairs)
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in pairs) / spread if spread else None


def stage_growth(rows: list[dict], sweep: str, stage: str, key: str = "seconds"):
    """(overall exponent over the sweep, local exponent between its two largest values) of a
    stage's `key` (seconds or peak_increase_mb), over the configurations that finished it."""
    finished = [r for r in rows if finished_stage(r, stage) and finished_stage(r, stage).get(key)]
    xs = [swept_value(r["config"], sweep) for r in finished]
    ys = [r["stages"][stage][key] for r in finished]
    return growth_exponent(xs, ys), growth_exponent(xs[-2:], ys[-2:])


def where_the_time_goes(results: list[dict], sweep: str) -> str:
    """A paragraph computed from the numbers of one sweep (its finished stages)."""
    rows = sorted((r for r in results if sweep in r["config"]["sweeps"] and r.get("stages")),
                  key=lambda r: swept_value(r["config"], sweep))
    if not any(finished_stage(r, "training") for r in rows):
        return "No configuration of this sweep got through training."
    sentences = [dominance_sentence(rows), ratio_sentence(rows, sweep), growth_sentence(rows, sweep)]
    return " ".join(s for s in sentences if s)


def dominance_sentence(rows: list[dict]) -> str:
    """The largest stage of each configuration and its share of the finished stages' time."""
    parts = []
    for result in rows:
        finished = {s: finished_stage(result, s)["seconds"] for s in STAGES if finished_stage(result, s)}
        total = sum(finished.values())
        largest = max(finished, key=finished.get)
        note = "" if len(finished) == len(STAGES) else " of the finished stages"
        parts.append(f"n={result['config']['n']}, k={result['config']['k']}: {largest} "
                     f"{100 * finished[largest] / total:.0f}% of {fmt_seconds(total)} s{note}")
    return "Largest stage: " + "; ".join(parts) + "."


def ratio_sentence(rows: list[dict], sweep: str) -> str:
    """Measurement and attack time as multiples of training time."""
    parts = []
    for result in rows:
        training = finished_stage(result, "training")
        if not training or training["seconds"] <= 0:
            continue
        ratios = [f"{finished_stage(result, s)['seconds'] / training['seconds']:.1f}x" if finished_stage(result, s)
                  else "failed" for s in ("measure", "attacks")]
        parts.append(f"{swept_value(result['config'], sweep)}: {ratios[0]} / {ratios[1]}")
    return f"Measure / attacks time as a multiple of training time, by {sweep}: " + ", ".join(parts) + "."


NEGLIGIBLE_SECONDS = 0.1  # stages never slower than this are left out of the growth sentence
NEGLIGIBLE_MB = 20  # nor peak increases never above this


def growth_sentence(rows: list[dict], sweep: str) -> str:
    """Growth per 10x of the swept value, of each stage's time, and faster-than-linear stages."""
    parts, faster = [], []
    for stage in STAGES:
        largest = max((finished_stage(r, stage)["seconds"] for r in rows if finished_stage(r, stage)), default=0)
        overall, local = stage_growth(rows, sweep, stage)
        if overall is None or largest < NEGLIGIBLE_SECONDS:
            continue
        parts.append(f"{stage} {fmt_factor(10 ** overall)}" + (f" ({fmt_factor(10 ** local)} at the top)"
                                                                if local is not None else ""))
        if local is not None and local > 1.1:
            faster.append(f"{stage} (exponent {local:.2f})")
    if not parts:
        return ""
    text = (f"Time per 10x {sweep} (log-log fit over the sweep; in brackets between its two largest values, "
            f"where fixed costs matter least): " + ", ".join(parts) + ".")
    if faster:
        text += f" Faster than linear in {sweep} at the top of the sweep: " + ", ".join(faster) + "."
    return text + memory_sentence(rows, sweep)


def memory_sentence(rows: list[dict], sweep: str) -> str:
    """The stage with the largest peak-memory increase, and how each stage's increase grows."""
    increases = [(finished_stage(r, s)["peak_increase_mb"], s, r) for r in rows for s in STAGES
                 if finished_stage(r, s) and finished_stage(r, s).get("peak_increase_mb") is not None]
    if not increases:
        return ""
    top, stage, result = max(increases, key=lambda item: item[0])
    text = (f" The largest peak-memory increase is {stage}'s, +{fmt_mb(top)} MB at {sweep}="
            f"{swept_value(result['config'], sweep)}")
    parts = []
    for name in STAGES:
        overall, local = stage_growth(rows, sweep, name, "peak_increase_mb")
        largest = max((i for i, s, _ in increases if s == name), default=0)
        if local is not None and largest >= NEGLIGIBLE_MB:
            parts.append(f"{name} {fmt_factor(10 ** local)}")
    if parts:
        text += f"; peak increase per 10x {sweep} between the two largest values: " + ", ".join(parts)
    return text + "."


def imports_line(results: list[dict]) -> str:
    """Median one-time process costs over the configurations, reported apart from the stages."""
    names = {}
    for result in results:
        for name, seconds in (result.get("imports") or {}).items():
            names.setdefault(name, []).append(seconds)
    if not names:
        return "-"
    return ", ".join(f"{name} {sorted(v)[len(v) // 2]:.2f} s" for name, v in names.items())


def blas_note(results: list[dict]) -> str:
    variables = next((r["thread_variables"] for r in results if r.get("thread_variables")), {})
    limit = variables.get("OPENBLAS_NUM_THREADS")
    return f", numpy's OpenBLAS on {limit}" if limit else ", numpy's OpenBLAS on its default"


def markdown_report(report: dict, title: str) -> str:
    machine, settings, results = report["machine"], report["settings"], report["results"]
    cuda = machine["device"] == "cuda"
    scene = next((r["scene"] for r in results if r.get("scene")), {})
    lines = [
        f"# {title}", "",
        "Time and peak memory of each stage of the synthetic pipeline as the input dimension n and the "
        "manifold dimension k grow (issue #14, item 4). Written by `benchmarks/scaling.py`; "
        + (f"the raw numbers are in `{report['json_path']}`." if report.get("json_path")
           else "run it with --json to keep the raw numbers."), "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {fmt_mb(machine.get('memory_gb'))} GB memory"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""),
        f"- torch {machine['torch']}, Python {machine['python']}, device {machine['device']} "
        f"(training on 1 torch thread on the CPU, the other stages on {report.get('torch_threads', '?')} torch "
        f"thread(s){blas_note(results)})",
        f"- date: {report['date']}; load average before / after: {report['load_before']} / {report['load_after']}",
        f"- command: `{report['command']}` ({report['wall_seconds']:.0f} s in all)",
        f"- scene: `{settings['scene']}` with `manifold.family: sphere`, `embedding: random`, "
        f"{scene.get('labels', '?')} labels, model {scene.get('hidden', '?')}; {settings['points']} training and {settings['points']} test points, "
        f"{settings['steps']} training steps, {settings['snapshots']} snapshots, {settings['measured_points']} "
        f"points measured and attacked, animation {'on' if settings['animation'] else 'off'}"
        + (f", overrides {settings['overrides']}" if settings.get("overrides") else ""),
        f"- one-time process costs (median, not in the stages): {imports_line(results)}", "",
        "Columns: wall seconds per stage; peak resident memory of the process during the stage in MB, with its "
        "increase over the resident memory at the stage's start in brackets"
        + (" and torch.cuda.max_memory_allocated after the slash" if cuda else "")
        + "; the run folder and data.npz on disk; the simulator's own memory estimate (config.resources). "
        "Each configuration ran in its own process. storing = write_run + load_run; render = figures, "
        "3-D render or slice with meshes, report.", "",
    ]
    for sweep, caption in (("n", f"n sweep (k = {settings['n_sweep_k']})"),
                           ("k", f"k sweep (n = {settings['k_sweep_n']})")):
        if not any(sweep in r["config"]["sweeps"] for r in results):
            continue
        lines += [f"## {caption}", "", sweep_table(results, sweep, cuda), "",
                  "**Where the time goes.** " + where_the_time_goes(results, sweep), ""]
    return "\n".join(lines) + "\n"


# =========================================================================== command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A 1-2 minute version (fewer and smaller configurations).")
    parser.add_argument("--n-values", type=parse_values, help="n of the n sweep, comma-separated (default 3,20,100,784,3072).")
    parser.add_argument("--k-values", type=parse_values, help="k of the k sweep, comma-separated (default 2,5,10,20,50,100).")
    parser.add_argument("--n-sweep-k", type=int, help="k held fixed in the n sweep (default 2).")
    parser.add_argument("--k-sweep-n", type=int, help="n held fixed in the k sweep (default 200).")
    parser.add_argument("--steps", type=int, help="Training steps (default 1000).")
    parser.add_argument("--points", type=int, help="Training points, and as many test points (default 200).")
    parser.add_argument("--measured-points", type=int, help="Test points measured and attacked (default 20).")
    parser.add_argument("--snapshots", type=int, help="Snapshots taken (log schedule; default 6).")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--animation", action="store_true", help="Include the training animation in render.")
    parser.add_argument("--scene", default=BASE_SCENE, help="Base scene (its manifold is overridden to a sphere).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra scene override for every configuration (YAML value), e.g. "
                             "--set measure.final_height_resolution=64. Repeatable.")
    parser.add_argument("--threads", type=int, default=1,
                        help="Threads of torch and of numpy's BLAS for the stages (training always uses 1 torch thread "
                             "on the CPU); default 1, which is reproducible on a shared machine (see "
                             "docs/scaling.md); 0: the libraries' own defaults.")
    parser.add_argument("--profile", action="store_true",
                        help="Also record each stage's top functions (cProfile, own time) in the JSON file.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds allowed per configuration (default 600).")
    parser.add_argument("--out", type=Path, help="Markdown file to write (e.g. docs/scaling.md); default: print it.")
    parser.add_argument("--json", type=Path, help="JSON file for the raw numbers (e.g. docs/scaling.json).")
    parser.add_argument("--title", help="Title of the Markdown file (default: a plain one, or with --report-only "
                                        "the title of the run).")
    parser.add_argument("--report-only", type=Path, metavar="JSON",
                        help="Run nothing: write the Markdown (--out) from the raw numbers of an earlier run.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolved_settings(args: argparse.Namespace) -> dict:
    settings = dict(QUICK if args.quick else DEFAULTS)
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    settings["animation"], settings["scene"], settings["profile"] = args.animation, args.scene, args.profile
    settings["overrides"] = {**(QUICK_OVERRIDES if args.quick else {}),
                             **dict(parse_override(pair) for pair in args.overrides)}
    settings["threads"] = args.threads
    return settings


def parse_override(pair: str) -> tuple[str, object]:
    import yaml

    key, separator, value = pair.partition("=")
    if not separator or not key.strip():
        raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. measure.final_height_resolution=64")
    return key.strip(), yaml.safe_load(value)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker), args.result_file)
        return
    if args.report_only:
        write_markdown(json.loads(args.report_only.read_text()), args.title, args.out)
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device here")
    settings = resolved_settings(args)
    configs = build_configs(settings, args.device)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    results = run_all(configs, args.timeout, lambda message: print(message, file=sys.stderr, flush=True))
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine_description(args.device), "settings": settings,
        "load_before": load_before, "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "wall_seconds": time.perf_counter() - started,
        "torch_threads": next((r["torch_threads"] for r in results if "torch_threads" in r), None),
        "json_path": str(args.json) if args.json else None, "title": args.title or DEFAULT_TITLE,
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    write_markdown(report, args.title, args.out)


def write_markdown(report: dict, title: str, out: Path | None) -> None:
    text = markdown_report(report, title or report.get("title") or DEFAULT_TITLE)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)


if __name__ == "__main__":
    main()
