"""Figures and the HTML report of a real-image run (the attack histogram is `render.attack_plots`'s).

    plot_examples(examples, metrics, "examples.png")   each image with its minimal perturbation per mode
    real_report_html(metrics, run_dir)                  report.html: one self-contained page
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.runs.io import atomic_path


def _image(flat: np.ndarray, shape) -> np.ndarray:
    """(n,) -> (H, W) or (H, W, 3) for imshow."""
    image = flat.reshape(tuple(int(v) for v in shape))
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def plot_examples(examples: dict, metrics: dict, path: Path, dpi: int = 120) -> Path:
    """One row per attacked image: the image, then its minimal perturbation in every mode, scaled
    to its own largest pixel change (grey/white = no change), titled with the L2 norm and the new class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.report.attack_tables import PAPER_ROWS

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
            found = (f"L2 {distance:.3g} -> class {int(result['adversarial_label'][row])}" if np.isfinite(distance)
                     else "not found")
            axis.set_title(f"{label}\n{found}", fontsize=6)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{metrics['scene']}: minimal perturbations per attack mode (each scaled to its own largest "
                    f"pixel change)", fontsize=8)
    figure.tight_layout()
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    plt.close(figure)
    return Path(path)


def real_report_html(metrics: dict, folder: Path) -> str:
    """A self-contained report.html for a real run: set-up, verdict, attack table, figures."""
    from simulator.real.experiment import real_setup_rows, specificity_line
    from simulator.report.run_report import Section, attack_html, figure_html, html_page, html_table, verdict_html

    real = metrics["real"]
    folder = Path(folder)
    setup = html_table(real_setup_rows(metrics), ["item", "value"])
    figures = [figure_html(folder / "attack_norms.png", "Minimal adversarial distances per attack mode.")]
    if (folder / "examples.png").is_file():
        figures.append(figure_html(folder / "examples.png",
                                   "Attacked images and their minimal perturbation in every mode."))
    sections = [
        Section("Set-up", setup),
        Section("Verdict", verdict_html(metrics["geometry"]["snapshots"][-1]["verdict"])),
        Section("Attacks", (f'<p class="note">{specificity_line(metrics)}</p>\n'
                            if real.get("manifold") == "none" else "") + attack_html(metrics["attacks"])),
        Section("Figures", "\n".join(figures)),
    ]
    subtitle = f"real images: {real['dataset']['name']}, n = {real['ambient_dim']}, k = {real['subspace_dim']}" \
        if "subspace_dim" in real else f"real images: {real['dataset']['name']}"
    return html_page(f"{metrics['scene']}", sections, subtitle=subtitle)
