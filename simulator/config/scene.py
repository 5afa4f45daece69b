"""The scene schema: a typed, validated description of one experiment.

A scene says which manifold the data lives on, how points are labelled, how much data to
draw, which MLP to train and how, when to snapshot the decision boundary, and what to
measure and render. Every field has a documented default (this module is the only home of
scene defaults); unknown keys are an error, so a typo never silently falls back to a default.

    scene = load_scene("scenes/sheet_two_class.yaml")     # config.loading
    scene.manifold.family, scene.train.steps

Names defined elsewhere are not repeated here: manifold families are the keys of
`simulator.manifolds.MANIFOLD_FAMILIES` (tests check the tags below against them), attack modes
and losses come from `simulator.attacks`. `sim scenes schema` prints the JSON Schema of `Scene`
so editors can autocomplete scenes.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulator.attacks.greedy_pgd import LOSSES
from simulator.attacks.minimal_search import SearchBudget
from simulator.attacks.subspaces import MANIFOLD_MODES, MODES
from simulator.manifolds import MANIFOLD_FAMILIES

# --------------------------------------------------------------------------- limits
#
# Every count, size and length has an upper limit, so that a slip of the keyboard (three zeros
# too many) is refused by validation instead of exhausting memory or running for days. Each
# limit is far above what the experiments need; whether a valid scene fits in this machine's
# memory is checked separately, before any work starts (`config.resources`). A field's
# `json_schema_extra["x-limit"]` says why its limit is where it is; validation messages quote it.

MAX_SEED = 2**63 - 1  # run records and most tools store integers as int64
MAX_AMBIENT_DIM = 2**20  # a megapixel image; whether the arrays fit is the memory check's job
# The seeded random isometry is an n x h float64 matrix (the QR factorisation of an n x h
# Gaussian), redone by every stage that rebuilds the manifold: 2**25 entries is 256 MiB and a
# few seconds of QR, e.g. n = 150528 (a 224 x 224 x 3 image) at h = 222.
MAX_RANDOM_EMBEDDING_ENTRIES = 2**25
MAX_POINTS = 10**7  # data points (MNIST has 7 x 10^4); the memory check bounds the arrays
MAX_WIDTH = 2**16  # hidden layer width
MAX_LAYERS = 64
MAX_CLASSES = 1000  # ImageNet's count
MAX_CLUSTERS = 10_000  # a 100 x 100 grid of blobs
MAX_CELLS = 10_000  # stripes or checkerboard cells per axis
MAX_STEPS = 10**7  # optimiser steps: hours at the ~1 ms a step of these MLPs
MAX_SNAPSHOTS = 10_000  # each is stored, measured and drawn
# Lengths in input units. Inputs are float32 when training: squared distances of lengths up to
# 1e6 stay far from float32's overflow (3e38) and lengths down to 1e-9 far from its underflow.
MIN_LENGTH, MAX_LENGTH = 1e-9, 1e6
# Training normally uses rates <= 1; the test suite drives divergence on purpose with 1e12.
MAX_LEARNING_RATE = 1e12
MAX_SLOPE = 1000.0  # sine sheet amplitude x frequency; see SineSheetSpec

LENGTH_LIMIT = (f"lengths are between {MIN_LENGTH:g} and {MAX_LENGTH:g} input units, so that float32 "
                f"training neither overflows nor underflows")


def why(reason: str) -> dict:
    """The `json_schema_extra` of a limited field: why the limit is where it is (quoted in errors)."""
    return {"x-limit": reason}


LENGTH = why(LENGTH_LIMIT)
POINTS = why(f"at most {MAX_POINTS:,} points; larger data sets do not fit the memory of one machine "
             f"with their tangent bases")
STEPS = why(f"at most {MAX_STEPS:,} steps, hours of training already; split longer studies into runs")
SEED = why(f"seeds are whole numbers from 0 to 2**63 - 1 = {MAX_SEED}")
WIDTHS = why(f"at most {MAX_LAYERS} layers of at most {MAX_WIDTH:,} units")


class StrictModel(BaseModel):
    # Unknown keys are errors: a misspelt option must never silently become its default.
    # strict: YAML already gives native types, so "5" or `true` for an integer is a mistake.
    # allow_inf_nan=False: .inf and .nan are never meaningful settings (and 1e999 reads as inf).
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- manifolds


class _ManifoldBase(StrictModel):
    ambient_dim: int = Field(
        3, ge=1, le=MAX_AMBIENT_DIM, description="n: dimension of the input space the manifold is embedded in.",
        json_schema_extra=why(f"at most 2**20 = {MAX_AMBIENT_DIM:,} dimensions, a megapixel image"),
    )
    embedding: Literal["random", "identity"] = Field(
        "random",
        description="How the host space sits in R^n: a seeded random isometry (default; no "
        "coordinate axis is special) or the identity (the first host coordinates; easier to read "
        "in 3-D pictures).",
    )
    embedding_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the random isometry.",
                                json_schema_extra=SEED)

    def host_dim(self) -> int:
        """h: every family is a hypersurface of R^(k+1) (the torus and swiss roll: k = 2, h = 3)."""
        return getattr(self, "dim", 2) + 1

    @model_validator(mode="after")
    def _ambient_fits_host(self):
        if self.ambient_dim < self.host_dim():
            raise ValueError(
                f"ambient_dim: {self.ambient_dim} is smaller than the {_possessive(self.family_noun)} host "
                f"dimension {self.host_dim()}; set manifold.ambient_dim to at least {self.host_dim()}"
            )
        if self.embedding == "random" and self.ambient_dim * self.host_dim() > MAX_RANDOM_EMBEDDING_ENTRIES:
            raise ValueError(
                f"ambient_dim: {self.ambient_dim} x host dimension {self.host_dim()} is too large for "
                f"embedding: random (at most {MAX_RANDOM_EMBEDDING_ENTRIES:,} entries): the random isometry is "
                f"an n x h float64 matrix, {8 * self.ambient_dim * self.host_dim() / 2**20:,.0f} MiB and its QR "
                f"redone by every stage; set manifold.embedding: identity, or a smaller ambient_dim or dim"
            )
        return self

    @property
    def family_noun(self) -> str:
        return self.family.replace("_", " ")

    def build(self):
        """The `simulator.manifolds.Manifold` this spec describes (unset optional fields take
        the family's own defaults)."""
        return MANIFOLD_FAMILIES[self.family](**self.model_dump(exclude={"family"}, exclude_none=True))


def _possessive(noun: str) -> str:
    return noun + ("'" if noun.endswith("s") else "'s")


class FlatSpec(_ManifoldBase):
    """A k-dimensional flat (line, plane, subspace) inside R^(k+1), embedded in R^n."""

    family: Literal["flat"]
    dim: int = Field(2, ge=1, le=MAX_AMBIENT_DIM - 1, description="k: intrinsic dimension (1 line, 2 plane, ...).")
    extent: float = Field(1.0, ge=MIN_LENGTH, le=MAX_LENGTH, description="Chart box half-width: data lies in [-extent, extent]^k.", json_schema_extra=LENGTH)
    offset: list[Annotated[float, Field(ge=-MAX_LENGTH, le=MAX_LENGTH)]] | None = Field(
        None, max_length=MAX_AMBIENT_DIM, json_schema_extra=why(
            f"one entry per ambient coordinate (manifold.ambient_dim), each between -{MAX_LENGTH:g} and {MAX_LENGTH:g}"),
        description="A point added after embedding, so the flat no longer passes through the origin "
        "(e.g. [0, 0, 0.5] with embedding: identity is the plane z = 0.5 of Melamed et al. 2023); "
        "default none: the flat passes through the origin.")

    @model_validator(mode="after")
    def _offset_is_a_point(self):
        if self.offset is not None and len(self.offset) != self.ambient_dim:
            raise ValueError(
                f"offset: has {len(self.offset)} entries but manifold.ambient_dim is {self.ambient_dim}; the offset "
                f"is a point of the input space, so give one number per ambient coordinate (e.g. [0, 0, 0.5] "
                f"in 3-D) or leave it out for a flat through the origin"
            )
        return self

    @property
    def family_noun(self) -> str:
        return {1: "line", 2: "plane"}.get(self.dim, f"{self.dim}-flat")


class SphereSpec(_ManifoldBase):
    """A round k-sphere of the given radius in R^(k+1)."""

    family: Literal["sphere"]
    dim: int = Field(2, ge=1, le=MAX_AMBIENT_DIM - 1, description="k: intrinsic dimension (1 circle, 2 sphere, ...).")
    radius: float = Field(1.0, ge=MIN_LENGTH, le=MAX_LENGTH, description="Radius.", json_schema_extra=LENGTH)


class TorusSpec(_ManifoldBase):
    """A 2-torus of revolution in R^3."""

    family: Literal["torus"]
    major_radius: float = Field(1.0, ge=MIN_LENGTH, le=MAX_LENGTH, description="Distance from the axis to the tube centre.", json_schema_extra=LENGTH)
    minor_radius: float = Field(0.4, ge=MIN_LENGTH, le=MAX_LENGTH, description="Tube radius; must be below major_radius.", json_schema_extra=LENGTH)


    @model_validator(mode="after")
    def _tube_fits(self):
        if self.minor_radius >= self.major_radius:
            raise ValueError(
                f"minor_radius: {self.minor_radius} must be smaller than major_radius "
                f"{self.major_radius} (otherwise the torus intersects itself)"
            )
        return self


# The nearest-point search samples 64 points per turn of the spiral: 1000 radians are ~160 turns.
MAX_SPIRAL_ANGLE = 1000.0
SPIRAL = why(f"at most {MAX_SPIRAL_ANGLE:g} radians, about 160 turns; the nearest-point search samples every turn")


class SwissRollSpec(_ManifoldBase):
    """The swiss roll scale*(t cos t, s, t sin t), a rolled-up 2-D sheet in R^3."""

    family: Literal["swiss_roll"]
    t_min: float = Field(1.5 * math.pi, gt=0, le=MAX_SPIRAL_ANGLE, description="Start angle of the spiral (radians).",
                         json_schema_extra=SPIRAL)
    t_max: float = Field(4.5 * math.pi, gt=0, le=MAX_SPIRAL_ANGLE, description="End angle of the spiral (radians).",
                         json_schema_extra=SPIRAL)
    width: float | None = Field(None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
                                description="Extent of the straight direction s; default: the family's own.")
    scale: float | None = Field(None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
                                description="Overall scale; default 1/t_max so the roll fits the unit ball.")


    @model_validator(mode="after")
    def _t_range(self):
        if self.t_max <= self.t_min:
            raise ValueError(f"t_max: {self.t_max} must be larger than t_min {self.t_min}")
        return self


class SineSheetSpec(_ManifoldBase):
    """The graph z = amplitude * prod_i sin(frequency * u_i) over a k-dimensional box."""

    family: Literal["sine_sheet"]
    dim: int = Field(2, ge=1, le=MAX_AMBIENT_DIM - 1, description="k: intrinsic dimension.")
    amplitude: float = Field(0.3, ge=0, le=MAX_LENGTH, description="Height of the bumps.", json_schema_extra=LENGTH)
    frequency: float = Field(2.0, gt=0, le=MAX_LENGTH, description="Angular frequency of the bumps (radians per chart unit).",
                             json_schema_extra=why(f"at most {MAX_LENGTH:g} radians per chart unit"))

    @model_validator(mode="after")
    def _slope_bounded(self):
        # Area-uniform sampling is by rejection and accepts about 1 / (amplitude x frequency) of
        # its proposals: a steeper sheet makes drawing the data crawl.
        if self.amplitude * self.frequency > MAX_SLOPE:
            raise ValueError(
                f"amplitude: {self.amplitude:g} x frequency {self.frequency:g} = {self.amplitude * self.frequency:g} "
                f"is the steepest slope of the sheet, at most {MAX_SLOPE:g} (area-uniform sampling then accepts "
                f"about 1/slope of its draws); lower the amplitude or the frequency"
            )
        return self
    extent: float = Field(1.0, ge=MIN_LENGTH, le=MAX_LENGTH, description="Chart box half-width.", json_schema_extra=LENGTH)


class ConcentricSpheresSpec(_ManifoldBase):
    """Two concentric k-spheres ("Adversarial Spheres", Gilmer et al. 2018)."""

    family: Literal["concentric_spheres"]
    dim: int = Field(2, ge=1, le=MAX_AMBIENT_DIM - 1, description="k: intrinsic dimension of each sphere.")
    inner_radius: float = Field(1.0, ge=MIN_LENGTH, le=MAX_LENGTH, description="Radius of the inner sphere.", json_schema_extra=LENGTH)
    outer_radius: float = Field(1.3, ge=MIN_LENGTH, le=MAX_LENGTH, description="Radius of the outer sphere.", json_schema_extra=LENGTH)


    @model_validator(mode="after")
    def _radii_ordered(self):
        if self.outer_radius <= self.inner_radius:
            raise ValueError(
                f"outer_radius: {self.outer_radius} must be larger than inner_radius {self.inner_radius}"
            )
        return self


def _tag(spec: type[BaseModel], key: str) -> str:
    """The discriminator value of one member of a tagged union (its one-value Literal)."""
    (tag,) = get_args(spec.model_fields[key].annotation)
    return tag


MANIFOLD_SPECS = (FlatSpec, SphereSpec, TorusSpec, SwissRollSpec, SineSheetSpec, ConcentricSpheresSpec)
ManifoldSpec = Annotated[Union[MANIFOLD_SPECS], Field(discriminator="family")]
# The `manifold.family` values, in declaration order.
FAMILY_NAMES = tuple(_tag(spec, "family") for spec in MANIFOLD_SPECS)


# --------------------------------------------------------------------------- labels


class _LabelBase(StrictModel):
    n_classes: int = Field(2, ge=2, le=MAX_CLASSES, description="Number of classes.",
                           json_schema_extra=why(f"at most {MAX_CLASSES} classes, ImageNet's count"))

    def check_fits(self, k: int, family: str) -> None:
        """Raise ValueError when this rule cannot label a k-dimensional manifold of `family`."""


class ClustersLabels(_LabelBase):
    """Gaussian blobs in chart coordinates; each blob has one class (the paper's picture)."""

    rule: Literal["clusters"]
    n_clusters: int = Field(16, ge=2, le=MAX_CLUSTERS, description="Number of blobs.",
                            json_schema_extra=why(f"at most {MAX_CLUSTERS:,} blobs, a 100 x 100 grid; with more, "
                                                  f"most blobs hold no training point"))
    layout: Literal["grid", "random"] = Field(
        "grid",
        description="Blob centres on a regular grid (n_clusters must then be a k-th power) or "
        "uniformly at random in the chart box.",
    )
    assignment: Literal["alternating", "random"] = Field(
        "alternating",
        description="Class of each blob: alternating (a checkerboard over the grid, so "
        "neighbours differ) or uniformly at random.",
    )
    spread: float = Field(
        0.08, gt=0, le=100, description="Blob standard deviation as a fraction of the chart box width.",
        json_schema_extra=why("a fraction of the box width, at most 100: beyond a few widths a blob is "
                              "uniform over the box"),
    )

    def check_fits(self, k, family):
        if self.layout == "grid":
            per_axis = round(self.n_clusters ** (1.0 / k))
            if per_axis**k != self.n_clusters:
                raise ValueError(
                    f"labels.n_clusters: {self.n_clusters} is not m**{k} for a whole number m, so it cannot "
                    f"fill a grid on a k={k} chart; use e.g. {max(per_axis, 2) ** k} or layout: random"
                )


class HalfSpaceLabels(_LabelBase):
    """Two classes split by a hyperplane through the chart box centre."""

    rule: Literal["half_space"]
    direction: list[Annotated[float, Field(ge=-MAX_LENGTH, le=MAX_LENGTH)]] | None = Field(
        None, max_length=MAX_AMBIENT_DIM,
        description="Normal of the splitting hyperplane in chart coordinates; default the first axis.",
        json_schema_extra=why(f"one entry per chart coordinate, each between -{MAX_LENGTH:g} and {MAX_LENGTH:g}"),
    )
    offset: float = Field(0.0, ge=-MAX_LENGTH, le=MAX_LENGTH,
                          json_schema_extra=why(f"a finite offset between -{MAX_LENGTH:g} and {MAX_LENGTH:g}"),
                          description="Signed offset of the hyperplane from the box centre (chart units).")

    def check_fits(self, k, family):
        _check_two_classes(self)
        if self.direction is not None and len(self.direction) != k:
            raise ValueError(
                f"labels.direction: has {len(self.direction)} entries but the manifold has k={k} chart coordinates"
            )
        if self.direction is not None and not any(self.direction):
            raise ValueError("labels.direction: is the zero vector, which has no direction; give the normal of "
                             "the split, e.g. [1, 0]")


class StripesLabels(_LabelBase):
    """Parallel stripes along one chart axis, classes cycling."""

    rule: Literal["stripes"]
    n_stripes: int = Field(4, ge=2, le=MAX_CELLS, description="Number of stripes across the chart box.",
                           json_schema_extra=why(f"at most {MAX_CELLS:,} stripes"))
    axis: int = Field(0, ge=0, le=MAX_AMBIENT_DIM, description="Chart axis across which the stripes alternate.")

    def check_fits(self, k, family):
        if self.axis >= k:
            raise ValueError(f"labels.axis: {self.axis} is out of range for a k={k} manifold (0..{k - 1})")


class CheckerboardLabels(_LabelBase):
    """A checkerboard over the chart box."""

    rule: Literal["checkerboard"]
    cells_per_axis: int = Field(4, ge=2, le=MAX_CELLS, description="Cells along each chart axis used.",
                                json_schema_extra=why(f"at most {MAX_CELLS:,} cells per axis"))
    n_axes: int | None = Field(None, ge=1, le=MAX_AMBIENT_DIM,
                               description="How many leading chart axes carry the pattern; default all.")
    sampling: Literal["uniform", "grid"] = Field(
        "uniform",
        description="uniform: every point is drawn uniformly by volume. grid: the first cells_per_axis**k "
        "points drawn are the cell centres of the chart box, in grid order (first axis slowest), the rest "
        "uniform; with data.n_train = cells_per_axis**k the training set is exactly the grid and the test "
        "points are random (Melamed et al.'s 5 x 5 chessboard: cells_per_axis 5, n_train 25).")

    def check_fits(self, k, family):
        if self.n_axes is not None and self.n_axes > k:
            raise ValueError(f"labels.n_axes: {self.n_axes} exceeds the manifold's k={k}")
        # Compared in logarithms: cells_per_axis**k itself can have millions of digits.
        if self.sampling == "grid" and k * math.log(self.cells_per_axis) > math.log(MAX_POINTS) + 1e-9:
            raise ValueError(
                f"labels.sampling: grid puts cells_per_axis**k = {self.cells_per_axis}**{k} points on the chart, "
                f"more than the {MAX_POINTS:,} points a data set may have; lower labels.cells_per_axis or use "
                f"sampling: uniform"
            )


class RandomLabels(_LabelBase):
    """Each point gets an independent uniformly random class: pure memorisation."""

    rule: Literal["random"]


class ComponentLabels(_LabelBase):
    """Class = connected component of the manifold (for concentric spheres)."""

    rule: Literal["component"]

    def check_fits(self, k, family):
        _check_two_classes(self)
        if family != "concentric_spheres":
            raise ValueError(
                f"labels.rule: 'component' needs a manifold with several components "
                f"(concentric_spheres), not {family}"
            )


def _check_two_classes(labels: _LabelBase) -> None:
    if labels.n_classes != 2:
        raise ValueError(f"labels.n_classes: {labels.rule} labels have exactly 2 classes, got {labels.n_classes}")


class ShapeAndFurLabels(_LabelBase):
    """Two features that both predict the class: a stretchy-features scene.

    "Shape" is large-scale: the side of the chart box along `shape_axis` (classes on opposite
    halves), agreeing with the class with probability `shape_reliability`. "Fur" is tiny: every
    point of class c is displaced by s_c * fur_size (s = -1, +1) along one direction, either a
    chart axis (`fur_location: on`, the fur lies along the manifold; all points then sit at
    chart coordinate +-fur_size on that axis) or the manifold's unit normal (`off`: the data
    floats +-fur_size above and below the manifold). A network that fits every training point
    must read the fur, because the shape is wrong for a share 1 - shape_reliability of points.
    """

    rule: Literal["shape_and_fur"]
    n_classes: Literal[2] = Field(2, description="Always 2: shape and fur each split the data in two.")
    shape_axis: int = Field(0, ge=0, le=MAX_AMBIENT_DIM,
                            description="Chart axis whose side (large-scale) is the shape feature.")
    shape_reliability: float = Field(
        0.9, ge=0.5, le=1, description="Probability that a point's shape side agrees with its class "
        "(0.5: shape carries no information).")
    fur_size: float = Field(
        0.03, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH, description="Fur displacement: class c sits at s_c * fur_size along the fur direction "
        "(chart units for `on`, which are input units on a flat manifold; input units for `off`).")
    fur_location: Literal["on", "off"] = Field(
        "on", description="on: the fur direction is chart axis `fur_axis` (tangent to the manifold); "
        "off: it is the manifold's unit normal (orthogonal to it).")
    fur_axis: int = Field(1, ge=0, le=MAX_AMBIENT_DIM,
                          description="Chart axis of the fur for fur_location: on (not the shape axis).")
    fur_reliability: float = Field(
        1.0, ge=0.5, le=1, description="Probability that a point's fur agrees with its class.")

    def check_fits(self, k, family):
        for name in ("shape_axis", "fur_axis") if self.fur_location == "on" else ("shape_axis",):
            if getattr(self, name) >= k:
                raise ValueError(f"labels.{name}: {getattr(self, name)} is out of range for a k={k} "
                                 f"manifold (0..{k - 1})")
        if self.fur_location == "on" and self.fur_axis == self.shape_axis:
            raise ValueError(f"labels.fur_axis: {self.fur_axis} is also the shape axis; on-manifold fur "
                             f"needs its own chart axis (a k >= 2 manifold)")


LABEL_SPECS = (ClustersLabels, HalfSpaceLabels, StripesLabels, CheckerboardLabels, RandomLabels, ComponentLabels,
               ShapeAndFurLabels)
LabelSpec = Annotated[Union[LABEL_SPECS], Field(discriminator="rule")]
# The `labels.rule` values, in declaration order.
RULE_NAMES = tuple(_tag(spec, "rule") for spec in LABEL_SPECS)


# --------------------------------------------------------------------------- the rest


class DataSpec(StrictModel):
    n_train: int = Field(400, ge=2, le=MAX_POINTS, description="Training points.", json_schema_extra=POINTS)
    n_test: int = Field(400, ge=1, le=MAX_POINTS, description="Test points (same distribution, disjoint draw).",
                        json_schema_extra=POINTS)
    noise_std: float = Field(
        0.0,
        ge=0,
        le=MAX_LENGTH,
        json_schema_extra=LENGTH,
        description="Std of Gaussian noise added in the normal space (off the manifold); 0 keeps "
        "points exactly on it. Chart coordinates and tangent bases refer to the clean point.",
    )


class ModelSpec(StrictModel):
    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        [64, 64], min_length=1, max_length=MAX_LAYERS, description="Widths of the hidden layers.",
        json_schema_extra=WIDTHS,
    )
    activation: Literal["relu", "tanh", "gelu", "softplus"] = Field(
        "relu", description="Hidden activation. relu is the paper's setting; smooth ones give smooth boundaries."
    )
    bias: bool = Field(True, description="Use biases.")
    init_scale: float = Field(
        1.0,
        gt=0,
        le=1000,
        json_schema_extra=why("at most 1000: larger initial weights overflow float32 logits"),
        description="Multiplies PyTorch's default initial weights; smaller values are known to "
        "make networks more robust off the data subspace.",
    )
    batch_norm: bool = Field(
        False, description="A BatchNorm1d after every hidden Linear layer (Linear -> batch norm -> activation). "
        "Training normalises with each batch's statistics; every measurement reads the network in evaluation "
        "mode (running statistics), with batch norm folded into the Linear layer before it.",
    )


# Gradient steps of one attack (each costs a forward and a backward pass per point).
MAX_ATTACK_STEPS = 100_000
ATTACK_STEPS = why(f"at most {MAX_ATTACK_STEPS:,} gradient steps per attack")


class AdversarialTrainingSpec(StrictModel):
    """Adversarial training (Madry et al. 2018): part of every batch is replaced by its worst case
    within an L2 ball, found by projected PGD confined to the mode's subspace."""

    enabled: bool = Field(False, description="Train on adversarial examples (off: plain training).")
    # free or the manifold's own subspaces (a random control subspace would need its own k and seed)
    mode: Literal[("free", *MANIFOLD_MODES)] = Field(
        "free", description="Subspace of the perturbations: free (R^n), on (the tangent space: on-manifold "
        "adversarial training) or off (the normal space).")
    epsilon: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
        description="L2 radius of the perturbations (input units); default 0.1 x the data radius.")
    steps: int = Field(10, ge=1, le=MAX_ATTACK_STEPS, description="PGD steps per batch.", json_schema_extra=ATTACK_STEPS)
    step_size: float | None = Field(None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
                                    description="PGD step length; default 2.5 x epsilon / steps.")
    fraction: float = Field(0.5, gt=0, le=1, description="Share of each batch replaced by adversarial examples.")


LEARNING_RATE = why(f"a positive rate up to {MAX_LEARNING_RATE:g}; usual rates are below 1, the largest "
                    f"only serve to provoke divergence")
WEIGHT_DECAY = why(f"between 0 and {MAX_LEARNING_RATE:g}")


# Curvature pairs L-BFGS keeps (train.optimizer: lbfgs): Nocedal & Wright (Numerical Optimization,
# 2006, section 7.2) recommend 3 to 20; more costs memory (two parameter-sized vectors per pair).
LBFGS_HISTORY = 10
# L-BFGS iterations in one training step (one optimizer.step(closure) on one batch): torch's
# default. Its LBFGS driven one iteration per step() call converges far more slowly than within
# a call (measured on a ridge regression: 0.036 from the solution after 100 calls, against 5e-8
# after 25 iterations in one call), so a step runs this many.
LBFGS_ITERATIONS = 20


class TrainSpec(StrictModel):
    optimizer: Literal["adam", "sgd", "lbfgs"] = Field(
        "adam", description="Optimiser. adam and sgd are first-order; lbfgs is torch.optim.LBFGS, a quasi-Newton "
        "(second-order) method: each step runs up to 20 L-BFGS iterations with strong-Wolfe line searches on its "
        "batch (lr 1 is its natural step), so it needs far fewer steps; meant for full batches (batch_size >= "
        "n_train: mini-batches mix their curvature pairs).")
    lr: float = Field(3e-3, gt=0, le=MAX_LEARNING_RATE, description="Learning rate.", json_schema_extra=LEARNING_RATE)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam).")
    weight_decay: float = Field(0.0, ge=0, le=MAX_LEARNING_RATE, json_schema_extra=WEIGHT_DECAY,
                                description="L2 weight decay (coupled, as in torch.optim).")
    batch_size: int = Field(128, ge=1, le=MAX_POINTS, description="Mini-batch size (capped at n_train).",
                            json_schema_extra=POINTS)
    steps: int = Field(2000, ge=1, le=MAX_STEPS, json_schema_extra=STEPS,
                       description="Optimiser steps (the most, when stop_at_margin stops training earlier).")
    stop_at_margin: float | None = Field(
        None, gt=0, le=MAX_LENGTH, json_schema_extra=why(f"a positive logit margin up to {MAX_LENGTH:g}"),
        description="Stop training once every training point has margin z_y - max_{j != y} z_j >= this value "
        "(y its true class, so a misclassified point has a negative margin), as in 'trained until a margin is "
        "reached' (Melamed et al. 2023). Checked on the whole training set at the loss-log cadence "
        "(every train.steps // 200 steps); the final snapshot is then taken at the stopping step. "
        "Default none: train for train.steps.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available, else CPU.")
    adversarial: AdversarialTrainingSpec = AdversarialTrainingSpec()


SNAPSHOTS = why(f"at most {MAX_SNAPSHOTS:,} snapshots; each is stored, measured and drawn")


class SnapshotSpec(StrictModel):
    schedule: Literal["log", "every"] = Field(
        "log",
        description="log: `count` snapshots spread log-uniformly over the steps (dense early, "
        "where the fast 'clinging' phase happens); every: one every `every` steps.",
    )
    count: int = Field(24, ge=2, le=MAX_SNAPSHOTS, json_schema_extra=SNAPSHOTS,
                       description="Snapshots for the log schedule (step 0 and the last step included).")
    every: int = Field(100, ge=1, le=MAX_STEPS, description="Interval for the every schedule.", json_schema_extra=STEPS)


class ThresholdSpec(StrictModel):
    """Where the verdict table draws its lines. Nothing is hidden in code: change them here."""

    clinging_fraction: float = Field(
        0.5, ge=0, le=1,
        description="The dimpled model predicts the boundary clings to the manifold: at least this "
        "share of the manifold's area has the boundary within clinging_epsilon.",
    )
    tangent_ratio: float = Field(
        0.5, gt=0, le=MAX_LENGTH,
        description="The dimpled model predicts gradients roughly perpendicular to the manifold: "
        "RMS tangent fraction / sqrt(k/n) (1 = a random direction) at most this.",
    )
    tangent_along: float = Field(
        0.5, gt=0, lt=1,
        description="The gradient reads as lying 'along the manifold' when RMS tau^2 is more than "
        "this fraction of the way from the random value k/n to 1 (fully tangent).",
    )
    stretch_alignment: float = Field(
        0.7, gt=0, le=1,
        description="The free adversarial direction 'follows the most stretched feature direction' "
        "when the mean |<delta/||delta||, v_1>| is at least this.",
    )
    specificity: float = Field(
        2.0, gt=1, le=MAX_LENGTH,
        description="Manifold specificity MS above this = the manifold is specially robust "
        "(dimpled); below 1/this = the manifold directions are the weak ones; between = a "
        "dimension effect only (the critique).",
    )


# The attack modes and losses are the attack package's own lists (one definition each).
AttackMode = Literal[MODES]


_SEARCH = SearchBudget()  # the search's own defaults (simulator.attacks.minimal_search) are the scene's


class SearchSpec(StrictModel):
    """How hard the minimal-distance search looks beyond the greedy walk, and the certified
    lower bounds (DESIGN.md section 8): every distance is reported as a bracket [lower, upper]."""

    directions: int = Field(_SEARCH.directions, ge=2, le=100_000, json_schema_extra=why("at most 100,000 probes"),
                            description="Directions probed on the sphere of a subspace of dimension <= 3 "
                            "(an exhaustive direction search; a 1-D subspace has two).")
    starts: int = Field(_SEARCH.starts, ge=0, le=1000, json_schema_extra=why("at most 1,000 random starts"),
                        description="Seeded random rays per point in larger subspaces, besides the greedy walk.")
    march_steps: int = Field(_SEARCH.march_steps, ge=2, le=10_000, json_schema_extra=why("at most 10,000 probes"),
                             description="Probes per ray between the lower and the upper bound.")
    walk_rounds: int = Field(_SEARCH.walk_rounds, ge=0, le=1000, json_schema_extra=why("at most 1,000 rounds"),
                             description="Boundary-walk rounds from the best rays towards the nearest boundary point.")
    bisect_steps: int = Field(_SEARCH.bisect_steps, ge=1, le=60,
                              json_schema_extra=why("at most 60 halvings; float64 runs out of digits after about 60"),
                              description="Bisection halvings of every bracket the search finds along a ray.")
    tolerance: float = Field(_SEARCH.tolerance, gt=0, lt=1,
                             description="A point is settled when (upper - lower) <= tolerance x upper; "
                             "settled points skip the ray search.")
    certify: bool = Field(_SEARCH.certify, description="Compute certified lower bounds (else every lower bound is 0).")

    def budget(self) -> SearchBudget:
        return SearchBudget(**self.model_dump())


class AttackSpec(StrictModel):
    """Minimal-norm attacks in each subspace (greedy projected L2 PGD, then a global search and
    certified lower bounds; DESIGN.md section 4 items 3-4, section 8)."""

    enabled: bool = Field(True, description="Run the attacks at the end of `sim run` (`sim attack RUN` runs them alone).")
    n_points: int | None = Field(None, ge=1, le=MAX_POINTS, json_schema_extra=POINTS,
                                 description="Test points attacked; default measure.n_points.")
    modes: list[AttackMode] = Field(
        list(MODES), min_length=1, max_length=len(MODES),
        description="Subspaces: free, the tangent space (on) and its complement (off), a fresh random "
        "k-dim subspace per point (random_on) and its complement, k random input coordinates "
        "(coordinate_on) and the rest. MS needs on, off, random_on and random_off.",
    )
    step_size: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
        description="L2 step of the walk; default 0.01 x the data radius (distances overshoot "
        "by less than one step before bisection)."
    )
    max_steps: int = Field(1000, ge=1, le=MAX_ATTACK_STEPS, json_schema_extra=ATTACK_STEPS,
                           description="Steps before a point counts as 'no adversarial found'.")
    refine_steps: int = Field(10, ge=0, le=200, description="Bisection iterations on the final segment.",
                              json_schema_extra=why("at most 200 halvings; float64 runs out of digits after about 60"))
    normal_rounds: int = Field(
        2, ge=0, le=100, json_schema_extra=why("at most 100 rounds"), description="Extra rounds that turn the found perturbation towards the boundary normal "
        "(0 = the plain greedy walk); they close the last ~1% to the nearest boundary point."
    )
    loss: Literal[LOSSES] = Field("margin", description="Objective: the margin (DESIGN.md) or cross-entropy.")
    search: SearchSpec = SearchSpec()
    bootstrap: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples (over points) for the MS interval.",
                           json_schema_extra=why("at most 100,000 resamples; each is a step of a Python loop"))
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the bootstrap interval.")
    every_snapshot: bool = Field(False, description="Also attack every snapshot (slower), not only the last.")
    check_with_deepfool: bool = Field(
        True, description="Recompute the free distances with DeepFool (a second method) and report the agreement."
    )
    robust_epsilons: list[Annotated[float, Field(ge=MIN_LENGTH, le=MAX_LENGTH)]] | None = Field(
        None, max_length=100, json_schema_extra=why(f"at most 100 radii; {LENGTH_LIMIT}"), description="L2 radii (input units) at which robust accuracy is reported (share of attacked "
        "points classified correctly and with free distance above the radius); default 0.025, 0.05, 0.1 "
        "and 0.2 x the data radius, plus train.adversarial.epsilon when adversarial training is on.")


class MeasureSpec(StrictModel):
    """Geometry measurements after training (exact definitions: docs/DESIGN.md section 4)."""

    enabled: bool = Field(True, description="Measure at the end of `sim run` (`sim measure RUN` can redo it).")
    n_points: int = Field(
        200, ge=1, le=MAX_POINTS, json_schema_extra=POINTS,
        description="Test points used for per-point measurements (the first n_points of the test set)."
    )
    height_resolution: int = Field(
        32, ge=4, le=4096,
        description="Chart grid points per axis for the height field on every measured snapshot. "
        "When resolution^k exceeds height_max_points (high k), resolution^2 area-uniform random "
        "chart points are used instead (as many as a 2-D grid).",
    )
    final_height_resolution: int = Field(
        96, ge=4, le=4096, description="Finer grid for the last snapshot (its field is saved for renders)."
    )
    height_max_points: int = Field(
        20000, ge=16, le=MAX_POINTS, json_schema_extra=POINTS,
        description="Cap on height-field points per snapshot (grid or random sample)."
    )
    height_every: int = Field(
        2, ge=1, le=MAX_SNAPSHOTS, json_schema_extra=SNAPSHOTS,
        description="Height field on every height_every-th snapshot (always the first and last); "
        "the tangent fraction runs on every snapshot, the stretch spectrum every `stretch_every`-th.",
    )
    stretch_every: int = Field(
        1, ge=1, le=MAX_SNAPSHOTS, json_schema_extra=SNAPSHOTS,
        description="Stretch spectrum on every stretch_every-th snapshot (always the first and last): at "
        "high n and k its per-point Jacobian eigenproblems can cost more than training.",
    )
    t_max: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
        description="How far along the normal to look for the boundary; default 0.5 x the data radius."
    )
    bracket_steps: int = Field(
        24, ge=2, le=10_000, json_schema_extra=why("at most 10,000 evaluations per side of each normal line"),
        description="Evaluations per side along each normal line before bisection (a crossing "
        "narrower than t_max/bracket_steps can be missed)."
    )
    tolerance: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH, description="Bisection tolerance on the boundary height; default t_max / 1000."
    )
    clinging_epsilon: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH, description="|h| below this counts as clinging; default 0.05 x the data radius."
    )
    near_data_radius: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
        description="A chart point is 'near data' within this distance of a training point; default "
        "2 x the median nearest-neighbour distance between training points (median over at most 2048 "
        "training points drawn at random, each to its nearest among all).",
    )
    attacks: AttackSpec = AttackSpec()
    thresholds: ThresholdSpec = ThresholdSpec()


class CameraSpec(StrictModel):
    azimuth: float = Field(35.0, ge=-360, le=360, description="Degrees around the vertical axis of the render frame.")
    elevation: float = Field(22.0, ge=-90, le=90,
                             description="Degrees above the frame's horizontal plane; low angles show dimples.")
    zoom: float = Field(1.0, gt=0, le=1000, description="Camera zoom factor.")


class RenderSpec(StrictModel):
    """Pictures: the first-look cross-section, 3-D boundary renders, animations (pyvista)."""

    first_look: bool = Field(True, description="Write the cross-section figure at the end of `sim run`.")
    cross_section_half_width: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH, description="Half-width of the cross-section window; default 0.6 x the data's radius."
    )
    cross_section_resolution: int = Field(200, ge=16, le=2000, description="Grid cells per side of the cross-section.")
    cross_section_snapshots: list[Annotated[int, Field(ge=-MAX_SNAPSHOTS, le=MAX_SNAPSHOTS)]] | None = Field(
        None, min_length=1, max_length=100, json_schema_extra=why("at most 100 panels, indices within the snapshots"), description="Snapshot indices drawn in the cross-section figure (negative counts "
        "from the end, e.g. [0, -1]); default the first, a middle and the last."
    )
    dpi: int = Field(120, ge=30, le=600, description="Figure resolution.")
    three_d: bool = Field(True, description="Render the final boundary in 3-D (PNG + .vtp meshes) at the end of `sim run`.")
    animation: bool = Field(True, description="Write the training animation (GIF and MP4) at the end of `sim run`.")
    grid_resolution: int = Field(
        96, ge=8, le=512, description="Points per axis of the 3-D grid on which the margin is evaluated "
        "(marching cubes); the isosurface is accurate to about one grid spacing."
    )
    padding: float = Field(0.15, ge=0, le=100, description="n = 3: the data's bounding box is padded by this fraction per side.")
    slice_point: int | None = Field(
        None, ge=0, le=MAX_POINTS, description="n > 3: index of the training point the 3-D slice passes through; default "
        "the one nearest the chart-box centre."
    )
    slice_half_width: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH, description="n > 3: half-size of the slice box; default 0.6 x the data radius."
    )
    camera: CameraSpec = CameraSpec()
    orbit: bool = Field(False, description="Animation: orbit the camera slowly (one turn over the animation).")
    fps: int = Field(6, ge=1, le=60, description="Animation frames per second (one frame per snapshot).")
    window_size: list[Annotated[int, Field(ge=64, le=4096)]] = Field(
        [800, 600], min_length=2, max_length=2, description="Render size in pixels [width, height]."
    )
    report: bool = Field(True, description="Write report.md and report.html (self-contained, offline) at the end of `sim run`.")
    adversarial_paths: int = Field(
        0, ge=0, le=10_000, description="Draw this many free adversarial perturbations (arrows) in the 3-D render."
    )


class RelabelSpec(StrictModel):
    """Features-not-bugs relabelling (Ilyas et al. 2019, arXiv 1905.02175): every training point
    becomes a targeted adversarial example labelled with its *target* class, a fresh model is
    trained on that set alone and tested on the clean test set. Above chance = the perturbations
    carry features that generalise; chance = they are bugs of the one model."""

    enabled: bool = Field(False, description="Run the relabelling experiment at the end of `sim run`.")
    target: Literal["random", "next"] = Field(
        "random", description="Target class: uniformly random (Ilyas's D_rand; the original features carry "
        "no information about it) or (y + 1) mod C (D_det; they point the other way).")
    epsilon: float | None = Field(
        None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
        description="L2 budget of the targeted attack (input units); default 0.1 x the data radius.")
    steps: int = Field(100, ge=1, le=MAX_ATTACK_STEPS, description="Targeted PGD steps.", json_schema_extra=ATTACK_STEPS)
    step_size: float | None = Field(None, ge=MIN_LENGTH, le=MAX_LENGTH, json_schema_extra=LENGTH,
                                    description="PGD step length; default 2.5 x epsilon / steps.")


class SeedAgreementSpec(StrictModel):
    """Train several seeds of the scene on the same data and compare their boundaries (DESIGN.md
    section 4, item 6)."""

    enabled: bool = Field(False, description="Run the seed-agreement experiment at the end of `sim run`.")
    count: int = Field(4, ge=2, le=64, description="Number of models (seeds scene.seed, scene.seed + 1, ...).")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, min_length=2, max_length=64, json_schema_extra=why(f"2 to 64 seeds, each from 0 to {MAX_SEED}"), description="Explicit training seeds (initialisation and batch order); overrides count. "
        "The data always come from the scene's seed.")
    n_points: int = Field(20000, ge=100, le=MAX_POINTS, json_schema_extra=POINTS, description="Random points on the manifold and in the render frame "
                          "at which disagreement is measured.")


class ExperimentsSpec(StrictModel):
    """The classic experiments beyond one training run (each off by default)."""

    relabel: RelabelSpec = RelabelSpec()
    seed_agreement: SeedAgreementSpec = SeedAgreementSpec()


# Room left below the usual 255-byte file-name limit for the staging prefix and suffix (".<name>.partial-" + 8 random characters).
MAX_RUN_NAME_BYTES = 200


def check_run_name(name: str) -> str:
    """`name` if it can name a run folder; ValueError saying why not."""
    if (not name or name.startswith(".") or any(c in name for c in "/\\\0")
            or len(name.encode("utf-8", "surrogatepass")) > MAX_RUN_NAME_BYTES):
        raise ValueError(f"{name!r} is not usable as a folder name; use letters, digits, '_' and '-' "
                         f"(at most {MAX_RUN_NAME_BYTES} bytes, not starting with '.')")
    return name


class RunFile(StrictModel):
    """What every experiment file has: a run name, a description, a seed, and its resolved YAML."""

    name: str | None = Field(None, description="Run name; default the file name without extension.")
    description: str = Field("", description="One line shown by `sim scenes list`.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds every random stage: same seed, same numbers.",
                      json_schema_extra=SEED)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value):
        if value is not None:
            check_run_name(value)
        return value

    # Fields added after runs of this kind were first stored: to_yaml leaves them out while they
    # hold their defaults, so those runs' scene.yaml digests (simulator.runs.integrity) still match.
    LATER_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def to_yaml(self) -> str:
        """The resolved file (defaults filled in), as written beside every run."""
        return yaml.safe_dump(self.without_later_defaults(self.model_dump(mode="json")), sort_keys=False)

    def without_later_defaults(self, resolved: dict) -> dict:
        """`resolved` without the LATER_FIELDS that hold their defaults."""
        for section, fields in self.LATER_FIELDS.items():
            spec = getattr(self, section)
            for name in fields:
                if section in resolved and name in resolved[section] and \
                        getattr(spec, name) == type(spec).model_fields[name].default:
                    resolved[section].pop(name)
        return resolved


class Scene(RunFile):
    """One synthetic experiment. Every section is optional except `manifold` and `labels`."""

    manifold: ManifoldSpec
    labels: LabelSpec
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    snapshots: SnapshotSpec = SnapshotSpec()
    measure: MeasureSpec = MeasureSpec()
    render: RenderSpec = RenderSpec()
    experiments: ExperimentsSpec = ExperimentsSpec()

    LATER_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"model": ("batch_norm",)}

    @model_validator(mode="after")
    def _sections_agree(self):
        self.labels.check_fits(self.manifold_dim(), self.manifold.family)
        attacked = self.measure.attacks.n_points
        if attacked is not None and attacked > self.data.n_test:
            raise ValueError(
                f"measure.attacks.n_points: {attacked} is larger than data.n_test {self.data.n_test}"
            )
        if self.measure.n_points > self.data.n_test:
            raise ValueError(
                f"measure.n_points: {self.measure.n_points} is larger than data.n_test {self.data.n_test}"
            )
        if self.model.batch_norm and min(self.train.batch_size, self.data.n_train) < 2:
            raise ValueError(
                "model.batch_norm: batch norm normalises each unit over its batch, which needs at least 2 "
                "points; raise train.batch_size to 2 or more, or set model.batch_norm: false"
            )
        snapshots = self.snapshot_count()
        if snapshots > MAX_SNAPSHOTS:
            raise ValueError(
                f"snapshots.every: {self.snapshots.every} takes {snapshots:,} snapshots of train.steps "
                f"{self.train.steps:,}, more than {MAX_SNAPSHOTS:,} (each is stored, measured and drawn); "
                f"raise snapshots.every to at least {-(-self.train.steps // (MAX_SNAPSHOTS - 2))} or use "
                f"schedule: log"
            )
        return self

    def snapshot_count(self) -> int:
        """Snapshots training will take (at most; the log schedule may merge a few early ones)."""
        if self.snapshots.schedule == "every":
            return self.train.steps // self.snapshots.every + 2  # step 0 .. and the last step
        return min(self.snapshots.count, self.train.steps + 1)

    def manifold_dim(self) -> int:
        return getattr(self.manifold, "dim", 2)  # torus and swiss roll are always 2-D

    def outline(self) -> tuple[str, str]:
        """(data, labels) in a few words, for listings: e.g. ("flat k=2 n=3", "clusters")."""
        return (f"{self.manifold.family} k={self.manifold_dim()} n={self.manifold.ambient_dim}", self.labels.rule)
