"""The run format: what metrics.json holds, its kind and version, and the one format check.

Every run directory, synthetic or real-image, has a metrics.json whose top level is described
by `RunMetrics` (`sim runs schema` prints its JSON Schema). `kind` says which stages wrote it:
"synthetic" (a scene: data.npz, snapshots.pt) or "real" (an image experiment: points.npz,
models.pt). Runs written before `kind` existed are synthetic unless they say otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from simulator.errors import RunError
from simulator.runs.io import merge_timings, read_timings
from simulator.runs.sections import (
    AttackReport,
    AttackSettingsRecord,
    GeometrySettings,
    GeometrySnapshot,
    RealSection,
    RelabelSection,
    SeedAgreementSection,
    check_synthetic_geometry,
)

# Bump when the layout or the meaning of a stored field changes; loaders refuse newer ones.
RUN_FORMAT_VERSION = 1

RunKind = Literal["synthetic", "real"]

# attack_distances.npz holds one (N,) array of minimal distances (the brackets' upper ends) per
# attack mode, the certified lower ends as "lower_bound_<mode>" (runs from before the brackets
# lack them), and beside them these: the free-mode perturbations (N, n) and the attacked points'
# rows in the test set.
ATTACK_FILE = "attack_distances.npz"
ATTACK_EXTRAS = ("free_delta", "point_index")
LOWER_BOUND_PREFIX = "lower_bound_"

KIND_NAMES = {"synthetic": "synthetic", "real": "real-image"}

# The files each kind of run must hold besides metrics.json and scene.yaml.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "synthetic": ("data.npz", "snapshots.pt"),
    "real": ("points.npz", ATTACK_FILE),  # + models.pt when the run trained a model (classifier or autoencoder)
}


class _Open(BaseModel):
    # Sections grow as measurements are added; the schema pins the structure readers rely on.
    # Strict: a number stored as a string is a damaged file (see simulator.runs.sections).
    model_config = ConfigDict(extra="allow", strict=True)


class SnapshotScalars(_Open):
    step: int
    loss: float | None = None
    train_accuracy: float | None = None
    test_accuracy: float | None = None


class TrainingSection(_Open):
    seconds: float | None = Field(None, description="Wall-clock training time (kept in timings.json; merged "
                                                    "back in when a run is read).")
    steps: int
    final: SnapshotScalars
    history: list[dict]
    adversarial: dict | None = None


class StageSection(_Open):
    """A stage's stored record: its resolved settings, cost and per-snapshot results."""

    settings: dict
    seconds: float | None = Field(None, description="Wall-clock time (kept in timings.json).")
    device: str
    snapshots: list[dict]


class GeometrySection(StageSection):
    settings: GeometrySettings
    snapshots: list[GeometrySnapshot] = Field(min_length=1)


class AttackSection(StageSection):
    settings: AttackSettingsRecord
    final: AttackReport = Field(description="The last attacked snapshot's report (also the last of `snapshots`).")
    snapshots: list[AttackReport] = Field(min_length=1)


class Integrity(BaseModel):
    """sha256 digests of a run's inputs' content, written with the run and checked on load
    (`simulator.runs.integrity`)."""

    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["sha256"]
    scene_excludes: list[str] = Field(description="Scene sections the scene.yaml digest leaves out: those later "
                                                  "commands rewrite with --set.")
    files: dict[str, Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] = Field(
        description="File name -> digest of its content (scene: validated settings; arrays and tensors: name, "
                    "dtype, shape, bytes).")


class RunMetrics(_Open):
    """metrics.json of a run directory (either kind)."""

    format_version: int = Field(description=f"Run format version (this simulator writes {RUN_FORMAT_VERSION}).")
    kind: RunKind = Field("synthetic", description="Which stages wrote the run: a synthetic scene or a real-image "
                                                   "experiment.")
    scene: str = Field(description="The scene's (or experiment's) name.")
    device: str
    training: TrainingSection
    snapshots: list[SnapshotScalars]
    # Absent until their stage has run, never null: readers test `"geometry" in metrics`.
    geometry: GeometrySection = Field(None, description="The measure stage's record (absent until it ran).")
    attacks: AttackSection = Field(None, description="The attack stage's record (absent until it ran).")
    relabel: RelabelSection = Field(None, description="The relabelling experiment's record, when it ran.")
    seed_agreement: SeedAgreementSection = Field(None, description="The seed-agreement record, when it ran.")
    provenance: dict | None = Field(None, description="Package versions, Python, platform and git commit of the "
                                                      "code that wrote the run.")
    real: RealSection | None = Field(None, description="Real-image runs only: data set, autoencoder, tangent "
                                                       "spaces.")
    integrity: Integrity | None = Field(None, description="Digests of scene.yaml, the data and the weights; absent "
                                                          "in runs written before digests existed.")

    @model_validator(mode="after")
    def _sections_readers_need(self):
        if self.kind == "synthetic" and self.geometry is not None:
            check_synthetic_geometry(self.geometry.settings, self.geometry.snapshots)
        # A real-image run is written in one go: its report reads all of these.
        if self.kind == "real":
            missing = [name for name in ("real", "geometry", "attacks") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"a real-image run needs the sections {', '.join(missing)}")
            if self.geometry.snapshots[-1].verdict is None:
                raise ValueError("geometry.snapshots[-1] of a real-image run needs its verdict")
            if "test_accuracy" not in self.training.final.model_fields_set:
                raise ValueError("training.final of a real-image run needs its test_accuracy")
        return self


def run_metrics_schema() -> dict:
    return RunMetrics.model_json_schema()


def read_metrics(path: str | Path) -> dict:
    """metrics.json of the run directory `path`, format-checked (RunError with the fix otherwise)."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory. Create one with `sim run SCENE.yaml` "
                       f"(default renders/<scene-name>/).")
    file = path / "metrics.json"
    try:
        metrics: Any = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{file}: missing or not valid JSON ({error}); rerun `sim run` on its scene.") from None
    if not isinstance(metrics, dict):
        raise RunError(f"{file}: expected a JSON object, found {type(metrics).__name__}; rerun `sim run` on its scene.")
    # The durations live in timings.json; merge_timings puts back duration keys only, so a damaged
    # timings.json cannot overwrite a section of metrics.json.
    merge_timings(metrics, read_timings(path))
    version = metrics.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunError(f"{file}: format_version is {'missing' if version is None else repr(version)}, not a version "
                       f"number; the file is damaged or was edited. Rerun `sim run` on its scene.")
    if not 1 <= version <= RUN_FORMAT_VERSION:
        raise RunError(
            f"{path}: run format version {version!r} is not one this simulator reads (it reads "
            f"1..{RUN_FORMAT_VERSION}); it was written by a newer or unknown version. Upgrade the "
            f"simulator or rerun the scene with this one."
        )
    try:
        RunMetrics.model_validate(metrics)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise RunError(f"{file}: {where}: {first['msg']} ({error.error_count()} problem(s) in all); the file is "
                       f"damaged or was edited. Rerun `sim run` on its scene.") from None
    return metrics


def run_kind(path: str | Path) -> RunKind:
    """"synthetic" or "real", read from the run's metrics.json (format-checked)."""
    return read_metrics(path).get("kind", "synthetic")


def check_files(path: Path, kind: RunKind, extra: tuple[str, ...] = ()) -> None:
    """RunError naming every file a run of `kind` needs but lacks."""
    needed = ("scene.yaml", "metrics.json") + REQUIRED_FILES[kind] + extra
    missing = [name for name in needed if not (Path(path) / name).is_file()]
    if missing:
        raise RunError(f"{path}: not a complete {KIND_NAMES[kind]} run directory (missing {', '.join(missing)}); "
                       f"rerun `sim run` on its scene.")
