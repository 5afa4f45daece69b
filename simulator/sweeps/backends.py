"""Where a sweep's runs execute: a local process pool, or Ray.

Both take the sweep's jobs (each a list of run scenes as JSON data: one run, or runs that differ
only in seed, trained stacked) and the runs folder, and yield each run's outcome
(`worker.execute_job`) as its job finishes. Each job sets its torch thread count; with the same
thread count a run gives the same numbers on either backend.

- `LocalBackend`: `concurrent.futures.ProcessPoolExecutor` with spawned workers (a forked child
  of a process that has used torch's thread pool can deadlock), `workers` at once (default:
  the CPU cores), each with cores / workers torch threads so they never oversubscribe the cores.
- `RayBackend`: `ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)` tasks on the cluster
  at `address` (or RAY_ADDRESS), or on a local Ray started for the sweep. Fractional GPUs let
  several small runs share one GPU. On a cluster the runs folder must be on a file system every
  node sees, and the project must be installed on every node.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from simulator.config.sweep import BackendSpec
from simulator.errors import SceneError
from simulator.sweeps.worker import execute_job

RAY_MISSING = ("backend: ray needs Ray, an optional extra: run `pip install -e '.[ray]'` in the project folder (or "
               "`pip install 'ray[default]'`), or use backend: local (--backend local).")


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


class LocalBackend:
    def __init__(self, spec: BackendSpec):
        cores = machine_cores()
        self.workers = spec.workers or cores
        # From the spec alone, not from how many runs are left: a rerun of one remaining run must
        # use the thread count its siblings used (the count can change the last bits of results).
        self.threads = spec.threads_per_run or max(1, cores // self.workers)
        self.pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"local: {self.workers} worker{'s' * (self.workers != 1)} x {self.threads} thread{'s' * (self.threads != 1)}"

    def run(self, jobs: list[list[dict]], runs_dir: str) -> Iterator[dict]:
        """Outcomes as jobs finish. A worker that dies (killed, out of memory) breaks the whole
        pool: the jobs it took down with it are resubmitted to a fresh pool, and a job that breaks
        the pool twice has its runs recorded as failed."""
        broke: dict[str, int] = {}
        queue = list(jobs)
        while queue:
            self.pool = ProcessPoolExecutor(max_workers=min(self.workers, len(queue)),
                                            mp_context=multiprocessing.get_context("spawn"))
            pending = {self.pool.submit(execute_job, job, runs_dir, self.threads): job for job in queue}
            queue = []
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        outcomes = future.result()
                    except BrokenProcessPool as error:
                        key = job[0]["name"]
                        broke[key] = broke.get(key, 0) + 1
                        if broke[key] >= 2:
                            yield from ({"name": scene["name"], "status": "failed",
                                         "error": f"the worker process died twice while running it ({error})"}
                                        for scene in job)
                        else:
                            queue.append(job)
                        continue
                    yield from outcomes
            self.pool.shutdown(wait=True)
            self.pool = None

    def close(self, interrupted: bool = False) -> None:
        if self.pool is None:
            return
        if interrupted:  # Ctrl-C: stop the running runs now rather than waiting for them
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not interrupted, cancel_futures=True)
        self.pool = None


class RayBackend:
    def __init__(self, spec: BackendSpec):
        try:
            import ray
        except ImportError:
            raise SceneError(RAY_MISSING) from None
        self.ray, self.spec = ray, spec
        self.threads = spec.threads_per_run or max(1, int(spec.cpus_per_run))
        address = spec.address or os.environ.get("RAY_ADDRESS")
        self.started_here = not ray.is_initialized()
        if self.started_here:
            # A local Ray (address None) gets this machine's cores; logs stay out of the terminal.
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_roots())}})
        self.address = address or "local"

    def describe(self) -> str:
        gpus = f", {self.spec.gpus_per_run:g} GPU" if self.spec.gpus_per_run else ""
        return f"ray ({self.address}): {self.spec.cpus_per_run:g} CPU{gpus} x {self.threads} thread(s) per run"

    def run(self, jobs: list[list[dict]], runs_dir: str) -> Iterator[dict]:
        ray = self.ray
        task = ray.remote(num_cpus=self.spec.cpus_per_run, num_gpus=self.spec.gpus_per_run, max_retries=0)(execute_job)
        pending = {task.remote(job, runs_dir, self.threads): job for job in jobs}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for reference in finished:
                job = pending.pop(reference)
                try:
                    outcomes = ray.get(reference)
                except Exception as error:  # the task's worker died (node lost, out of memory)
                    reason = f"the Ray task failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    outcomes = [{"name": scene["name"], "status": "failed", "error": reason} for scene in job]
                yield from outcomes

    def close(self, interrupted: bool = False) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _import_roots() -> list[str]:
    """Folders that make `simulator` importable in Ray's workers (the project root, for an
    editable install that Ray's fresh workers would also find; harmless otherwise)."""
    return [str(Path(__file__).resolve().parents[2])]


def make_backend(spec: BackendSpec):
    return RayBackend(spec) if spec.name == "ray" else LocalBackend(spec)
