"""The sections of metrics.json that later commands read, typed down to the fields they index.

`sim report`, `sim measure/attack` (which rebuild the verdict from stored summaries) and the
figures index these fields directly, so a metrics.json that lacks one, or holds a string where
a number or a mapping belongs, must be refused when the run is loaded, not fail halfway through
a report. Every model stays open (`extra="allow"`): sections gain fields as measurements are
added, and only what readers rely on is pinned. Strict: a number stored as a string, or a
boolean where a count belongs, is a damaged file, not something to convert silently.

Values a run may legitimately lack are `X | None` (NaN and infinity are stored as null).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.attacks.greedy_pgd import LOSSES
from simulator.attacks.subspaces import MODES


class Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


Number = float | None
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]


# --------------------------------------------------------------------------- geometry


class VerdictRow(Open):
    measurement: str
    dimpled: str
    stretchy: str
    measured: str
    reading: str


class Summary(Open):
    """A measurement summary: besides the fields named, every value is a number or null (the
    geometry curves plot them all)."""

    __pydantic_extra__: dict[str, Number]
    n_points: int


class TangentSummary(Summary):
    rms_tau: Number
    baseline_rms_tau: float
    ratio_to_baseline: Number

    @model_validator(mode="after")
    def _measured_when_counted(self):
        # Points where the margin gradient vanished are not counted, so counted points give numbers.
        if self.n_points > 0 and (self.rms_tau is None or self.ratio_to_baseline is None):
            raise ValueError(f"rms_tau and ratio_to_baseline are null over {self.n_points} points")
        return self


class HeightSummary(Summary):
    layout: str | None = None
    clinging_fraction: float
    clinging_epsilon: float
    dimple_depth: Number


class StretchSummary(Summary):
    mean_singular_values: list[Number] | None = None
    top_direction_feature_alignment: dict[str, Number] | None = None
    normal_energy_share: Number
    normal_energy_baseline: float


class GeometrySnapshot(Open):
    step: int
    test_accuracy: Number = None
    tangent: TangentSummary | None = None
    height: HeightSummary | None = None
    stretch: StretchSummary | None = None
    verdict: list[VerdictRow] | None = None


class Thresholds(Open):
    clinging_fraction: float
    tangent_ratio: float
    tangent_along: float
    stretch_alignment: float
    specificity: float


class GeometrySettings(Open):
    thresholds: Thresholds
    data_radius: Number = None
    t_max: Number = None  # synthetic runs: see check_synthetic_geometry
    clinging_epsilon: Number = None


def check_synthetic_geometry(settings: GeometrySettings, snapshots: list[GeometrySnapshot]) -> None:
    """What the geometry curves of a synthetic run draw (ValueError naming what is missing): the
    height search limits, each snapshot's test accuracy, the first snapshot's tangent baseline
    (and its stretch baseline when any snapshot has a stretch summary)."""
    missing = [f"settings.{name}" for name in ("t_max", "clinging_epsilon") if getattr(settings, name) is None]
    missing += [f"snapshots.{i}.test_accuracy" for i, s in enumerate(snapshots) if s.test_accuracy is None]
    if snapshots[0].tangent is None:
        missing.append("snapshots.0.tangent")
    if snapshots[0].stretch is None and any(s.stretch is not None for s in snapshots):
        missing.append("snapshots.0.stretch")
    if missing:
        raise ValueError(f"geometry: {', '.join(missing)} missing or null")


# --------------------------------------------------------------------------- attacks


class ModeSummary(Open):
    """One mode's figures over all attacked points (runs from before the brackets have no
    lower-bound fields and report the greedy walk's median steps)."""

    n_points: int
    subspace_dim: int | None
    success_rate: Number
    mean_distance: Number
    median_distance_counting_failures: Number
    median_steps: Number = None
    median_lower_bound: Number = None
    mean_lower_bound: Number = None
    median_relative_gap: Number = None
    share_settled: Number = None
    share_none_within_reach: Number = None
    share_unknown: Number = None
    median_greedy_distance: Number = None
    certificate: str | None = None
    ratio_to_free: Number = None
    dimension_only_ratio: Number = None


class SpecificityBound(Open):
    kind: Literal["lower", "upper"]
    missing_mode: str
    value: Number
    share_not_found: Number
    reach: Number


class StretchAlignment(Open):
    mean_alignment: Number
    random_baseline: Number


class FeatureValue(Open):
    mean_alignment: Number


class FeatureAlignment(Open):
    features: dict[str, FeatureValue] | None = None
    random_baseline: Number


class RobustRow(Open):
    epsilon: float
    minimal_distance: Number
    pgd: Number
    certified: Number = None  # absent in runs from before the brackets


class RobustAccuracy(Open):
    clean: Number
    n_points: int
    pgd_steps: int
    epsilons: list[RobustRow]


class AttackReport(Open):
    step: int | None = None
    modes: dict[str, ModeSummary]
    manifold_specificity: Number = None
    manifold_specificity_interval: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = None
    manifold_specificity_confidence: Number = None
    manifold_specificity_bracket: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = None
    manifold_specificity_covering: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = None
    manifold_specificity_bound: SpecificityBound | None = Field(None, description="Runs from before the brackets.")
    deepfool_check: dict | None = None
    stretch_alignment: StretchAlignment | None = None
    feature_alignment: FeatureAlignment | None = None
    robust_accuracy: RobustAccuracy | None = None


class SearchRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    directions: int = Field(ge=2)
    starts: int = Field(ge=0)
    march_steps: int = Field(ge=2)
    walk_rounds: int = Field(ge=0)
    bisect_steps: int = Field(ge=1)
    tolerance: float = Field(gt=0, lt=1)
    certify: bool


class AttackSettingsRecord(BaseModel):
    """`AttackSettings.as_record()`: a real-image run's `sim render` attacks again with exactly
    these, so every field is checked (closed: `AttackSettings.from_record` takes no others)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    n_points: int = Field(ge=1)
    step_size: float = Field(gt=0)
    seed: int
    max_steps: int = Field(ge=1)
    refine_steps: int = Field(ge=0)
    normal_rounds: int = Field(ge=0)
    loss: Literal[LOSSES]  # type: ignore[valid-type]
    modes: list[Literal[MODES]] = Field(min_length=1)  # type: ignore[valid-type]
    bootstrap: int = Field(ge=0)
    confidence: float = Field(gt=0, lt=1)
    robust_epsilons: list[float] = Field(None, description="Absent in runs from before robust accuracy.")
    check_with_deepfool: bool = True
    every_snapshot: bool = False
    search: SearchRecord = Field(None, description="Absent in runs from before the search and the brackets.")


# --------------------------------------------------------------------------- experiments


class RelabelSettings(Open):
    steps: int
    epsilon: float
    target: str


class RelabelSection(Open):
    settings: RelabelSettings
    clean_test_accuracy_interval: Pair
    chance: float
    uniform_chance: float = Field(None, description="Absent in older runs; never null (the report compares it).")
    target_reached: Number
    target_equals_true_class: Number
    fresh_model_clean_test_accuracy: Number
    original_model_test_accuracy: Number


class DistanceBin(Open):
    to: Number
    mean_pairwise: Number


class Disagreement(Open):
    mean_pairwise: Number
    not_all_agree: Number
    n_points: int
    pairwise: list[list[Number]]
    by_distance_to_data: list[DistanceBin] | None = None
    by_distance_to_manifold: list[DistanceBin] | None = None


class Chamfer(Open):
    mean: Number
    max: Number
    grid_spacing: float
    frame_diagonal: Number
    pairwise: list[list[Number]]


class SeedTraining(Open):
    note: str
    test_accuracy: list[Number]


class SeedAgreementSection(Open):
    seeds: list[int]
    training: SeedTraining
    test: Disagreement | None = None
    manifold: Disagreement | None = None
    frame: Disagreement | None = None
    chamfer: Chamfer | None = None
    files: list[str] = []
    note: str | None = None


# --------------------------------------------------------------------------- real-image runs


class RealDataset(Open):
    name: str
    n_train: int
    n_test: int
    n_classes: int
    image_shape: list[int]
    image_names: list[str] | None = None


class Reconstruction(Open):
    rmse: Number
    mean_relative_error: Number


class RealAutoencoder(Open):
    reconstruction: dict[str, Reconstruction]

    @model_validator(mode="after")
    def _has_training_error(self):
        if "train" not in self.reconstruction:
            raise ValueError("reconstruction: no 'train' entry")
        return self


class RealJacobian(Open):
    median_condition_number: Number
    share_full_rank: Number


class RealSection(Open):
    dataset: RealDataset
    manifold: Literal["autoencoder", "none"] = "autoencoder"
    ambient_dim: int
    test_indices: list[int]
    latent_dim: int | None = None
    subspace_dim: int | None = None
    autoencoder: RealAutoencoder | None = None
    jacobian: RealJacobian | None = None
    classifier: dict | None = None

    @model_validator(mode="after")
    def _has_its_manifold(self):
        if math.prod(self.dataset.image_shape) != self.ambient_dim:
            raise ValueError(f"dataset.image_shape {self.dataset.image_shape} does not hold ambient_dim "
                             f"{self.ambient_dim} pixels")
        needed = ("latent_dim", "autoencoder", "jacobian") if self.manifold == "autoencoder" else ("subspace_dim",)
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"manifold {self.manifold!r} needs {', '.join(missing)}")
        return self
