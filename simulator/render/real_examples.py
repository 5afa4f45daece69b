"""examples.png of a real-image run: each attacked image beside its minimal perturbation in
every attack mode (matplotlib PNG), drawn from the stored examples.

    plot_examples(examples, metrics, "examples.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.formatting import fmt
from simulator.render.pyplot import pyplot, save_png
from simulator.report.attack_tables import PAPER_ROWS


def _image(flat: np.ndarray, shape) -> np.ndarray:
    """(n,) -> (H, W) or (H, W, 3) for imshow."""
    image = flat.reshape(tuple(int(v) for v in shape))
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def plot_examples(examples: dict, metrics: dict, path: Path, dpi: int = 120) -> Path:
    """One row per attacked image: the image, then its minimal perturbation in every mode, scaled
    to its own largest pixel change (grey/white = no change), titled with the L2 norm and the new class."""
    plt = pyplot()
    shape = metrics["real"]["dataset"]["image_shape"]
    names = metrics["real"]["dataset"].get("image_names") or []
    indices = metrics["real"]["test_indices"]
    modes = list(examples["modes"])
    rows, columns = len(examples["x"]), 1 + len(modes)
    figure, axes = plt.subplots(rows, columns, figsize=(1.75 * columns, 1.95 * rows + 0.5), squeeze=False)
    for row in range(rows):
        axis = axes[row, 0]
        picture = _image(examples["x"][row], shape)
        axis.imshow(np.clip(picture, 0, 1), cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
        title = names[indices[row]] if len(names) > indices[row] else f"test image {indices[row]}"
        axis.set_title(f"{title}\nclass {int(examples['label'][row])}", fontsize=7)
        for column, mode in enumerate(modes, start=1):
            axis = axes[row, column]
            result = examples["modes"][mode]
            delta = _image(result["delta"][row], shape)
            distance = result["distance"][row]
            scale = float(np.abs(delta).max()) or 1.0
            if delta.ndim == 2:
                axis.imshow(delta, cmap="RdBu_r", vmin=-scale, vmax=scale)
            else:
                axis.imshow(np.clip(0.5 + delta / (2 * scale), 0, 1))
            label = PAPER_ROWS[mode][0].replace(" PGD", "")
            found = (f"L2 {fmt(distance, 3)} -> class {int(result['adversarial_label'][row])}" if np.isfinite(distance)
                     else "not found")
            axis.set_title(f"{label}\n{found}", fontsize=6)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{metrics['scene']}: minimal perturbations per attack mode (each scaled to its own largest "
                    f"pixel change)", fontsize=8)
    figure.tight_layout()
    return save_png(figure, path, dpi)
