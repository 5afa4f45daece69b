"""The paper's real-image experiment, with the critique's random-subspace control.

    experiment = load_real_experiment("scenes/real_digits.yaml")      # or RealExperiment(...)
    metrics = run_real_experiment(experiment, out_root="renders")      # writes renders/<name>/

Steps: load the images; train the autoencoder (k-dim bottleneck) and the classifier on the
training images; take the first `measure.n_points` test images the classifier gets right; at
each, the decoder-Jacobian tangent space (batched forward mode, `autoencoder.py`); the tangent
fraction tau of the margin gradient against sqrt(k/n); the greedy projected PGD in every mode
with MS and its bootstrap interval (`simulator.attack_report.attack_model`, the same code and
settings as synthetic runs); the verdict rows.

metrics.json has the synthetic run's fields where they mean the same thing
("training", "geometry" -> "snapshots"[-1] -> "tangent" / "stretch" / "verdict",
"attacks" -> "final" -> "modes" / "manifold_specificity" / ...), plus "kind": "real" and a
"real" section (dataset, autoencoder reconstruction error, Jacobian spectrum, k, n).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from simulator.attack_report import attack_markdown, attack_model
from simulator.real.autoencoder import decoder_tangent_bases, spectrum_summary, train_autoencoder
from simulator.real.classifiers import train_classifier
from simulator.real.config import RealExperiment
from simulator.real.datasets import ImageDataset, load_dataset
from simulator.attack_report import attack_settings
from simulator.measure import data_radius, tangent_and_stretch
from simulator.runs import RUN_FORMAT_VERSION, atomic_path, staged_run_dir, write_json, write_text
from simulator.train import resolve_device
from simulator.verdict import verdict_rows


def attack_view(name: str, seed: int, attack_spec, x: np.ndarray, bases: np.ndarray, dpi: int = 120):
    """The few fields of a `Run` that `attack_model` and `plot_attack_norms` read, for points and
    tangent bases that do not come from a synthetic run directory."""
    scene = SimpleNamespace(name=name, seed=seed, measure=SimpleNamespace(attacks=attack_spec),
                            render=SimpleNamespace(dpi=dpi))
    return SimpleNamespace(scene=scene, data=SimpleNamespace(x_test=x, tangent_test=bases))


def select_points(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, count: int,
                  correctly_classified_only: bool = True) -> np.ndarray:
    """Indices of the first `count` test points (only those classified correctly, if asked)."""
    with torch.no_grad():
        predicted = torch.cat([model(part).argmax(1) for part in x.split(4096)])
    eligible = torch.nonzero(predicted == y)[:, 0] if correctly_classified_only else torch.arange(len(x))
    return eligible[:count].cpu().numpy()




def run_real_experiment(experiment: RealExperiment, out_root: str | Path = "renders",
                        log: Callable[[str], None] | None = None, data: ImageDataset | None = None) -> dict:
    """Run the experiment end to end and write `<out_root>/<experiment.name>/` atomically.

    `data` replaces the configured data set (tests, notebooks). Returns the metrics dict (also in
    metrics.json), with "path" added.
    """
    log = log or (lambda message: None)
    started = time.perf_counter()
    device = resolve_device(experiment.device)
    spec, seed = experiment.dataset, experiment.seed
    if data is None:
        data = load_dataset(spec.source, spec.path, spec.n_train, spec.n_test, seed, spec.test_fraction,
                            tuple(spec.image_size) if spec.image_size else None, spec.grayscale)
    x_train, x_test = data.flat("train"), data.flat("test")
    n, k = data.ambient_dim, experiment.autoencoder.latent_dim
    if k >= n:
        from simulator.errors import SceneError

        raise SceneError(f"autoencoder.latent_dim: {k} must be smaller than the image dimension n = {n}")
    log(f"{data.name}: {len(x_train)} train / {len(x_test)} test images of shape {data.image_shape} (n = {n})")

    ae = experiment.autoencoder
    autoencoder, ae_info = train_autoencoder(x_train, k, ae.hidden, ae.activation, ae.steps, ae.batch_size, ae.lr,
                                             ae.weight_decay, seed, device, x_test=x_test)
    log(f"autoencoder k = {k}: test RMSE {ae_info['reconstruction']['test']['rmse']:.4f} "
        f"({ae_info['seconds']:.1f} s)")
    cl = experiment.classifier
    classifier, cl_info = train_classifier(x_train, data.y_train, data.image_shape, cl.architecture, cl.hidden,
                                           cl.channels, cl.activation, cl.steps, cl.batch_size, cl.lr,
                                           cl.weight_decay, seed, device, x_test, data.y_test, data.n_classes)
    log(f"classifier ({cl.architecture}): test accuracy {cl_info['test_accuracy']:.3f} ({cl_info['seconds']:.1f} s)")

    measure = experiment.measure
    x_all = torch.as_tensor(x_test, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(data.y_test, dtype=torch.long, device=device)
    chosen = select_points(classifier, x_all, y_all, measure.attacks.n_points or measure.n_points,
                           measure.correctly_classified_only)
    if len(chosen) == 0:
        from simulator.errors import TrainingError

        raise TrainingError("The classifier gets no test image right, so there is nothing to attack; train it longer.")
    x = x_all[chosen]

    jacobian_started = time.perf_counter()
    with torch.no_grad():
        codes = autoencoder.encode(x)
        reconstructions = autoencoder.decode(codes)
    bases, singular_values = decoder_tangent_bases(autoencoder.decoder, codes)
    jacobian_seconds = time.perf_counter() - jacobian_started
    log(f"decoder Jacobians at {len(x)} test images: {jacobian_seconds:.2f} s (forward mode)")

    measure_started = time.perf_counter()
    geometry, tau = tangent_and_stretch(classifier, x, bases)
    geometry = {"step": cl.steps, "test_accuracy": cl_info["test_accuracy"], **geometry}
    geometry_seconds = time.perf_counter() - measure_started

    radius = data_radius(x_train)
    settings = attack_settings(measure.attacks, seed, len(chosen), radius)
    x_np, bases_np = x.cpu().numpy(), bases.cpu().numpy()
    view = attack_view(experiment.name, seed, measure.attacks, x_np, bases_np, experiment.dpi)
    attack_started = time.perf_counter()
    report = attack_model(classifier, view, settings, device)
    report["step"] = cl.steps
    attack_seconds = time.perf_counter() - attack_started
    log(f"attacks: {attack_seconds:.1f} s; MS = {report.get('manifold_specificity')}")
    geometry["verdict"] = verdict_rows(geometry, measure.thresholds.model_dump(), report)

    distances = report.pop("distances")
    to_reconstruction = (x - reconstructions).norm(dim=1).cpu().numpy()
    training_final = {"step": cl.steps, "loss": cl_info["loss"], "train_accuracy": cl_info["train_accuracy"],
                      "test_accuracy": cl_info["test_accuracy"]}
    metrics = {
        "format_version": RUN_FORMAT_VERSION,
        "kind": "real",
        "scene": experiment.name,
        "device": str(device),
        "training": {"seconds": cl_info["seconds"], "steps": cl.steps, "final": training_final,
                     "history": cl_info["history"], "architecture": cl.architecture},
        "snapshots": [training_final],
        "geometry": {"settings": {"n_points": len(chosen), "data_radius": radius,
                                  "thresholds": measure.thresholds.model_dump(),
                                  "correctly_classified_only": measure.correctly_classified_only},
                     "seconds": geometry_seconds, "device": str(device), "snapshots": [geometry]},
        "attacks": {"settings": settings, "seconds": attack_seconds, "device": str(device), "final": report,
                    "snapshots": [report]},
        "real": {
            "dataset": data.describe(),
            "latent_dim": k,
            "ambient_dim": n,
            "test_indices": chosen.tolist(),
            "autoencoder": {"reconstruction": ae_info["reconstruction"], "seconds": ae_info["seconds"],
                            "steps": ae_info["steps"], "output": ae_info["output"], "history": ae_info["history"]},
            "jacobian": {"method": "torch.func.vmap(jacfwd(decoder)), QR with diag(R) >= 0",
                         "seconds": jacobian_seconds, **spectrum_summary(singular_values)},
            "distance_to_reconstruction": {"median": float(np.median(to_reconstruction)),
                                           "mean": float(np.mean(to_reconstruction))},
        },
    }
    metrics["seconds"] = time.perf_counter() - started

    final_path = Path(out_root) / experiment.name
    with staged_run_dir(final_path) as folder:
        write_text(folder / "scene.yaml", experiment.to_yaml())
        write_json(folder / "metrics.json", metrics)
        write_json(folder / "verdict.json", geometry["verdict"])
        with atomic_path(folder / "attack_distances.npz") as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **distances)
        with atomic_path(folder / "points.npz") as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, x=x_np, y=data.y_test[chosen], test_indices=chosen, tangent_bases=bases_np,
                                singular_values=singular_values.cpu().numpy(), tau=tau,
                                reconstruction=reconstructions.cpu().numpy(), image_shape=np.array(data.image_shape))
        with atomic_path(folder / "models.pt") as temporary:
            torch.save({"autoencoder": {key: v.cpu() for key, v in autoencoder.state_dict().items()},
                        "autoencoder_config": autoencoder.config,
                        "classifier": {key: v.cpu() for key, v in classifier.state_dict().items()}}, temporary)
        write_text(folder / "report.md", real_report_markdown(metrics))
        from simulator.render.attack_plots import plot_attack_norms

        plot_attack_norms(view, distances, folder / "attack_norms.png")
    metrics["path"] = str(final_path)
    return metrics


def real_report_markdown(metrics: dict) -> str:
    """A short markdown page for one real run: set-up, the paper's table with the control rows, tau."""
    real = metrics["real"]
    data, ae, jac = real["dataset"], real["autoencoder"]["reconstruction"], real["jacobian"]
    tangent = metrics["geometry"]["snapshots"][-1]["tangent"]
    recon = ae.get("test", ae["train"])
    lines = [
        f"# {metrics['scene']} (real images: {data['name']})", "",
        f"- images: {data['n_train']} train / {data['n_test']} test, shape {data['image_shape']}, "
        f"n = {real['ambient_dim']}",
        f"- autoencoder manifold: k = {real['latent_dim']}, test RMSE per pixel {recon['rmse']:.4g}, "
        f"mean relative error {recon['mean_relative_error']:.3g}",
        f"- decoder Jacobian: median condition number {jac['median_condition_number']:.3g}, "
        f"full rank at {jac['share_full_rank']:.0%} of points",
        f"- classifier: test accuracy {metrics['training']['final']['test_accuracy']:.3f}",
        f"- tangent fraction of the margin gradient: RMS tau {tangent['rms_tau']:.3g} vs random sqrt(k/n) "
        f"{tangent['baseline_rms_tau']:.3g} (ratio {tangent['ratio_to_baseline']:.3g})", "",
        "## Minimal adversarial distances", "",
        attack_markdown(metrics["attacks"]["final"]),
        "## Verdict", "",
        "| measurement | dimpled | stretchy | measured | reading |", "|---|---|---|---|---|",
    ]
    for row in metrics["geometry"]["snapshots"][-1]["verdict"]:
        cells = (row["measurement"], row["dimpled"], row["stretchy"], row["measured"], row["reading"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
