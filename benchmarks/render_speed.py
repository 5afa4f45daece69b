"""Rendering the default animation of a scene vs training it (issue 5's goal: render faster than train).

Trains the scene (default sheet_two_class: 2000 steps, 24 snapshots), writes the run into a
temporary folder, then times, each as the median over --repeats, in wall-clock seconds and in
CPU seconds (all threads of this process, plus ffmpeg's for the MP4 and the total):

    training            train() alone (its own timer), for each torch thread count asked
    grid                the margins on render.grid_resolution^3 (96^3) for every snapshot
                        (coarse to fine), and the flying-edges contour
    scene setup         the plotter, manifold mesh and data points (once per animation)
    render              one off-screen frame per snapshot (boundary swapped in place)
    encode              animation.gif and animation.mp4
    animation total     animate_run() end to end (the grid of the next snapshot is computed
                        while the current one is drawn, ffmpeg encodes meanwhile), what
                        `sim animate` costs after its imports

and compares the animation total with the fastest training time. Importing pyvista/VTK (once
per process) is reported apart, as training's figure excludes importing torch.

    python benchmarks/render_speed.py [scenes/sheet_two_class.yaml] [--repeats 3]
        [--train-threads 1,2] [--dense] [--set render.window_size=[400,300]] [--json out.json]

The goal is judged against the fastest training time measured (one thread for the shipped
scenes: on a shared 2-core machine two threads can be 100x slower, see docs/render_benchmark.md).

--dense also times the dense grid (every node evaluated) for comparison. The machine's load
average is printed before and after: on a shared machine every figure moves with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _children_cpu() -> float:
    """CPU seconds of finished child processes (ffmpeg)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Clock:
    """Wall and CPU seconds of a block: `with clock: ...` then clock.wall, clock.cpu."""

    def __init__(self, children: bool = False):
        self.children = children
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._children = _children_cpu() if self.children else 0.0
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu + ((_children_cpu() - self._children) if self.children else 0.0)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", nargs="?", default="scenes/sheet_two_class.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-threads", default="1",
                        help="Comma-separated torch thread counts to train with (default 1, the fastest "
                             "for this scene's small batches; add 2 to see the default setting).")
    parser.add_argument("--dense", action="store_true", help="Also time the dense grid (all nodes).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Scene override, e.g. --set render.window_size=[400,300]. Repeatable.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    load_before = os.getloadavg()
    started = time.perf_counter()
    import pyvista  # noqa: F401  (timed: a one-off per process)

    import_seconds = time.perf_counter() - started

    from simulator.data import make_dataset
    from simulator.render.animation import animate_run, write_gif, write_mp4
    from simulator.boundary.mesh import contour_boundary, margin_grid
    from simulator.boundary.frame import render_frame
    from simulator.render.headless import ensure_offscreen
    from simulator.render.scene3d import BoundaryScene, run_device
    from simulator.runs.loading import load_run, write_run
    from simulator.config.loading import load_scene, parse_yaml
    from simulator.training.loop import train

    window = ensure_offscreen()
    overrides = {"train.device": "cpu", "measure.enabled": False, "render.first_look": False}
    for pair in args.overrides:
        key, _, value = pair.partition("=")
        overrides[key.strip()] = parse_yaml(value)
    scene = load_scene(args.scene, overrides=overrides)
    spec = scene.render
    data = make_dataset(scene)
    default_threads = torch.get_num_threads()

    training: dict[int, list[float]] = {}
    training_cpu: dict[int, list[float]] = {}
    result = None
    for threads in [int(t) for t in args.train_threads.split(",")]:
        torch.set_num_threads(threads)
        train(scene, data, progress=False)  # warm-up
        training[threads], training_cpu[threads] = [], []
        for _ in range(args.repeats):
            with _Clock() as clock:
                result = train(scene, data, progress=False)
            training[threads].append(result.seconds)
            training_cpu[threads].append(clock.cpu)
    torch.set_num_threads(default_threads)

    figures: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        write_run(Path(folder), scene, data, result)
        run = load_run(folder)
        frame = render_frame(run)
        device = run_device(run)
        models = [record.model() for record in run.snapshots]
        stages = ("grid", "contour", "setup", "render", "gif", "mp4", "total")
        wall = {stage: [] for stage in stages}
        cpu = {stage: [] for stage in stages}
        dense_s = []
        evaluated = 0
        for repeat in range(args.repeats):
            meshes = []
            grid_clock, contour_clock = _Clock(), _Clock()
            t_grid = t_contour = c_grid = c_contour = 0.0
            evaluated = 0
            for model in models:
                with grid_clock:
                    grid = margin_grid(model, frame, spec.grid_resolution, run.data.n_classes, device=device)
                with contour_clock:
                    meshes.append(contour_boundary(grid, model, device))
                t_grid, c_grid = t_grid + grid_clock.wall, c_grid + grid_clock.cpu
                t_contour, c_contour = t_contour + contour_clock.wall, c_contour + contour_clock.cpu
                evaluated += grid.evaluated
            wall["grid"].append(t_grid)
            cpu["grid"].append(c_grid)
            wall["contour"].append(t_contour)
            cpu["contour"].append(c_contour)

            with _Clock() as clock:
                scene3d = BoundaryScene(run, frame)
            wall["setup"].append(clock.wall)
            cpu["setup"].append(clock.cpu)
            images = []
            with _Clock() as clock:
                for index, mesh in enumerate(meshes):
                    scene3d.show_snapshot(index, mesh)
                    images.append(scene3d.screenshot())
            wall["render"].append(clock.wall)
            cpu["render"].append(clock.cpu)
            scene3d.close()

            with _Clock() as clock:
                write_gif(images, Path(folder) / "bench.gif", spec.fps)
            wall["gif"].append(clock.wall)
            cpu["gif"].append(clock.cpu)
            with _Clock(children=True) as clock:
                write_mp4(images, Path(folder) / "bench.mp4", spec.fps)
            wall["mp4"].append(clock.wall)
            cpu["mp4"].append(clock.cpu)

            with _Clock(children=True) as clock:
                animate_run(run, progress=False)
            wall["total"].append(clock.wall)
            cpu["total"].append(clock.cpu)

            if args.dense and repeat == 0:
                t0 = time.perf_counter()
                for model in models:
                    margin_grid(model, frame, spec.grid_resolution, run.data.n_classes, device=device,
                                coarse_to_fine=False)
                dense_s.append(time.perf_counter() - t0)

    best_threads = min(training, key=lambda t: _median(training[t]))
    train_best = _median(training[best_threads])
    total = _median(wall["total"])
    nodes = spec.grid_resolution**3 * len(models)
    figures = {
        "scene": scene.name, "steps": scene.train.steps, "snapshots": len(models),
        "grid_resolution": spec.grid_resolution, "window_size": list(spec.window_size),
        "machine": {"cpu": _cpu_model(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__, "torch_default_threads": default_threads,
                    "vtk_window": window or "VTK default", "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "training_seconds_by_threads": {t: _median(v) for t, v in training.items()},
        "training_min_seconds_by_threads": {t: min(v) for t, v in training.items()},
        "training_cpu_seconds_by_threads": {t: _median(v) for t, v in training_cpu.items()},
        "import_pyvista_seconds": import_seconds,
        "grid_seconds": _median(wall["grid"]), "contour_seconds": _median(wall["contour"]),
        "evaluated_nodes": evaluated, "dense_nodes": nodes,
        "scene_setup_seconds": _median(wall["setup"]), "render_seconds": _median(wall["render"]),
        "gif_seconds": _median(wall["gif"]), "mp4_seconds": _median(wall["mp4"]),
        "animation_total_seconds": total,
        "animation_total_min_seconds": min(wall["total"]),
        "cpu_seconds": {stage: _median(values) for stage, values in cpu.items()},
        "runs_seconds": {stage: values for stage, values in wall.items()},
        "runs_cpu_seconds": {stage: values for stage, values in cpu.items()},
        "dense_grid_seconds": dense_s[0] if dense_s else None,
        "goal_met": total < train_best,
    }

    m = figures["machine"]
    c = figures["cpu_seconds"]
    print(f"machine: {m['cpu']}, {m['cpus_usable']} usable CPUs, torch {m['torch']} "
          f"({m['torch_default_threads']} threads by default), render window {m['vtk_window']}")
    print(f"load average before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in m['load_average_after'])}")
    print(f"scene {scene.name}: {scene.train.steps} steps, {len(models)} snapshots, grid "
          f"{spec.grid_resolution}^3, window {spec.window_size[0]}x{spec.window_size[1]}; medians of {args.repeats}")
    print(f"  {'':34s} {'wall':>8s}   {'CPU':>7s}")
    for threads, seconds in figures["training_seconds_by_threads"].items():
        print(f"  training, {threads} torch thread(s)      {seconds:8.3f} s {_median(training_cpu[threads]):7.3f} s"
              f"   (min {min(training[threads]):.3f} s)")
    print(f"  import pyvista/vtk (once)         {import_seconds:8.3f} s            (not in the totals)")
    print(f"  grid evaluation, all snapshots    {figures['grid_seconds']:8.3f} s {c['grid']:7.3f} s   "
          f"({evaluated:,} of {nodes:,} nodes evaluated, {evaluated / nodes:.1%})")
    print(f"  contouring (flying edges)         {figures['contour_seconds']:8.3f} s {c['contour']:7.3f} s")
    print(f"  scene setup                       {figures['scene_setup_seconds']:8.3f} s {c['setup']:7.3f} s")
    print(f"  rendering {len(models)} frames               {figures['render_seconds']:8.3f} s {c['render']:7.3f} s")
    print(f"  GIF encoding                      {figures['gif_seconds']:8.3f} s {c['gif']:7.3f} s")
    print(f"  MP4 encoding (ffmpeg's CPU too)   {figures['mp4_seconds']:8.3f} s {c['mp4']:7.3f} s")
    print(f"  animation total (animate_run)     {total:8.3f} s {c['total']:7.3f} s   (min {min(wall['total']):.3f} s; "
          f"the grid of the next snapshot is computed while one is drawn, ffmpeg encodes meanwhile)")
    if dense_s:
        print(f"  dense grid, all snapshots         {dense_s[0]:8.3f} s            (for comparison, not used)")
    verdict = ("met" if figures["goal_met"]
               else f"MISSED: the animation takes {total / train_best:.1f}x the training time")
    print(f"goal (animation faster than training, {train_best:.3f} s with {best_threads} thread(s)): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
