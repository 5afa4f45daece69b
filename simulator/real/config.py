"""The real-image experiment file: a typed, validated description (same style as scene.py).

    kind: real
    dataset: {source: digits}
    autoencoder: {latent_dim: 10, steps: 3000}
    classifier: {architecture: mlp, steps: 2000}
    measure: {n_points: 100, attacks: {...same keys as a scene's measure.attacks...}}

Every field has a documented default; unknown keys are an error. The attack and threshold
sections are the synthetic scene's own `AttackSpec` and `ThresholdSpec`, so both kinds of run
are attacked and judged with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError

from simulator.errors import SceneError
from simulator.scene import AttackSpec, RunFile, ThresholdSpec, _Strict, _set_dotted, parse_yaml

DATASET_SOURCES = ("digits", "fashion_mnist", "mnist", "idx", "cifar10", "folder")


class DatasetSpec(_Strict):
    source: Literal["digits", "fashion_mnist", "mnist", "idx", "cifar10", "folder"] = Field(
        "digits",
        description="digits: scikit-learn's 8x8 digits (shipped, 1797 images); fashion_mnist: the idx files "
        "of Debian's dataset-fashion-mnist package, or `path`; mnist / idx: a folder with the four "
        "MNIST-style idx files (.gz or raw; torchvision's <root>/MNIST/raw layout works); cifar10: "
        "the python batches (cifar-10-batches-py); folder: one subfolder of images per class.",
    )
    path: str | None = Field(None, description="Local folder of the data (required for mnist, idx, cifar10, folder).")
    n_train: int | None = Field(
        None, ge=2, description="Use a seeded random subset of this many training images; default all."
    )
    n_test: int | None = Field(
        None, ge=1, description="Use a seeded random subset of this many test images; default all."
    )
    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="digits and folder without a train/test split: share held out for testing."
    )
    image_size: list[Annotated[int, Field(ge=4, le=1024)]] | None = Field(
        None, min_length=2, max_length=2, description="folder: resize every image to [height, width]; default 32 x 32."
    )
    grayscale: bool = Field(False, description="folder: convert images to one channel.")


class AutoencoderSpec(_Strict):
    latent_dim: int = Field(10, ge=1, description="k: the bottleneck, i.e. the dimension of the estimated manifold.")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        [256, 128], min_length=1, description="Encoder widths (the decoder mirrors them)."
    )
    activation: Literal["gelu", "elu", "tanh", "softplus", "relu"] = Field(
        "gelu", description="Hidden activation. A smooth one keeps the decoder Jacobian full-rank (relu can zero "
        "columns); elu is ~5x slower on CPUs (denormal numbers)."
    )
    steps: int = Field(3000, ge=1, description="Adam steps.")
    batch_size: int = Field(128, ge=1, description="Mini-batch size (capped at n_train).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay.")


class ClassifierSpec(_Strict):
    architecture: Literal["mlp", "cnn"] = Field(
        "mlp", description="mlp: the simulator's MLP on flattened pixels; cnn: two conv+pool layers and a dense layer."
    )
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        [256, 256], min_length=1,
        description="mlp: hidden widths; cnn: widths of the dense layers after the convolutions."
    )
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        [16, 32], min_length=1, description="cnn: channels of the conv layers (each followed by 2x2 max-pooling)."
    )
    activation: Literal["relu", "tanh", "gelu", "softplus"] = Field("relu", description="Hidden activation.")
    steps: int = Field(2000, ge=1, description="Adam steps.")
    batch_size: int = Field(128, ge=1, description="Mini-batch size (capped at n_train).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay.")


class RealMeasureSpec(_Strict):
    n_points: int = Field(
        100, ge=1, description="Test images measured and attacked (correctly classified ones by default)."
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
    dataset: DatasetSpec = DatasetSpec()
    autoencoder: AutoencoderSpec = AutoencoderSpec()
    classifier: ClassifierSpec = ClassifierSpec()
    measure: RealMeasureSpec = RealMeasureSpec()


def real_experiment_from_dict(raw: Any, source: str = "<experiment>", default_name: str = "real",
                              overrides: dict[str, Any] | None = None) -> RealExperiment:
    """Validate an experiment given as a mapping; SceneError names the file, field and problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SceneError(f"{source}: the experiment is a {type(raw).__name__}, but it must be a mapping "
                         f"(see docs/real_images.md).")
    raw = dict(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        experiment = RealExperiment.model_validate(raw)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key (see docs/real_images.md for the allowed ones)"
            elif "input" in item and not isinstance(item["input"], dict):
                message = f"{item['input']!r}: {message}"
            lines.append(f"{source}: {where + ': ' if where else ''}{message}")
        raise SceneError("\n".join(lines)) from None
    if experiment.name is None:
        experiment = experiment.model_copy(update={"name": default_name})
    return experiment


def load_real_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> RealExperiment:
    """Read and validate a real-image experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: experiment file not found. Pass a YAML file with `kind: real` "
                         f"(see docs/real_images.md for an example).")
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise SceneError(f"{path}: not valid YAML ({error}). Fix the syntax and try again.") from None
    return real_experiment_from_dict(raw, source=str(path), default_name=path.stem, overrides=overrides)
