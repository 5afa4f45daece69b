"""The `sim` command. Thin on purpose: parse arguments, call `simulator`, print.

Every user-fixable problem (bad scene, missing run, diverging training) is printed as one
paragraph and exits with code 2; no traceback, no half-written output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simulator.config.loading import parse_yaml
from simulator.errors import SceneError, SimulatorError

console = Console()
errors = Console(stderr=True)

SHIPPED_SCENES = Path(__file__).resolve().parent / "scenes"


def _user_errors(command):
    """Turn SimulatorError into a one-paragraph message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SimulatorError as error:
            # escape: a message may hold brackets (`pip install -e '.[pretrained]'`), which are not markup
            errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper


def _parse_overrides(pairs: tuple[str, ...]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. --set train.steps=200)", param_hint="--set")
        overrides[key.strip()] = _yaml_value(value, "--set", f"e.g. --set {key.strip()}=[64,64]")
    return overrides


def _yaml_value(text: str, option: str, example: str):
    """A command-line value read as YAML (numbers, lists, booleans); bad YAML is a usage error."""
    import yaml

    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise click.BadParameter(f"{text!r} is not a valid YAML value ({problem}); {example}",
                                 param_hint=option) from None


def _memory_size(ctx, param, value: str | None) -> int | None:
    """--max-memory SIZE in bytes (None: check against the available memory)."""
    from simulator.config.resources import parse_memory_size

    try:
        return None if value is None else parse_memory_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--max-memory") from None


def _set_option(prefix: str, example: str):
    """The --set KEY=VALUE option of commands that change `prefix`* settings of an existing run."""
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help=f"Change a {prefix}* setting first, e.g. {example} Repeatable.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dimpled-manifold-simulator")
def main():
    """Dimpled-manifold simulator: train MLPs on data with a known manifold and measure how
    their decision boundaries sit relative to it.

    Start with `sim run scenes/sheet_two_class.yaml`, then look in renders/sheet_two_class/.
    """


@main.command(short_help="Train a scene with snapshots, measure, attack, write the run.")
@click.argument("scene_file", type=click.Path(path_type=Path))
@click.option("--out", "out_root", type=click.Path(path_type=Path), default=Path("renders"), show_default=True,
              help="Root folder; the run goes to OUT/<scene-name>/ (replacing an older run there).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scene field, e.g. --set train.steps=200 --set train.device=cpu. Repeatable.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--compare-baseline", is_flag=True,
              help="With train.adversarial on: also train the scene normally (OUT/<name>_baseline/) and "
                   "write a side-by-side report (OUT/<name>_vs_baseline/).")
@click.option("--resume", is_flag=True,
              help="Continue this scene's run that was killed or crashed: training from its last complete "
                   "snapshot, then only the stages not yet stored (the numbers end the same as an "
                   "uninterrupted run's). Without an interrupted run, start afresh.")
@click.option("--max-memory", "max_memory", metavar="SIZE", default=None, callback=_memory_size,
              help="Refuse to start when the run's estimated peak memory exceeds SIZE, e.g. 8G or 500M "
                   "(default: the memory available when the run starts).")
@_user_errors
def run(scene_file: Path, out_root: Path, overrides: tuple[str, ...], quiet: bool, compare_baseline: bool,
        resume: bool, max_memory: int | None):
    """Generate the scene's data, train its MLP while snapshotting the decision boundary, measure
    the geometry of every snapshot, attack the last one, and write the run directory
    OUT/<scene-name>/ (see the README for its files). A real-image experiment file (`kind: real`)
    runs the paper's autoencoder-manifold experiment instead."""
    from simulator.config.resources import check_memory
    from simulator.experiments.adversarial_comparison import baseline_scene
    from simulator.pipeline import load_experiment, run_experiment

    config = load_experiment(scene_file, overrides=_parse_overrides(overrides))
    check_memory(config, max_memory, source=str(scene_file))  # before any data exist or training starts
    baseline = baseline_scene(config) if compare_baseline else None  # checked before any training starts
    if baseline is not None:
        check_memory(baseline, max_memory, source=f"{scene_file} (the baseline twin)")
    summary = run_experiment(config, out_root=out_root, progress=not quiet, log=_log(quiet), resume=resume)
    _print_run_summary(summary)
    if baseline is not None:
        _run_baseline(baseline, summary, out_root, quiet)
    console.print(f"run directory: {summary.path}", soft_wrap=True, highlight=False)


def _run_baseline(baseline, summary, out_root: Path, quiet: bool) -> None:
    """`sim run --compare-baseline`: the plain-training twin and the side-by-side report."""
    from simulator.formatting import fmt
    from simulator.pipeline import run_scene
    from simulator.report.adversarial_training import write_adversarial_comparison

    console.print(f"training the baseline (plain training): {baseline.name}")
    plain = run_scene(baseline, out_root=out_root, progress=not quiet)
    out_dir = Path(out_root) / f"{summary.scene_name}_vs_baseline"
    comparison = write_adversarial_comparison(summary.path, plain.path, out_dir)
    table = Table(title=f"adversarial vs plain training ({comparison['settings']['mode']}, "
                        f"eps {comparison['settings']['epsilon']:.3g})", title_justify="left")
    for column in ("measurement", "plain", "adversarial"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for row in comparison["rows"]:
        table.add_row(row["measurement"], fmt(row["plain"]), fmt(row["adversarial"]))
    console.print(table)
    console.print(f"comparison: {out_dir / 'adversarial_training.md'}", soft_wrap=True, highlight=False)


def _print_run_summary(summary) -> None:
    from simulator.formatting import percent
    from simulator.report.attack_tables import attack_table, specificity_text
    from simulator.report.seed_agreement_tables import agreement_table
    from simulator.report.verdict_tables import verdict_table
    from simulator.runs.format import read_metrics

    table = Table(title=f"sim run {summary.scene_name}", show_header=False, title_justify="left")
    table.add_row("device", summary.device)
    table.add_row("steps", f"{summary.steps}  ({summary.seconds:.1f} s)")
    table.add_row("snapshots", str(summary.n_snapshots))
    table.add_row("train accuracy", percent(summary.train_accuracy))
    table.add_row("test accuracy", percent(summary.test_accuracy))
    table.add_row("files", ", ".join(summary.files))
    console.print(table)
    if summary.attacks is not None:
        n_points = next(iter(summary.attacks["modes"].values()))["n_points"]
        console.print(attack_table(summary.attacks, f"minimal adversarial distances at {n_points} test points"))
        console.print(f"manifold specificity MS = {specificity_text(summary.attacks)}", highlight=False)
    if summary.verdict is not None:
        console.print(verdict_table(summary.verdict, f"verdict at step {summary.steps} "
                                                     f"(measured in {summary.measure_seconds:.1f} s)"))
    metrics = read_metrics(summary.path)
    if metrics.get("seed_agreement"):
        console.print(agreement_table(metrics["seed_agreement"], "seed agreement"))
    relabel = metrics.get("relabel")
    if relabel:
        low, high = relabel["clean_test_accuracy_interval"]
        console.print(f"relabelling ({relabel['settings']['target']} targets, eps {relabel['settings']['epsilon']:.3g}): "
                      f"fresh model's clean test accuracy {relabel['fresh_model_clean_test_accuracy']:.1%} "
                      f"[{low:.1%}, {high:.1%}], chance {relabel['chance']:.1%}", highlight=False)


@main.command(short_help="Run a sweep file (many runs, locally or on Ray) or one scene per value of one field.")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--param", "field", default=None, metavar="FIELD",
              help="With a scene file: the dotted field to vary, e.g. model.init_scale (a one-field sweep).")
@click.option("--values", "values_text", default=None, metavar="V1,V2,...",
              help="With --param: values, comma-separated YAML (e.g. 1,0.3,0.1); ';' between list values: '[64];[256]'.")
@click.option("--out", "out_root", type=click.Path(path_type=Path), default=Path("renders"), show_default=True,
              help="Root folder: the sweep goes to OUT/<sweep name>/ (runs under runs/, the table and report beside).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override scene fields (all runs).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default=None,
              help="Where runs execute (default: the file's backend.name, else local).")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="local: runs at once (default: the file's, else the CPU cores).")
@click.option("--address", default=None, help="ray: the cluster to join (default: the file's, RAY_ADDRESS, or a "
                                              "local Ray).")
@click.option("--stack-seeds", "stack_seeds", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Train runs that differ only in seed as one stacked model: auto (default) on CUDA, on also on the "
                   "CPU, off never. The numbers are those of runs trained alone.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--max-memory", "max_memory", metavar="SIZE", default=None, callback=_memory_size,
              help="Refuse to start when the runs that may execute at once need more than SIZE, e.g. 8G (default: "
                   "the memory available when the sweep starts).")
@_user_errors
def sweep(sweep_file: Path, field: str | None, values_text: str | None, out_root: Path, overrides: tuple[str, ...],
          backend: str | None, workers: int | None, address: str | None, stack_seeds: str | None, quiet: bool,
          max_memory: int | None):
    """Run every combination of SWEEP_FILE (`kind: sweep`: a base scene, a grid and/or a list of
    overrides; see scenes/sweeps/), each a full `sim run` into OUT/<sweep>/runs/<combination>/,
    skipping finished runs and recording failed ones; then write sweep.csv (and sweep.parquet),
    sweep.md, sweep.html and figures. With --param and --values, SWEEP_FILE is a scene and the
    sweep is one field's values."""
    from simulator.config.sweep import load_sweep, one_field_sweep
    from simulator.sweeps.runner import run_sweep
    from simulator.sweeps.table import sweep_rows, write_sweep_table
    from simulator.sweeps.report import write_sweep_report

    extra = _parse_overrides(overrides)
    if (field is None) != (values_text is None):
        raise SceneError("--param and --values go together: --param names the field, --values its values "
                         "(e.g. --param model.init_scale --values 1,0.1); or pass a sweep file without either.")
    if field is not None:
        separator = ";" if ";" in values_text else ","
        values = [_yaml_value(part.strip(), "--values", "list values are separated by ';', e.g. --values '[64];[64,64]'")
                  for part in values_text.split(separator) if part.strip()]
        plan = one_field_sweep(sweep_file, field, values, extra)
    else:
        plan = load_sweep(sweep_file, extra)  # every combination validated before the first run starts
    plan = dataclasses.replace(plan, backend=_backend_with_options(plan.backend, backend, workers, address,
                                                                   stack_seeds))
    _check_sweep_memory(plan, max_memory, sweep_file, out_root)
    console.print(f"sweep {plan.name}: {len(plan.runs)} runs into {Path(out_root) / plan.name}", highlight=False)
    outcome = run_sweep(plan, out_root, progress=not quiet)
    rows = sweep_rows(plan, outcome.folder)
    tables = write_sweep_table(outcome.folder, rows)
    write_sweep_report(plan, outcome.folder, rows)
    rate = f", {60 * len(outcome.done) / outcome.seconds:.1f} runs per minute" if outcome.done and outcome.seconds else ""
    console.print(f"{len(outcome.done)} runs done now, {len(outcome.skipped)} finished before, {len(outcome.failed)} "
                  f"failed ({outcome.seconds:.0f} s{rate})", highlight=False)
    for name, error in outcome.failed.items():
        console.print(f"[red]failed[/red] {name}: {escape(error.splitlines()[0] if error else '')}", highlight=False)
    console.print(f"table: {', '.join(str(path) for path in tables)}; report: {outcome.folder / 'sweep.html'}",
                  soft_wrap=True, highlight=False)
    if outcome.failed:
        raise SystemExit(1)


def _backend_with_options(spec, name: str | None, workers: int | None, address: str | None,
                          stack_seeds: str | None = None):
    """The sweep file's backend with the command line's options, validated together (so
    --workers with ray, or --address with local, is an error rather than ignored)."""
    from pydantic import ValidationError

    from simulator.config.sweep import BackendSpec

    updates = {key: value for key, value in (("name", name), ("workers", workers), ("address", address),
                                             ("stack_seeds", stack_seeds)) if value is not None}
    if updates.get("name") == "ray" and "workers" not in updates:
        updates["workers"] = None  # the file's local worker count does not carry over to Ray
    try:
        return BackendSpec.model_validate({**spec.model_dump(), **updates})
    except ValidationError as error:
        problem = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
        raise SceneError(f"--backend/--workers/--address/--stack-seeds: {problem}.") from None


def _check_sweep_memory(plan, max_memory: int | None, source: Path, out_root: Path) -> None:
    """Each run within the limit, and the jobs that may execute at once together (the largest
    `workers` estimates, on the local backend) too: a sweep must not die at its largest run. A
    stack of seed-only runs (backend.stack_seeds) counts as the sum of its runs, as it holds
    all their data and models while it trains."""
    from simulator.config.resources import available_memory, check_memory, format_bytes

    from simulator.config.sweep import describe_combination
    from simulator.sweeps.runner import RUNS_FOLDER, stacked_jobs

    peak = {run.name: check_memory(run.scene, max_memory,
                                   source=f"{source} with {describe_combination(run.varying)}").peak
            for run in plan.runs}
    jobs = stacked_jobs(plan.runs, plan.backend, Path(out_root) / plan.name / RUNS_FOLDER)
    peaks = sorted((sum(peak[run.name] for run in job) for job in jobs), reverse=True)
    limit = max_memory if max_memory is not None else available_memory()
    for job in jobs:
        need = sum(peak[run.name] for run in job)
        if len(job) > 1 and limit is not None and need > limit:
            raise SceneError(f"{source}: a stack of {len(job)} seed-only runs trained together needs an estimated "
                             f"{format_bytes(need)}, more than {format_bytes(limit)}; set the backend's max_stacked "
                             f"lower or pass --stack-seeds off.")
    if plan.backend.name != "local" or not peaks:
        return
    from simulator.sweeps.backends import LocalBackend

    together = sum(peaks[:LocalBackend(plan.backend).workers])
    if limit is not None and together > limit:
        raise SceneError(f"{source}: the {LocalBackend(plan.backend).workers} runs that execute at once need an "
                         f"estimated {format_bytes(together)} together, more than {format_bytes(limit)}; pass "
                         f"--workers with fewer workers (or --max-memory if you know the estimate is too high).")


@main.command("sweep-plot", short_help="Plot any parameter of a sweep against any measurement, seed-averaged.")
@click.argument("sweep_dir", type=click.Path(path_type=Path))
@click.option("--x", "x", required=True, metavar="FIELD", help="Parameter on the x axis, e.g. manifold.ambient_dim.")
@click.option("--y", "ys", required=True, multiple=True, metavar="COLUMN",
              help="Measurement(s) of sweep.csv, e.g. ms, tau_ratio, random_on_over_free (repeatable).")
@click.option("--hue", default=None, metavar="FIELD", help="One line per value of this parameter.")
@click.option("--reference", default=None, metavar="COLUMN", help="A column drawn dashed, e.g. dimension_only.")
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE",
              help="Only the runs with this value, e.g. --where train.optimizer=sgd (repeatable).")
@click.option("--log-x", is_flag=True, help="Logarithmic x axis.")
@click.option("--log-y", is_flag=True, help="Logarithmic y axis.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="The PNG to write (default: SWEEP_DIR/plot_<y>_vs_<x>.png).")
@_user_errors
def sweep_plot(sweep_dir: Path, x: str, ys: tuple[str, ...], hue: str | None, reference: str | None,
               where: tuple[str, ...], log_x: bool, log_y: bool, out_path: Path | None):
    """Means over the runs sharing the other parameters (the seeds), with standard-error bars."""
    from simulator.sweeps.plot import plot_sweep, select_rows
    from simulator.sweeps.table import read_sweep_table

    rows = select_rows(read_sweep_table(sweep_dir), _parse_overrides(where))
    out_path = out_path or Path(sweep_dir) / f"plot_{'_'.join(ys)}_vs_{x.rsplit('.', 1)[-1]}.png"
    plot_sweep(rows, x, list(ys), out_path, hue=hue, reference=reference, log_x=log_x, log_y=log_y)
    console.print(f"wrote {out_path}", highlight=False)


@main.command(short_help="Rerun the on/off/random-subspace attacks of a run.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_set_option("measure.attacks.", "--set measure.attacks.n_points=500.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def attack(run_dir: Path, overrides: tuple[str, ...], quiet: bool):
    """Run the on/off-manifold and random-subspace attacks on an existing run (no retraining)
    and update its metrics, figures, verdict and report."""
    from simulator.pipeline import rerun_attack
    from simulator.report.attack_tables import attack_table, specificity_text
    from simulator.report.verdict_tables import verdict_table

    run = rerun_attack(run_dir, _parse_overrides(overrides), progress=not quiet, log=_log(quiet))
    attacks = run.metrics["attacks"]
    final = attacks["final"]
    console.print(attack_table(final, f"{run.name}: minimal adversarial distances at {attacks['settings']['n_points']} "
                                      f"points, step {final['step']} ({attacks['seconds']:.1f} s)"))
    console.print(f"manifold specificity MS = {specificity_text(final)}", highlight=False)
    if "geometry" in run.metrics:
        console.print(verdict_table(run.metrics["geometry"]["snapshots"][-1]["verdict"], "verdict"))
    console.print(f"updated: {run.path / 'metrics.json'}, attack_norms.png, attack_distances.npz, verdict.json, "
                  f"report", soft_wrap=True, highlight=False)


def _log(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: console.print(message, highlight=False))


@main.command(short_help="Re-measure the geometry of a run (no retraining).")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_set_option("measure.", "--set measure.final_height_resolution=256.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def measure(run_dir: Path, overrides: tuple[str, ...], quiet: bool):
    """Recompute the geometry measurements of an existing run (no retraining)."""
    from simulator.pipeline import rerun_measure
    from simulator.report.verdict_tables import verdict_table

    run = rerun_measure(run_dir, _parse_overrides(overrides), progress=not quiet, log=_log(quiet))
    geometry = run.metrics["geometry"]
    final = geometry["snapshots"][-1]
    if "tangent" not in final:
        console.print("no manifold estimate (manifold: none): there is no tangent fraction or stretch to measure; "
                      "the verdict is rebuilt from the stored attacks", soft_wrap=True, highlight=False)
    console.print(verdict_table(final["verdict"], f"{run.name}: verdict at step {final['step']} "
                                                  f"({len(geometry['snapshots'])} snapshot(s), "
                                                  f"{geometry['settings']['n_points']} points, measured in "
                                                  f"{geometry['seconds']:.1f} s)"))
    console.print(f"updated: {run.path / 'metrics.json'}, the figures, verdict.json, report", soft_wrap=True,
                  highlight=False)


@main.command(short_help="Train several seeds of a run's scene and compare their boundaries.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--count", type=click.IntRange(min=2), default=None,
              help="Number of models, seeds scene.seed, scene.seed + 1, ... (default: the scene's "
                   "experiments.seed_agreement.count, 4).")
@click.option("--seeds", "seed_list", default=None, metavar="S1,S2,...",
              help="Explicit training seeds, e.g. --seeds 0,1,2 (repeats allowed: --seeds 0,0 must agree exactly).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def seeds(run_dir: Path, count: int | None, seed_list: str | None, quiet: bool):
    """Seed agreement on an existing run (its main model is not retrained): train the seeds on the
    run's data, measure where they disagree (on the manifold, at the test points, in the render
    frame) and the Chamfer distance between their boundaries, and draw the boundaries together
    (seed_boundaries.png, seed_boundary_<i>.vtp)."""
    from simulator.pipeline import rerun_seed_agreement
    from simulator.report.seed_agreement_tables import agreement_table

    prefix = "experiments.seed_agreement."
    overrides = {}
    if count is not None:
        overrides.update({prefix + "count": count, prefix + "seeds": None})
    if seed_list is not None:
        try:
            overrides[prefix + "seeds"] = [int(part) for part in seed_list.split(",")]
        except ValueError:
            raise click.BadParameter(f"{seed_list!r} is not a comma-separated list of integers (e.g. --seeds 0,1,2)",
                                     param_hint="--seeds") from None
    run = rerun_seed_agreement(run_dir, overrides, progress=not quiet)
    result = run.metrics["seed_agreement"]
    console.print(agreement_table(result, f"{run.scene.name}: seed agreement ({result['seconds']:.1f} s)"))
    console.print(f"updated: {run.path / 'metrics.json'}, seed_boundaries.png, " + ", ".join(result["files"]) + ", report",
                  soft_wrap=True, highlight=False)


@main.group()
def scenes():
    """List, validate and describe scene files."""


@main.command(short_help="Re-render the final boundary in 3-D (PNG + .vtp).")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_set_option("render.", "--set render.grid_resolution=128.")
@click.option("--animation", is_flag=True, help="Also write the training animation (GIF + MP4).")
@_user_errors
def render(run_dir: Path, overrides: tuple[str, ...], animation: bool):
    """Render the final snapshot's decision boundary in 3-D (off screen) and export the boundary
    and manifold meshes as .vtp (ParaView opens them), from the saved snapshots: no retraining.
    On a real-image run: its figures again."""
    from simulator.pipeline import rerun_render

    written = rerun_render(run_dir, _parse_overrides(overrides), animation=animation)
    console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)


@main.command(short_help="Write the training animation (GIF + MP4) of a run.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_set_option("render.", "--set render.orbit=true --set render.fps=4.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def animate(run_dir: Path, overrides: tuple[str, ...], quiet: bool):
    """One frame per snapshot, the boundary morphing over training, written as animation.gif and
    animation.mp4 into the run directory (no retraining)."""
    from simulator.pipeline import rerun_animation

    written = rerun_animation(run_dir, _parse_overrides(overrides), progress=not quiet)
    console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)


@main.command(short_help="Put synthetic and real runs side by side.")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("renders/comparison"),
              show_default=True, help="Folder for comparison.md, comparison.html and comparison.png.")
@_user_errors
def compare(run_dirs: tuple[Path, ...], out_dir: Path):
    """Compare runs (synthetic scenes and real-image experiments): tangent fraction against the
    random baseline, on/off/random attack ratios, manifold specificity MS with its interval,
    clinging fraction where defined. Writes a markdown and a self-contained HTML page."""
    from simulator.report.comparison import (
        comparison_markdown,
        run_summary,
        write_comparison,
    )

    markdown, html = write_comparison(list(run_dirs), out_dir)
    console.print(comparison_markdown([run_summary(path) for path in run_dirs]), highlight=False, soft_wrap=True)
    console.print(f"wrote {markdown}, {html}", soft_wrap=True, highlight=False)


@main.command(short_help="Write report.md and report.html for a run.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_user_errors
def report(run_dir: Path):
    """Write report.md and report.html (one self-contained file that works offline, with an
    interactive 3-D view of the final boundary) into a run directory."""
    from simulator.pipeline import rerun_report

    markdown, html = rerun_report(run_dir)
    console.print(f"wrote {markdown} and {html}", soft_wrap=True, highlight=False)


@main.group()
def runs():
    """Describe run directories."""


@runs.command("schema")
def runs_schema():
    """Print the JSON Schema of a run's metrics.json (both kinds: synthetic and real)."""
    from simulator.runs.format import run_metrics_schema

    click.echo(json.dumps(run_metrics_schema(), indent=2))


@scenes.command("list")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="Folder to list (default: the shipped scenes/).")
@_user_errors
def scenes_list(folder: Path | None):
    """Show the shipped scenes with a one-line description."""
    from simulator.pipeline import load_experiment

    folder = folder or SHIPPED_SCENES
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise SimulatorError(f"{folder}: no *.yaml scene files here; pass --dir with a folder of scenes.")
    table = Table(title=str(folder), title_justify="left")
    table.add_column("scene", no_wrap=True)
    table.add_column("manifold", no_wrap=True)
    table.add_column("labels")
    table.add_column("description")
    for file in files:
        scene = load_experiment(file)
        data, labels = scene.outline()
        table.add_row(file.stem, data, labels, scene.description)
    console.print(table)


@scenes.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def scenes_validate(files: tuple[Path, ...]):
    """Check scene files; print every problem found and each valid file's estimated peak memory.
    Exit code 2 if any file is invalid."""
    from simulator.config.resources import estimate_memory, format_bytes, memory_report
    from simulator.pipeline import load_experiment

    failed = False
    for file in files:
        try:
            if _is_sweep_file(file):  # every combination validated, each one's memory estimated
                from simulator.config.sweep import load_sweep

                plan = load_sweep(file)
                peak = max((estimate_memory(run.scene).peak for run in plan.runs), default=0)
                console.print(f"[green]ok:[/] {file} (sweep {plan.name}: {len(plan.runs)} runs of "
                              f"{plan.base_scene.name}; the largest run's estimated peak memory "
                              f"{format_bytes(peak)})", highlight=False, soft_wrap=True)
                continue
            scene = load_experiment(file)
        except SimulatorError as error:
            failed = True
            errors.print(f"[bold red]invalid:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        else:
            data, labels = scene.outline()
            console.print(f"[green]ok:[/] {file} ({data}; labels: {labels})", highlight=False, soft_wrap=True)
            console.print(f"    {escape(memory_report(scene))}", highlight=False, soft_wrap=True)
    if failed:
        sys.exit(2)


def _is_sweep_file(path: Path) -> bool:
    """True for a YAML file that says `kind: sweep` (read loosely: a broken file is not one)."""
    try:
        return Path(path).is_file() and isinstance(raw := parse_yaml(Path(path).read_text()), dict) \
            and raw.get("kind") == "sweep"
    except Exception:  # unreadable or not YAML: the scene loader reports it properly
        return False


@scenes.command("schema")
def scenes_schema():
    """Print the JSON Schema of scene files (for editor autocompletion)."""
    from simulator.config.loading import scene_json_schema

    click.echo(json.dumps(scene_json_schema(), indent=2))


if __name__ == "__main__":
    main()
