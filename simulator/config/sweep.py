"""A sweep file: one base scene, the overrides that vary, and where the runs execute.

    kind: sweep
    scene: ../sheet_two_class.yaml        # relative to this file
    set: {train.steps: 1500}              # the same for every run
    grid:                                 # every combination (a Cartesian product)
      manifold.ambient_dim: [3, 10, 30, 100]
      seed: [0, 1, 2]
    list:                                 # optional: whole override sets, each crossed with the grid
      - {model.init_scale: 1.0}
      - {model.init_scale: 0.1, train.weight_decay: 0.001}
    backend: {name: local}                # or {name: ray, address: auto, gpus_per_run: 0.25}

`expand_sweep` turns it into runs, every one validated as a scene before anything trains; a
combination that makes an invalid scene is an error naming that combination. Each run gets a
folder name from its varying values (`ambient_dim-30__seed-1`), the same on every rerun, so a
rerun can tell finished runs from missing ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from simulator.config.loading import read_yaml_file, scene_from_dict
from simulator.config.scene import Scene, StrictModel, why
from simulator.errors import SceneError

MAX_RUNS = 10_000  # a sweep larger than this is almost certainly a typo in a grid
MAX_NAME = 120  # longest run folder name before it is shortened with a hash


class BackendSpec(StrictModel):
    name: Literal["local", "ray"] = Field(
        "local", description="local: a process pool on this machine; ray: a Ray cluster (`pip install -e "
        "'.[ray]'`), the one at `address`, or a local one started for the sweep.")
    workers: int | None = Field(
        None, ge=1, le=1024, json_schema_extra=why("at most 1024 worker processes"),
        description="local: runs at once; default: the CPU cores (each run then gets cores / workers torch "
        "threads, so the workers never oversubscribe the cores).")
    threads_per_run: int | None = Field(
        None, ge=1, le=256, json_schema_extra=why("at most 256 threads"),
        description="torch threads in each run; default: cores / workers (local), cpus_per_run (ray). Runs with "
        "the same thread count give the same numbers on either backend.")
    address: str | None = Field(
        None, description="ray: the cluster to join (`auto`, `ray://host:10001`, ...); default: RAY_ADDRESS, else "
        "a local Ray started for the sweep.")
    cpus_per_run: float = Field(1.0, gt=0, le=256, json_schema_extra=why("at most 256 CPUs per run"),
                                description="ray: CPUs reserved per run.")
    gpus_per_run: float = Field(
        0.0, ge=0, le=8, json_schema_extra=why("at most 8 GPUs per run"),
        description="ray: GPUs reserved per run; a fraction (0.25) lets several small runs share one GPU.")
    stack_seeds: Literal["auto", "on", "off"] = Field(
        "auto", description="Runs that differ only in seed train together as one stacked model (one optimiser; each "
        "seed its own data, snapshots and history, stored as if it had trained alone): auto when they train on CUDA "
        "(a local GPU, or gpus_per_run > 0 on Ray), on also on the CPU, off never. Scenes with adversarial "
        "training, batch norm or L-BFGS always train alone.")
    max_stacked: int = Field(64, ge=2, le=4096, json_schema_extra=why("at most 4096 stacked models"),
                             description="Most runs stacked into one model; more seeds make several stacks.")

    @model_validator(mode="after")
    def _fields_of_the_backend(self):
        ray_only = [name for name in ("address", "cpus_per_run", "gpus_per_run")
                    if getattr(self, name) != type(self).model_fields[name].default]
        if self.name == "local" and ray_only:
            raise ValueError(f"{', '.join(ray_only)}: only used with name: ray; remove them or set name: ray")
        if self.name == "ray" and self.workers is not None:
            raise ValueError("workers: only used with name: local (Ray runs as many at once as the cluster has "
                             "room for, given cpus_per_run and gpus_per_run); remove it")
        return self


class SweepFile(StrictModel):
    kind: Literal["sweep"] = Field("sweep", description="Marks the file as a sweep.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$", max_length=80,
                             description="The sweep folder's name; default: the file's name.")
    description: str = Field("", max_length=2000, description="What the sweep asks, in words.")
    scene: str = Field(description="The base scene file, relative to the sweep file.")
    set: dict[str, Any] = Field({}, description="Dotted overrides applied to every run.")
    grid: dict[str, list[Any]] = Field(
        {}, description="Dotted field -> values; every combination runs (a Cartesian product).")
    list_: list[dict[str, Any]] = Field(
        [], alias="list", max_length=MAX_RUNS, json_schema_extra=why(f"at most {MAX_RUNS} entries"),
        description="Override sets run as given, each crossed with the grid.")
    backend: BackendSpec = BackendSpec()

    @model_validator(mode="after")
    def _sizes(self):
        for field, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{field}: give at least one value")
            labels = [json.dumps(value, sort_keys=True) for value in values]
            if len(set(labels)) != len(labels):
                raise ValueError(f"grid.{field}: a value repeats ({values}); give each value once")
        both = set(self.grid) & {key for entry in self.list_ for key in entry}
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: set both in grid and in list; vary each field in one of them")
        fixed = set(self.set) & (set(self.grid) | {key for entry in self.list_ for key in entry})
        if fixed:
            raise ValueError(f"set: {', '.join(sorted(fixed))} also varies in grid/list; remove it from set")
        count = max(1, len(self.list_)) * _product_size(self.grid)
        if count > MAX_RUNS:
            raise ValueError(f"grid/list: {count} combinations, more than {MAX_RUNS}; split the sweep")
        return self


def _product_size(grid: dict[str, list]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


@dataclass(frozen=True)
class SweepRun:
    """One combination: its folder name, the overrides that vary, and the validated scene."""

    name: str
    varying: dict[str, Any]
    scene: Scene


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    source: Path
    base_scene: Path
    fixed: dict[str, Any]
    varying_fields: list[str]
    runs: list[SweepRun]
    backend: BackendSpec


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "value"


def run_name(varying: dict[str, Any]) -> str:
    """A folder name from the varying values, e.g. `ambient_dim-30__seed-1` (hash-shortened when long)."""
    if not varying:
        return "run"
    name = "__".join(f"{field.rsplit('.', 1)[-1]}-{_label(value)}" for field, value in varying.items())
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(json.dumps(varying, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 12]}__{digest}"
    return name


def combinations(spec: SweepFile) -> list[dict[str, Any]]:
    """Every combination of overrides, in a fixed order: list entries outermost, then the grid."""
    fields = list(spec.grid)
    grid = [dict(zip(fields, values)) for values in itertools.product(*(spec.grid[f] for f in fields))]
    return [{**entry, **point} for entry in (spec.list_ or [{}]) for point in grid]


def load_sweep(path: str | Path, extra: dict[str, Any] | None = None) -> Sweep:
    """Read a sweep file and expand it; every run's scene validated (SceneError names the combination)."""
    path = Path(path)
    raw = read_yaml_file(path, "sweep", "Pass a YAML file with `kind: sweep` (see scenes/sweeps/).")
    if not isinstance(raw, dict):
        raise SceneError(f"{path}: a sweep file is a mapping with `kind: sweep`, `scene` and `grid` and/or `list`.")
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in error.errors())
        raise SceneError(f"{path}: {problems}. See scenes/sweeps/ for examples.") from None
    return expand_sweep(spec, path, extra or {})


def expand_sweep(spec: SweepFile, source: Path, extra: dict[str, Any]) -> Sweep:
    """The runs of a parsed sweep file (`extra`: --set overrides for every run)."""
    base = (source.parent / spec.scene).resolve()
    base_raw = read_yaml_file(base, "scene", f"`scene:` in {source} names it, relative to the sweep file.")
    if not isinstance(base_raw, dict) or base_raw.get("kind", "scene") != "scene":
        raise SceneError(f"{base}: a sweep varies a synthetic scene; this file is not one (kind: "
                         f"{base_raw.get('kind') if isinstance(base_raw, dict) else type(base_raw).__name__}).")
    varied = set(spec.grid) | {key for entry in spec.list_ for key in entry}
    for overrides, where in ((spec.set, "set"), (extra, "--set")):
        if "name" in overrides:
            raise SceneError(f"{source}: {where} name: every run is named after its combination (runs/<name>/); "
                             f"name the sweep with the sweep file's own `name:` instead.")
    clash = sorted(varied & set(extra))
    if clash:
        raise SceneError(f"{source}: --set {', '.join(clash)}: the sweep varies this field; change its values in the "
                         f"sweep file's grid or list instead.")
    if "name" in varied:
        raise SceneError(f"{source}: name cannot vary; every run is named after its combination.")
    fixed = {**spec.set, **extra}
    runs, names = [], {}
    for varying in combinations(spec):
        name = run_name(varying)
        if name in names:
            raise SceneError(f"{source}: combinations {names[name]} and {varying} get the same folder name {name!r}; "
                             f"make their values differ in more than punctuation.")
        names[name] = varying
        try:
            scene = scene_from_dict({**base_raw, "name": name}, source=f"{source} with {describe_combination(varying)}",
                                    overrides={**fixed, **varying})
        except SceneError as error:
            raise SceneError(f"{source}: the combination {describe_combination(varying)} makes an invalid scene: {error}") from None
        runs.append(SweepRun(name, varying, scene))
    varying_fields = list(dict.fromkeys(field for run in runs for field in run.varying))
    return Sweep(spec.name or source.stem, spec.description, source, base, fixed, varying_fields, runs, spec.backend)


def describe_combination(varying: dict[str, Any]) -> str:
    return ", ".join(f"{field} = {value!r}" for field, value in varying.items()) or "no overrides"


def one_field_sweep(scene_path: str | Path, field: str, values: list[Any], extra: dict[str, Any]) -> Sweep:
    """`sim sweep SCENE --param FIELD --values ...`: a sweep of one field, named <scene>_sweep_<field>."""
    scene_path = Path(scene_path)
    if not values:
        raise SceneError(f"--values: give at least one value for {field}, e.g. --values 1,0.3,0.1")
    labels = [json.dumps(value, sort_keys=True) for value in values]
    if len(set(labels)) != len(labels):
        raise SceneError(f"--values: a value repeats ({values}); give each value once")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{scene_path.stem}_sweep_{field.rsplit('.', 1)[-1]}")
    spec = SweepFile(name=name, scene=scene_path.name, grid={field: values})
    return expand_sweep(spec, scene_path.resolve().parent / f"{name}.yaml", extra)
