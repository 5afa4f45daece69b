"""Run every combination of a sweep: skip finished runs, record failures, show progress.

Each run is an ordinary `sim run` (`simulator.pipeline.run_scene`) into
`<out>/<sweep>/runs/<run name>/`, built in a hidden staging folder and moved into place only
when complete, so a folder that exists is a finished run and an interrupted sweep never counts
a half-written one (rerunning continues an interrupted run from its last stored stage). A run
that fails is recorded with its error in `status.json` and the others go on; the next
`sim sweep` retries it.

Backends (`backends.py`): `local`, a process pool sized to the machine with torch threads set
per worker, and `ray`, a Ray cluster. A job executes `worker.execute_job` in a worker process
either way: one run, or (`stacked_jobs`, `backend.stack_seeds`) up to `backend.max_stacked`
runs that differ only in seed, trained together as one stacked model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulator.config.loading import load_scene
from simulator.config.sweep import BackendSpec, Sweep, SweepRun
from simulator.errors import SceneError, SimulatorError
from simulator.runs.io import interrupted_staging, write_json
from simulator.sweeps.backends import make_backend
from simulator.training.stacked import batching_blocker

STATUS_FILE = "status.json"
RUNS_FOLDER = "runs"


@dataclass
class SweepOutcome:
    folder: Path
    done: list[str] = field(default_factory=list)  # finished in this call
    skipped: list[str] = field(default_factory=list)  # finished before
    failed: dict[str, str] = field(default_factory=dict)  # name -> error
    seconds: float = 0.0

    @property
    def finished(self) -> int:
        return len(self.done) + len(self.skipped)


def sweep_folder(sweep: Sweep, out_root: str | Path) -> Path:
    return Path(out_root) / sweep.name


def is_finished(runs_dir: Path, run: SweepRun) -> bool:
    """True when the run's folder exists and holds this very scene (a finished run); SceneError when
    it holds another scene (a changed sweep file must not mix old and new runs)."""
    folder = runs_dir / run.name
    if not (folder / "metrics.json").is_file():
        return False
    try:
        stored = load_scene(folder / "scene.yaml").model_dump(mode="json")
    except SimulatorError:
        stored = None
    if stored != run.scene.model_dump(mode="json"):
        raise SceneError(f"{folder}: this run folder holds a different scene than the sweep now asks for "
                         f"({', '.join(f'{k} = {v!r}' for k, v in run.varying.items())}); the sweep file or its base "
                         f"scene changed since. Delete the folder (or the whole sweep folder) to rerun it, or give "
                         f"the sweep another name.")
    return True


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def run_sweep(sweep: Sweep, out_root: str | Path = "renders", progress: bool = True,
              on_event: Callable[[dict], None] | None = None) -> SweepOutcome:
    """Every run of `sweep` not finished yet, on its backend. Returns what happened."""
    folder = sweep_folder(sweep, out_root)
    runs_dir = folder / RUNS_FOLDER
    runs_dir.mkdir(parents=True, exist_ok=True)
    outcome = SweepOutcome(folder)
    todo = [run for run in sweep.runs if not is_finished(runs_dir, run)]
    pending = {run.name for run in todo}
    outcome.skipped = [run.name for run in sweep.runs if run.name not in pending]
    stored = read_status(folder)
    # Finished folders are done whatever status.json said; queued runs are pending until they end.
    status = {name: {**stored.get(name, {}), "status": "done"} if name in outcome.skipped else {"status": "pending"}
              for name in (run.name for run in sweep.runs)}
    started = time.perf_counter()
    backend = make_backend(sweep.backend)
    display = _Progress(len(sweep.runs), len(outcome.skipped), enabled=progress, backend=backend.describe())
    interrupted = False
    try:
        jobs = [[run.scene.model_dump(mode="json") for run in job] for job in stacked_jobs(todo, sweep.backend, runs_dir)]
        for result in backend.run(jobs, str(runs_dir)):
            name = result["name"]
            status[name] = {key: value for key, value in result.items() if key != "name"}
            if result["status"] == "done":
                outcome.done.append(name)
            else:
                outcome.failed[name] = result["error"]
            write_json(folder / STATUS_FILE, status)  # after every run: an interruption loses nothing recorded
            display.update(result)
            if on_event:
                on_event(result)
    except KeyboardInterrupt:
        interrupted = True  # finished runs are recorded; the interrupted ones continue on the next `sim sweep`
        raise
    finally:
        display.close()
        backend.close(interrupted)
    outcome.seconds = time.perf_counter() - started
    write_json(folder / STATUS_FILE, status)
    return outcome


def stacking_applies(scene, spec: BackendSpec) -> bool:
    """Whether runs of `scene` that differ only in seed train stacked on this backend."""
    if spec.stack_seeds == "off" or batching_blocker(scene) is not None:
        return False
    if spec.stack_seeds == "on":
        return True
    if scene.train.device == "cpu":
        return False
    if spec.name == "ray":  # the driver may have no GPU; the runs get one when they reserve one
        return spec.gpus_per_run > 0
    import torch

    return torch.cuda.is_available()


def stacked_jobs(runs: list[SweepRun], spec: BackendSpec, runs_dir: Path) -> list[list[SweepRun]]:
    """The runs in jobs: runs whose scenes differ only in seed (and name) together, up to
    `spec.max_stacked` per job, where stacking applies; every other run alone. A run with an
    interrupted staging folder to continue stays alone (its training may be partly done)."""
    jobs: list[list[SweepRun]] = []
    stacks: dict[str, list[SweepRun]] = {}
    for run in runs:
        if not stacking_applies(run.scene, spec) or interrupted_staging(runs_dir / run.name) is not None:
            jobs.append([run])
            continue
        key = json.dumps(run.scene.model_dump(mode="json", exclude={"name", "seed"}), sort_keys=True)
        stack = stacks.setdefault(key, [])
        if len(stack) == spec.max_stacked:
            stack = stacks[key] = []
        if not stack:
            jobs.append(stack)
        stack.append(run)
    return jobs


class _Progress:
    """A rich progress bar: runs done, failed and remaining."""

    def __init__(self, total: int, already: int, enabled: bool, backend: str):
        self.failed = 0
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]sweep[/bold] ({task.fields[backend]})"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn())
        self.bar.start()
        self.task = self.bar.add_task("sweep", total=total, completed=already, failed=0, backend=backend)

    def update(self, result: dict) -> None:
        self.failed += result["status"] != "done"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
