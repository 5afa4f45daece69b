"""The only sequencer of stages: `sim run` and every command that redoes one stage of a run.

    from simulator.pipeline import load_experiment, run_scene
    summary = run_scene(load_experiment("scenes/sheet_two_class.yaml"), out_root="renders")

A synthetic run goes

    train --> write the run --> measure --> attack --> verdict --> experiments --> figures,
    3-D render, animation, report

Each stage (simulator/stages/, simulator/experiments/) computes and returns a record; this
module stores it (metrics.json and the arrays beside it, every file atomic) and only then
draws, so every figure and report is drawn from stored results. `rerun_measure`,
`rerun_attack`, `rerun_render` and `rerun_report` redo one stage of an existing run, through
the same functions. A real-image run (`kind: real`) has its own stages (simulator/real/),
ordered by `run_real` here; the rerun functions dispatch on the run's kind, so callers (the
CLI) never branch on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from simulator.boundary.frame import default_frame, render_frame
from simulator.config.loading import read_yaml_file, scene_from_dict
from simulator.config.real import real_experiment_from_dict
from simulator.config.resolve import resolve_attack_settings, resolve_measure_settings
from simulator.config.scene import Scene
from simulator.data import Dataset, make_dataset
from simulator.errors import RunError, SceneError
from simulator.experiments.relabel import relabel_experiment
from simulator.experiments.seed_agreement import (
    BAND_SPACINGS,
    seed_agreement_experiment,
)
from simulator.real import rerun as real_rerun
from simulator.real.experiment import read_examples, run_real_experiment, store_real_run
from simulator.render.attack_plots import plot_attack_norms
from simulator.render.cross_section import plot_cross_sections
from simulator.render.curves import plot_geometry_curves
from simulator.render.experiment_plots import plot_relabel
from simulator.render.height_map import plot_height_map
from simulator.render.outputs import render_outputs
from simulator.render.real_examples import plot_examples
from simulator.render.scene3d import read_vtp, write_vtp
from simulator.render.seed_boundaries import render_seed_boundaries
from simulator.report.real_report import real_report_html, real_report_markdown
from simulator.report.run_report import write_report
from simulator.runs.checkpoint import (
    CheckpointWriter,
    read_checkpoint,
    remove_checkpoint,
    scene_fingerprint,
)
from simulator.runs.format import run_kind
from simulator.runs.io import (
    check_run_target,
    note_stage,
    noted_stage,
    staged_run_dir,
    write_arrays,
    write_json,
    write_text,
)
from simulator.runs.loading import Run, load_run, write_run
from simulator.stages.attack import AttackRecord, attack_snapshots
from simulator.stages.measure import (
    GeometryRecord,
    class_feature_directions,
    measure_snapshots,
)
from simulator.stages.verdict import snapshot_verdicts
from simulator.training.loop import TrainingResult, resolve_device, train


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
    path = Path(path)
    raw = read_yaml_file(path, "scene", "Pass the path of a YAML scene, e.g. scenes/sheet_two_class.yaml "
                                        "(`sim scenes list` shows the shipped ones), or a real-image experiment "
                                        "file (`kind: real`).")
    if isinstance(raw, dict) and raw.get("kind") == "real":
        return real_experiment_from_dict(raw, source=str(path), default_name=path.stem, overrides=overrides)
    if isinstance(raw, dict) and raw.get("kind") == "sweep":
        raise SceneError(f"{path}: a sweep file (kind: sweep), not a scene; run it with `sim sweep {path}`.")
    return scene_from_dict(raw, source=str(path), default_name=path.stem, overrides=overrides)


# --------------------------------------------------------------------------- sim run


def run_experiment(config, out_root: str | Path = "renders", progress: bool = True, log=None,
                   resume: bool = False) -> RunSummary:
    """`sim run` on either kind of file: a synthetic `Scene` or a `RealExperiment`. With `resume`,
    a synthetic run killed earlier continues from its last snapshot or stage (a real-image
    experiment starts afresh: its stages keep no checkpoints)."""
    if getattr(config, "kind", None) == "real":
        if resume and log:
            log("--resume: real-image experiments keep no checkpoints; starting afresh")
        return run_real(config, out_root, log)
    return run_scene(config, out_root, progress, resume=resume, log=log)


def run_real(experiment, out_root: str | Path = "renders", log=None) -> RunSummary:
    """A real-image experiment end to end: its stages, then storing, then the figures and report."""
    final_path = Path(out_root) / experiment.name
    check_run_target(final_path)  # a user's file or folder in the way stops the run before any work
    results = run_real_experiment(experiment, log=log)
    with staged_run_dir(final_path) as folder:
        store_real_run(folder, experiment, results)
        draw_real(load_run(folder))
        files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    metrics = results.metrics
    final = metrics["training"]["final"]
    return RunSummary(final_path, experiment.name, metrics["device"], metrics["training"]["steps"], 1,
                      final["train_accuracy"], final["test_accuracy"], metrics["training"]["seconds"], files,
                      verdict=metrics["geometry"]["snapshots"][-1]["verdict"],
                      measure_seconds=metrics["geometry"]["seconds"] + metrics["attacks"]["seconds"],
                      attacks=metrics["attacks"]["final"])


def draw_real(run) -> list[Path]:
    """A real-image run's figures and report, from what it stored."""
    experiment, path = run.experiment, run.path
    written = [plot_attack_norms(run.stored_attack_distances(), path / "attack_norms.png", experiment.name,
                                 experiment.dpi)]
    examples = read_examples(path / "examples.npz")
    if examples is not None:
        written.append(plot_examples(examples, run.metrics, path / "examples.png", experiment.dpi))
    return written + list(write_real_report(run))


def write_real_report(run) -> tuple[Path, Path]:
    """report.md and report.html of a real-image run."""
    write_text(run.path / "report.md", real_report_markdown(run.metrics))
    write_text(run.path / "report.html", real_report_html(run.metrics, run.path))
    return run.path / "report.md", run.path / "report.html"


def run_scene(scene: Scene, out_root: str | Path = "renders", progress: bool = True, resume: bool = False,
              log=None, trained: tuple[Dataset, TrainingResult] | None = None) -> RunSummary:
    """Run a scene end to end and write `<out_root>/<scene.name>/` atomically. The run is built
    in a hidden staging folder; with `resume`, the staging folder of a killed run of this scene
    is continued: training from its last snapshot, then only the stages not yet stored.
    `trained`: the scene's data and training result, made elsewhere (a sweep's stacked seeds,
    `training.stacked.train_stacked`); the run stores them instead of training."""
    final_path = Path(out_root) / scene.name
    check_run_target(final_path)  # a user's file or folder in the way stops the run before any work
    with staged_run_dir(final_path, resume=resume) as folder:
        note = functools.partial(note_stage, folder)
        run = trained_run(folder, scene, progress, log or (lambda message: None), note, trained)
        if scene.render.first_look:
            first_look_snapshots(run)  # a bad index stops the run before the measurements
        analyse(run, progress, note)
        note("drawing")
        draw(run, progress)
        files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    metrics = run.metrics
    final = metrics["training"]["final"]
    geometry, attacks = metrics.get("geometry"), metrics.get("attacks")
    return RunSummary(final_path, scene.name, metrics["device"], final["step"], len(run.snapshots),
                      final["train_accuracy"], final["test_accuracy"], metrics["training"].get("seconds") or 0.0,
                      files, verdict=geometry["snapshots"][-1]["verdict"] if geometry else None,
                      measure_seconds=((geometry.get("seconds") or 0.0) + ((attacks or {}).get("seconds") or 0.0))
                      if geometry else None,
                      attacks=attacks["final"] if attacks else None)


def trained_run(folder: Path, scene: Scene, progress: bool, log, note=lambda stage: None,
                trained: tuple[Dataset, TrainingResult] | None = None) -> Run:
    """Data and training written into the staging `folder`, read back as a `Run`, exactly as
    `sim measure/attack/render` would read it. A folder that already holds a trained run of
    this scene (a resumed run killed after training) is read as it is; one holding a training
    checkpoint continues from it; `trained` (data, result) is stored as it is."""
    if (folder / "metrics.json").is_file():  # written last by write_run: training was complete
        run = load_run(folder)
        if scene_fingerprint(run.scene) != scene_fingerprint(scene):
            raise RunError(f"{folder}: the interrupted run was of a different scene (the scene file or a --set "
                           f"changed since); run without --resume to start afresh.")
        log(f"resuming {scene.name} (stopped while {noted_stage(folder) or 'storing'}): training was complete; "
            f"continuing with the stages not yet stored")
        remove_checkpoint(folder)  # killed between writing the run and removing it
        return run
    if trained is not None:
        write_run(folder, scene, *trained)
        remove_checkpoint(folder)
        return load_run(folder)
    checkpoint = read_checkpoint(folder, scene)
    if checkpoint is not None:
        log(f"resuming {scene.name}: training from step {checkpoint.step} of {scene.train.steps}")
    note("training")
    data = make_dataset(scene, scene.manifold.build())
    result = train(scene, data, progress=progress, resume_from=checkpoint,
                   on_checkpoint=CheckpointWriter(folder, scene))
    write_run(folder, scene, data, result)
    remove_checkpoint(folder)
    return load_run(folder)


def analyse(run: Run, progress: bool = True, note=lambda stage: None) -> None:
    """Every computing stage the scene turns on and the run has not stored yet (a resumed run may
    hold some), each result stored as soon as it exists. `note(stage)` is told each stage."""
    scene, stored = run.scene, run.metrics
    if scene.measure.enabled and "geometry" not in stored:
        measure_step(run, progress, note)
    if scene.experiments.relabel.enabled and "relabel" not in stored:
        note("relabelling")
        store_relabel(run, relabel_experiment(run, progress=progress))
    if scene.experiments.seed_agreement.enabled and "seed_agreement" not in stored:
        note("training seeds")
        store_seed_agreement(run, *seed_agreement_experiment(run, progress=progress))


def measure_step(run: Run, progress: bool = True, note=lambda stage: None) -> None:
    """The measure stage (and the attack stage when the scene enables attacks), then the verdict.
    Everything is computed before anything is stored, so a failure leaves the run as it was."""
    device = resolve_device(run.scene.train.device)
    # Host coordinates: the same distances and radius as in R^n (an isometry), at h/n of the cost.
    settings = resolve_measure_settings(run.scene.measure, run.manifold().host_immersion(run.data.u_train))
    note("measuring")
    geometry = measure_snapshots(run, settings, device, class_feature_directions(run, settings.n_points), progress)
    if run.scene.measure.attacks.enabled:
        note("attacking")
    attacks = compute_attacks(run, progress) if run.scene.measure.attacks.enabled else None
    store_geometry(run, geometry)
    if attacks is not None:
        store_attacks(run, attacks)
    store_verdicts(run, with_attacks=attacks is not None)


def attack_step(run: Run, progress: bool = True) -> None:
    """The attack stage on the run's last snapshot (every snapshot when asked), then the verdict."""
    store_attacks(run, compute_attacks(run, progress))
    store_verdicts(run, with_attacks=True)


def compute_attacks(run: Run, progress: bool = True) -> AttackRecord:
    """The attack stage's record (nothing stored yet)."""
    spec = run.scene.measure.attacks
    trained = (run.metrics["training"].get("adversarial") or {}).get("epsilon")
    settings = resolve_attack_settings(spec, run.scene.seed, spec.n_points or run.scene.measure.n_points,
                                       run.data_radius(),
                                       trained_epsilons=(trained, run.scene.train.adversarial.epsilon))
    device = resolve_device(run.scene.train.device)
    return attack_snapshots(run, settings, device, class_feature_directions(run, settings.n_points), progress)


# --------------------------------------------------------------------------- storing stage records
# Arrays are written first and metrics.json last: metrics.json names what the run holds.


def store_geometry(run: Run, record: GeometryRecord) -> None:
    """The height field's arrays now; the record goes into metrics.json with the verdict."""
    if record.final_field is not None:
        write_arrays(run.path / "height_field.npz", record.final_field.as_arrays())
    run.metrics["geometry"] = record.as_record()


def store_attacks(run: Run, record: AttackRecord) -> None:
    """The per-point arrays now; the record goes into metrics.json with the verdict."""
    write_arrays(run.path / "attack_distances.npz", record.arrays())
    run.metrics["attacks"] = record.as_record()


def store_verdicts(run: Run, with_attacks: bool) -> None:
    """The verdict of every measured snapshot, computed once from the geometry records (and, with
    `with_attacks`, the attack records of the same steps), stored beside each snapshot's geometry
    and as verdict.json (the last snapshot); then metrics.json with everything."""
    geometry = run.metrics.get("geometry")
    if geometry:
        attacks = (run.metrics.get("attacks") or {}).get("snapshots", []) if with_attacks else []
        thresholds = geometry["settings"]["thresholds"]
        for summary, rows in zip(geometry["snapshots"], snapshot_verdicts(geometry["snapshots"], thresholds, attacks, data=run.data)):
            summary["verdict"] = rows
    run.save_metrics()
    if geometry:
        write_json(run.path / "verdict.json", geometry["snapshots"][-1]["verdict"])


def store_relabel(run: Run, report: dict) -> None:
    run.metrics["relabel"] = report
    run.save_metrics()


def store_seed_agreement(run: Run, result: dict, meshes: list) -> None:
    """The seed-agreement record, and each seed's boundary mesh as seed_boundary_<i>.vtp."""
    for stale in run.path.glob("seed_boundary_*.vtp"):  # from an earlier call with more seeds
        stale.unlink()
    result["files"] = [write_vtp(mesh, run.path / f"seed_boundary_{i}.vtp").name for i, mesh in enumerate(meshes)]
    run.metrics["seed_agreement"] = result
    run.save_metrics()


# --------------------------------------------------------------------------- drawing stored results


def draw(run: Run, progress: bool = True) -> list[Path]:
    """Every figure, the 3-D outputs and the report the scene asks for, from stored results."""
    written = draw_figures(run)
    render = run.scene.render
    if render.three_d or render.animation:
        written += render_outputs(run, render.three_d, render.animation, progress)
    if render.report:
        written += list(write_report(run))
    return written


def draw_figures(run: Run) -> list[Path]:
    """The 2-D figures of whatever the run has stored (matplotlib PNGs, the seed-boundary picture)."""
    written = []
    metrics, render = run.metrics, run.scene.render
    if render.first_look:
        written.append(draw_first_look(run))
    if "geometry" in metrics:
        written.append(plot_geometry_curves(run, run.path / "geometry_curves.png"))
        if (run.path / "height_field.npz").is_file() and run.manifold().dim >= 2:
            written.append(plot_height_map(run, run.path / "height_map.png"))
    if "attacks" in metrics and (run.path / "attack_distances.npz").is_file():
        written.append(plot_attack_norms(run.stored_attack_distances(), run.path / "attack_norms.png", run.scene.name,
                                         render.dpi))
    if "relabel" in metrics:
        written.append(plot_relabel(run, metrics["relabel"], run.path / "relabel.png"))
    agreement = metrics.get("seed_agreement")
    if agreement and agreement.get("frame") and render.three_d:
        meshes = [read_vtp(run.path / name) for name in agreement["files"]]
        band = BAND_SPACINGS * agreement["chamfer"]["grid_spacing"]
        written.append(render_seed_boundaries(run, render_frame(run), meshes, agreement["seeds"], band,
                                              agreement["frame"]["mean_pairwise"], agreement["chamfer"]["mean"]))
    return written


def draw_first_look(run: Run) -> Path:
    """The cross-section through a training point at the first, a middle and the last snapshot."""
    scene, data = run.scene, run.data
    models = [(f"step {s.step}  (test acc {s.test_accuracy:.1%})", s.model()) for s in first_look_snapshots(run)]
    manifold = run.manifold()
    frame = default_frame(manifold, data.x_train, data.u_train, scene.render.cross_section_half_width)
    return plot_cross_sections(manifold, data, models, frame, run.path / "cross_section.png",
                               title=f"{scene.name}: cross-section through a training point (tangent x normal)",
                               resolution=scene.render.cross_section_resolution, dpi=scene.render.dpi)


def first_look_snapshots(run: Run) -> list:
    """The snapshots `render.cross_section_snapshots` picks (SceneError for an index outside them;
    `run_scene` asks right after training, before any measurement is spent)."""
    snapshots = run.snapshots
    indices = run.scene.render.cross_section_snapshots or [0, len(snapshots) // 2, -1]
    if any(not -len(snapshots) <= i < len(snapshots) for i in indices):
        raise SceneError(f"render.cross_section_snapshots: {indices} has an index outside the "
                         f"{len(snapshots)} snapshots of this run (use 0..{len(snapshots) - 1} or negative from the end)")
    return [snapshots[i] for i in indices]


# --------------------------------------------------------------------------- redoing one stage of a run


def reload_for_stage(path: str | Path, overrides: dict | None, allowed_prefix: str) -> Run:
    """Load a synthetic run and apply `--set` overrides under `allowed_prefix` (recorded in its
    scene.yaml); nothing that would need retraining may change."""
    run = load_run(path)
    if run.kind != "synthetic":
        raise RunError(f"{path}: a real-image run; only {allowed_prefix}* of a synthetic run can change here.")
    overrides = overrides or {}
    foreign = sorted(key for key in overrides if not key.startswith(allowed_prefix))
    if foreign:
        raise SceneError(
            f"{', '.join(foreign)}: only {allowed_prefix}* settings can change here without retraining; "
            f"run `sim run` on the scene with --set to change anything else."
        )
    if overrides:
        run.scene = scene_from_dict(run.scene.model_dump(mode="json"), source=str(run.path / "scene.yaml"),
                                    overrides=overrides)
        write_text(run.path / "scene.yaml", run.scene.to_yaml())
    return run


def rerun_measure(path: str | Path, overrides: dict | None = None, progress: bool = True, log=None):
    """`sim measure`: the measure stage again (and the attacks when the scene enables them, so
    the verdict stays complete), then the figures and the report. Returns the run."""
    return _rerun_stage(path, overrides, progress, log, measure_step, real_rerun.remeasure_real_run)


def rerun_attack(path: str | Path, overrides: dict | None = None, progress: bool = True, log=None):
    """`sim attack`: the attack stage again, the verdict, the figures and the report."""
    return _rerun_stage(path, overrides, progress, log, attack_step, real_rerun.reattack_real_run)


def _rerun_stage(path, overrides, progress, log, synthetic_stage, real_stage):
    """A `measure.*` stage again on either kind of run, then everything drawn from it."""
    if run_kind(path) == "real":
        run, _ = real_stage(path, overrides, log=log)
        draw_real(run)
        return run
    run = reload_for_stage(path, overrides, "measure.")
    synthetic_stage(run, progress)
    _redraw(run)
    return run


def rerun_seed_agreement(path: str | Path, overrides: dict | None = None, progress: bool = True) -> Run:
    """`sim seeds`: the seed-agreement experiment on an existing run (its model is not retrained)."""
    _refuse_real(path, "seed agreement trains several seeds of a synthetic scene")
    run = reload_for_stage(path, overrides, "experiments.seed_agreement.")
    store_seed_agreement(run, *seed_agreement_experiment(run, progress=progress))
    _redraw(run)
    return run


def rerun_render(path: str | Path, overrides: dict | None = None, animation: bool = False,
                 progress: bool = True) -> list[Path]:
    """`sim render`: the 3-D render and meshes (and the animation) again; a real run's figures."""
    if run_kind(path) == "real":
        return draw_real(real_rerun.rerender_real_run(path, overrides))
    run = reload_for_stage(path, overrides, "render.")
    written = render_outputs(run, three_d=True, animation=animation, progress=progress)
    _refresh_report(run)
    return written


def rerun_animation(path: str | Path, overrides: dict | None = None, progress: bool = True) -> list[Path]:
    """`sim animate`: the training animation (GIF + MP4) again."""
    _refuse_real(path, "a real-image run has one trained classifier and no training snapshots, so there is "
                       "nothing to animate; `sim render` redraws its figures")
    run = reload_for_stage(path, overrides, "render.")
    written = render_outputs(run, three_d=False, animation=True, progress=progress)
    _refresh_report(run)
    return written


def rerun_report(path: str | Path) -> tuple[Path, Path]:
    """`sim report`: report.md and report.html from what the run has stored."""
    run = load_run(path)
    return write_real_report(run) if run.kind == "real" else write_report(run)


def _redraw(run: Run) -> None:
    draw_figures(run)
    _refresh_report(run)


def _refresh_report(run: Run) -> None:
    """Keep report.html in step with files a command just rewrote."""
    if run.scene.render.report:
        write_report(run)


def _refuse_real(path: str | Path, why: str) -> None:
    if run_kind(path) == "real":
        raise RunError(f"{path}: {why}.")
