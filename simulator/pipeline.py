"""`sim run` as a library call: scene -> data -> training with snapshots -> run directory.

    from simulator import load_scene, run_scene
    summary = run_scene(load_scene("scenes/sheet_two_class.yaml"), out_root="renders")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simulator.data import make_dataset
from simulator.runs.loading import load_run, write_run
from simulator.runs.io import staged_run_dir
from simulator.config.scene import Scene
from simulator.training.loop import train


@dataclass
class RunSummary:
    path: Path
    scene_name: str
    device: str
    steps: int
    n_snapshots: int
    train_accuracy: float
    test_accuracy: float
    seconds: float
    files: list[str]
    verdict: list[dict] | None = None  # rows of the verdict table (None when measure.enabled is off)
    measure_seconds: float | None = None
    attacks: dict | None = None  # the final snapshot's attack report, when attacks ran


def load_experiment(path: str | Path, overrides: dict | None = None):
    """A synthetic `Scene`, or a real-image `RealExperiment` when the file says `kind: real`."""
    from simulator.config.scene import parse_yaml

    path = Path(path)
    try:
        raw = parse_yaml(path.read_text()) if path.is_file() else None
    except Exception:  # malformed YAML: load_scene reports it with line and column
        raw = None
    if isinstance(raw, dict) and raw.get("kind") == "real":
        from simulator.real import load_real_experiment

        return load_real_experiment(path, overrides=overrides)
    from simulator.config.scene import load_scene

    return load_scene(path, overrides=overrides)


def run_scene(scene: Scene, out_root: str | Path = "renders", progress: bool = True) -> RunSummary:
    """Run a scene end to end and write `<out_root>/<scene.name>/` atomically."""
    manifold = scene.manifold.build()
    data = make_dataset(scene, manifold)
    result = train(scene, data, progress=progress)
    final_path = Path(out_root) / scene.name
    with staged_run_dir(final_path) as folder:
        write_run(folder, scene, data, result)
        if scene.render.first_look:
            _first_look(scene, manifold, data, result, folder)
        verdict = measure_seconds = attack_report = None
        # Later stages read the staged run back, exactly as `sim measure/attack/render` would.
        staged = load_run(folder)
        if scene.measure.enabled:
            from simulator.stages.measure import measure_run

            geometry = measure_run(staged, progress=progress)
            measure_seconds = geometry["seconds"]
            if scene.measure.attacks.enabled:
                from simulator.stages.attack import attack_run

                attacks = attack_run(staged, progress=progress)
                measure_seconds += attacks["seconds"]
            verdict = staged.metrics["geometry"]["snapshots"][-1]["verdict"]
            attack_report = staged.metrics.get("attacks", {}).get("final")
        # The classic experiments (each off unless the scene turns it on).
        if scene.experiments.relabel.enabled:
            from simulator.experiments.relabel import relabel_run

            relabel_run(staged, progress=progress)
        if scene.experiments.seed_agreement.enabled:
            from simulator.experiments.seed_agreement import seed_agreement_run

            seed_agreement_run(staged, progress=progress)
        if scene.render.three_d or scene.render.animation:
            from simulator.render.outputs import render_outputs

            render_outputs(staged, scene.render.three_d, scene.render.animation, progress)
        if scene.render.report:
            from simulator.report.run_report import write_report

            write_report(staged)
        files = sorted(p.name for p in folder.iterdir())
    final = result.snapshots[-1]
    return RunSummary(final_path, scene.name, result.device, scene.train.steps, len(result.snapshots),
                      final.train_accuracy, final.test_accuracy, result.seconds, files, verdict, measure_seconds,
                      attack_report)


def _first_look(scene, manifold, data, result, folder: Path) -> None:
    from simulator.render.cross_section import default_frame, plot_cross_sections
    from simulator.training.loop import load_snapshot_model

    snapshots = result.snapshots
    indices = scene.render.cross_section_snapshots or [0, len(snapshots) // 2, -1]
    if any(not -len(snapshots) <= i < len(snapshots) for i in indices):
        from simulator.errors import SceneError

        raise SceneError(f"render.cross_section_snapshots: {indices} has an index outside the "
                         f"{len(snapshots)} snapshots of this run (use 0..{len(snapshots) - 1} or negative from the end)")
    chosen = [snapshots[i] for i in indices]
    models = [(f"step {s.step}  (test acc {s.test_accuracy:.1%})",
               load_snapshot_model(scene, data.ambient_dim, data.n_classes, s.state_dict)) for s in chosen]
    frame = default_frame(manifold, data.x_train, data.u_train, scene.render.cross_section_half_width)
    plot_cross_sections(manifold, data, models, frame, folder / "cross_section.png",
                        title=f"{scene.name}: cross-section through a training point (tangent x normal)",
                        resolution=scene.render.cross_section_resolution, dpi=scene.render.dpi)
