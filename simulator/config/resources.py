"""How much memory a run will need, estimated from its settings before any data exist.

    estimate = estimate_memory(scene)          # a MemoryEstimate, bytes per part
    check_memory(scene, max_bytes=None)        # SceneError when it exceeds the available memory
    parse_memory_size("8G")                    # 8 * 2**30, for `sim run --max-memory`

The estimate counts the large arrays each stage builds (their shapes follow from the settings:
points x n inputs, tangent operators, resolution^k chart grids, resolution^3 render grids, ...), not
Python, PyTorch and plotting libraries themselves (a few hundred MB, already loaded when the
check runs). Arrays kept for the whole run (the data, the snapshots) add up; each stage's
working arrays are freed when it ends, so the peak is the kept arrays plus the largest stage.
It is an estimate: tests/test_scene_limits.py checks it against measured peaks within a small
factor, not exactly. Runs on a GPU hold their training tensors there; the estimate counts
everything as host memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from simulator.attacks.certify import CERTIFY_CHUNK_BYTES
from simulator.attacks.deepfool import DEEPFOOL_CANDIDATES
from simulator.attacks.operators import STRUCTURED_ROUNDS
from simulator.attacks.ray_search import rows_per_pass
from simulator.attacks.subspaces import random_subspace_kind
from simulator.config.real import DECODER_JACOBIAN_CHUNK_BYTES, stream_chunk
from simulator.config.scene import LBFGS_HISTORY
from simulator.errors import SceneError
from simulator.geometry.height import BRACKET_BLOCK, PROBE_CHUNK_BYTES
from simulator.geometry.stretch import JACOBIAN_CHUNK_BYTES

F64, F32, I64 = 8, 4, 8  # bytes per number

# Working-memory multipliers, rough on purpose (see the module docstring):
ADAM_COPIES = 4  # weights, gradients and Adam's two moments
# L-BFGS: weights, gradient, previous gradient, direction, the line search's trial weights and
# gradient, and two vectors per stored curvature pair (training/optimizers.LBFGS_HISTORY).
LBFGS_COPIES = 6 + 2 * LBFGS_HISTORY
ACTIVATION_COPIES = 3  # a layer's output, its activation and the gradient flowing back
ATTACK_COPIES = 12  # per point: x, delta, gradient, best delta, projections, trial points, ...
QR_COPIES = 3  # a QR factorisation holds the matrix, Q and R
STORE_COPIES = 3  # writing data.npz, its integrity digest and the reloaded copy (measured: ~3x)
EVALUATION_CHUNK = 65536  # rows per evaluation batch in training (training/loop.py)
LABEL_CHUNK = 262144  # rows per label evaluation in the height field (geometry/height.py)
DISTANCE_CHUNK = 4096  # query rows per nearest-distance block (geometry/height.py)
SUBSPACE_CHUNK = 256  # points per QR block of random subspaces (attacks/subspaces.py)
# A pretrained ImageNet network's activations, with gradients, per 224 x 224 image (rough).
PRETRAINED_BYTES_PER_IMAGE = 100 * 2**20
# The same network's forward pass without gradients, per image: the attacks' probes run
# `rows_per_pass(n)` images at once (27 at n = 150528: +462 MB peak for EfficientNet-Lite0, measured).
PRETRAINED_PROBE_BYTES_PER_IMAGE = 17 * 2**20
PRETRAINED_WEIGHT_BYTES = 5_000_000 * F32 * ADAM_COPIES
# Known sizes of the real-image data sets: (images in all, pixels per image).
DATASET_SIZES = {"digits": (1797, 64), "mnist": (70_000, 784), "fashion_mnist": (70_000, 784),
                 "idx": (70_000, 784), "cifar10": (60_000, 3072)}


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of a run in bytes: `kept` arrays live for the whole run, each of `stages`
    only while its stage runs. Keys name the arrays and the settings that size them."""

    kept: dict[str, int]
    stages: dict[str, int]

    @property
    def largest_stage(self) -> str | None:
        return max(self.stages, key=self.stages.get) if self.stages else None

    @property
    def peak(self) -> int:
        return sum(self.kept.values()) + (self.stages[self.largest_stage] if self.stages else 0)

    def breakdown(self, parts: int | None = None) -> str:
        """One line: the kept arrays (marked) and the stages, largest first; the `parts` largest only."""
        named = [(f"{name} {format_bytes(size)} (kept)", size) for name, size in self.kept.items()]
        named += [(f"{name} {format_bytes(size)}", size) for name, size in self.stages.items()]
        ordered = [text for text, size in sorted(named, key=lambda part: -part[1]) if size > 0]
        shown = ordered[:parts]
        return "; ".join(shown) + ("; ..." if len(shown) < len(ordered) else "")

    def summary(self, parts: int | None = None) -> str:
        return f"estimated peak memory {format_bytes(self.peak)}: {self.breakdown(parts)}"


# --------------------------------------------------------------------------- checking


def check_memory(config, max_bytes: int | None = None, source: str | None = None) -> MemoryEstimate:
    """The estimate of `config` (a Scene or RealExperiment); SceneError when it exceeds `max_bytes`
    or, when that is None, the memory available now (no check when that is unknown)."""
    estimate = estimate_memory(config)
    limit, what = (max_bytes, "the --max-memory limit") if max_bytes is not None else \
        (available_memory(), "memory available on this machine")
    if limit is not None and estimate.peak > limit:
        raise SceneError(
            f"{source or config.name}: this run needs an estimated {format_bytes(estimate.peak)} of memory at its "
            f"peak, more than the {format_bytes(limit)} of {what} ({estimate.breakdown()}). Make the largest "
            f"part smaller (the setting is named beside it), or pass --max-memory with a larger size if you know "
            f"the estimate is too high for this run; it is a rough estimate of the largest arrays, not a "
            f"measurement.")
    return estimate


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or None when unknown: Linux's MemAvailable,
    lowered to the room left under a cgroup (container) limit; elsewhere free physical pages."""
    available = _meminfo_available()
    if available is None:
        available = _sysconf_available()
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """cgroup v2: memory.max minus memory.current, or None (no limit, or not in a cgroup)."""
    folder = Path("/sys/fs/cgroup")
    try:
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory_size(text: str) -> int:
    """Bytes in a size such as "8G", "500M", "1.5GiB", "2048" (plain bytes); K, M, G, T are powers
    of 1024. ValueError with the accepted forms otherwise."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in ("K", "M", "G", "T") else (cleaned, "")
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a memory size; write a positive number with K, M, G or T, "
                         f"e.g. 8G or 500M")
    return int(value * _UNITS[unit])


def format_bytes(size: int) -> str:
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------- estimating


def estimate_memory(config) -> MemoryEstimate:
    """The memory estimate of a synthetic Scene or a real-image RealExperiment."""
    if getattr(config, "kind", None) == "real":
        return _real_estimate(config)
    return _scene_estimate(config)


def mlp_parameters(n_in: int, hidden: list[int], n_out: int) -> int:
    widths = [n_in, *hidden, n_out]
    return sum((a + 1) * b for a, b in pairwise(widths))


def _mlp_activations(rows: int, hidden: list[int], n_out: int) -> int:
    """Bytes of one float32 forward and backward pass of `rows` inputs through the hidden layers."""
    return rows * (sum(hidden) + n_out) * F32 * ACTIVATION_COPIES


def _scene_estimate(scene) -> MemoryEstimate:
    n, k = scene.manifold.ambient_dim, scene.manifold_dim()
    points = scene.data.n_train + scene.data.n_test
    parameters = mlp_parameters(n, list(scene.model.hidden), scene.labels.n_classes)
    data = points * (n + k + 1) * F64  # x, u, labels (data.py; tangent spaces are recomputed from u)
    snapshots = scene.snapshot_count() * parameters * F32
    kept = {"data arrays (data.n_train + n_test points x manifold.ambient_dim)": data,
            "snapshots (snapshots.*, model.hidden)": snapshots}
    stages = {"drawing the data (data.*, manifold.ambient_dim)": _data_stage(scene, points, n),
              # compressing and digesting the files, then reading them back beside the first copy
              "storing and reloading the run": STORE_COPIES * data + 2 * snapshots,
              "training (model.hidden, train.batch_size)": _training_stage(scene, points, n, k, parameters)}
    if scene.measure.enabled:
        stages["measurement (measure.*_resolution, height_max_points, bracket_steps)"] = _measure_stage(scene, n, k)
        if scene.measure.attacks.enabled:
            stages["attacks (measure.attacks.n_points x n per mode)"] = _attack_stage(
                scene.measure.attacks, scene.measure.attacks.n_points or scene.measure.n_points, n, k,
                scene.labels.n_classes, max(scene.model.hidden))
    stages["pictures (render.grid_resolution^3, cross_section_resolution^2)"] = _render_stage(scene, n)
    stages.update(_experiment_stages(scene, points, n, parameters))
    return MemoryEstimate(kept, stages)


def _data_stage(scene, points: int, n: int) -> int:
    """Drawing the data: the random isometry's QR (n x h), and a copy of the points per step
    (immersion, noise, its normal part)."""
    isometry = QR_COPIES * n * scene.manifold.host_dim() * F64 if scene.manifold.embedding == "random" else 0
    copies = 3 if scene.data.noise_std > 0 else 1
    return isometry + copies * points * n * F64


def _training_stage(scene, points: int, n: int, k: int, parameters: int) -> int:
    hidden, classes = list(scene.model.hidden), scene.labels.n_classes
    batch = min(scene.train.batch_size, scene.data.n_train)
    inputs = points * n * F32  # train and test sets as float32 tensors
    optimiser = (LBFGS_COPIES if scene.train.optimizer == "lbfgs" else ADAM_COPIES) * parameters * F32
    activations = _mlp_activations(batch, hidden, classes) + _mlp_activations(
        min(EVALUATION_CHUNK, points), hidden, classes) // ACTIVATION_COPIES
    adversarial = 0
    if scene.train.adversarial.enabled:  # the training set's tangent operator (E Q(u)), PGD state
        h = scene.manifold.host_dim()
        adversarial = (scene.data.n_train * h * k + n * h) * F32 + ATTACK_COPIES * batch * n * F32
    return inputs + optimiser + activations + adversarial


def height_points(resolution: int, k: int, max_points: int) -> int:
    """Chart points of one height field: resolution^k on a grid, else resolution^2 random points,
    both capped at max_points (geometry/height.py `chart_samples`)."""
    if resolution**k <= max_points:  # exact integers, as chart_samples decides (a float log test erred at equality)
        return resolution**k
    return min(resolution**2, max_points)


def _measure_stage(scene, n: int, k: int) -> int:
    """The finest height field (probes: at most PROBE_CHUNK_BYTES of lines x 2 BRACKET_BLOCK
    steps x the wider of n and the first hidden layer at a time) plus the per-point
    tangent-fraction and stretch arrays at measure.n_points (Jacobians in chunks of
    JACOBIAN_CHUNK_BYTES)."""
    spec = scene.measure
    h = scene.manifold.host_dim()
    resolution = max(spec.height_resolution, spec.final_height_resolution)
    grid = height_points(resolution, k, spec.height_max_points)
    widest = max(scene.model.hidden)
    row = max(n, scene.model.hidden[0]) if scene.model.hidden else n
    probes = min(grid * 2 * min(spec.bracket_steps, BRACKET_BLOCK) * row * F32, PROBE_CHUNK_BYTES) * 2
    # Per chart point: its point and probe direction in R^n (float64 and float32 copies), host
    # point and normal; a grid layout also takes the chart Jacobian (n x k) for its area weights.
    on_grid = resolution**k <= spec.height_max_points  # as height_points and chart_samples decide
    chart = n * (2 * F64 + 3 * F32) + 2 * h * F64 + (n * k * F64 if on_grid else 0)
    labels = LABEL_CHUNK * widest * F32 * 2
    distances = DISTANCE_CHUNK * scene.data.n_train * F64 * 2
    jacobians = min(spec.n_points * widest * n * F32, JACOBIAN_CHUNK_BYTES) * 4  # float32, float64 copy, Gram
    per_point = spec.n_points * (h * k * F64 + 2 * n * F64) + jacobians  # tangent operator (float64)
    return grid * chart + probes + labels + distances + per_point


def _attack_stage(spec, count: int, n: int, k: int, classes: int, widest: int) -> int:
    """One mode at a time: the walk's state, the mode's subspace operator (a dense Haar basis per
    point while n k <= HAAR_MAX_ENTRIES, via float64 QR blocks; else O(n) per point), the
    certifier's chunk, DeepFool's per-class gradients and the stretch alignment's Jacobians."""
    bases = 0
    if any(mode.startswith("random") for mode in spec.modes):
        if random_subspace_kind(n, k) == "haar":
            bases = count * n * k * F32 + QR_COPIES * min(count, SUBSPACE_CHUNK) * n * k * F64
        else:
            bases = count * (STRUCTURED_ROUNDS * n + k * I64)
    tangent = count * (k + 1) * k * F32 if any(mode in ("on", "off") for mode in spec.modes) else 0
    certify = CERTIFY_CHUNK_BYTES if spec.search.certify else 0
    deepfool = count * min(classes, DEEPFOOL_CANDIDATES) * n * F32 if spec.check_with_deepfool else 0
    jacobians = count * widest * n * F64 * 2  # the stretch alignment (models with `features`; widest 0: none)
    return ATTACK_COPIES * count * n * F32 + bases + tangent + certify + deepfool + jacobians


def _render_stage(scene, n: int) -> int:
    """The 3-D margin grid (values per class, masks and the indices of refined nodes) and the
    cross-section's n-dimensional points, logits and margins."""
    spec, classes = scene.render, scene.labels.n_classes
    fields = 1 if classes == 2 else classes
    grid = spec.grid_resolution**3 * (2 * fields * F32 + 3 + 4 * I64) if (spec.three_d or spec.animation) else 0
    cells = spec.cross_section_resolution * (spec.cross_section_resolution // 2)
    section = cells * (3 * n * F64 + 3 * classes * F32) if spec.first_look else 0
    window = spec.window_size[0] * spec.window_size[1] * 4 * F32
    return max(grid, section) + window


def _experiment_stages(scene, points: int, n: int, parameters: int) -> dict[str, int]:
    stages = {}
    hidden, classes = list(scene.model.hidden), scene.labels.n_classes
    agreement = scene.experiments.seed_agreement
    if agreement.enabled:
        models = len(agreement.seeds) if agreement.seeds else agreement.count
        training = models * (ADAM_COPIES * parameters * F32 + _mlp_activations(
            min(scene.train.batch_size, scene.data.n_train), hidden, classes)) + points * n * F32
        probes = 2 * agreement.n_points * n * F64 + models * agreement.n_points * I64
        stages["seed agreement (experiments.seed_agreement.*)"] = training + probes + _render_stage(scene, n)
    if scene.experiments.relabel.enabled:
        attacked = ATTACK_COPIES * scene.data.n_train * n * F32
        stages["relabelling (experiments.relabel.*)"] = attacked + _training_stage(scene, points, n, 1, parameters)
    return stages


# --------------------------------------------------------------------------- real images


def _real_images(experiment) -> tuple[int, int, int]:
    """(images held in memory, images trained on, pixels per image). An image folder is read batch by
    batch (`simulator.real.streaming`): only the measured images are held, whatever its size."""
    data = experiment.dataset
    if data.source == "photos":
        side = (data.image_size or [224])[0]
        return len(experiment.photo_names), len(experiment.photo_names), 3 * side * side
    requested = data.n_train + data.n_test if data.n_train and data.n_test else None
    if data.source == "folder":
        height, width = experiment.image_size
        count = experiment.measure.attacks.n_points or experiment.measure.n_points
        return count, requested or 0, (1 if data.grayscale else 3) * height * width
    loaded, n = DATASET_SIZES[data.source]
    return loaded, min(requested or loaded, loaded), n


# Per-image costs of a pretrained network scale with the pixels it sees (measured at 224 x 224).
IMAGENET_PIXELS = 3 * 224 * 224


def _real_estimate(experiment) -> MemoryEstimate:
    held, used, n = _real_images(experiment)
    streamed = experiment.dataset.source == "folder"
    subset = used * n * F32 if used < held and not streamed else 0  # a subset is a copy
    count = experiment.measure.attacks.n_points or experiment.measure.n_points
    if streamed:  # the measured images, and the loader's batches in flight (2 per worker, and the one in use)
        batch = max(experiment.autoencoder.batch_size, experiment.classifier.batch_size, stream_chunk(n))
        in_flight = (2 * (experiment.dataset.workers if experiment.dataset.workers is not None else 8) + 1) * batch
        kept = {"measured images and the loader's batches (measure.n_points, dataset.workers)":
                (count + in_flight) * n * F32}
    else:
        kept = {"images (dataset.*)": held * n * (F32 + 1) + subset}  # float32, and the raw bytes read
    k = experiment.measure.subspace_dim if experiment.manifold == "none" else experiment.autoencoder.latent_dim
    classes = 1000 if experiment.pretrained else 10
    attacks = _attack_stage(experiment.measure.attacks, count, n, k, classes, _widest(experiment))
    if experiment.pretrained:  # EfficientNet-Lite0's measured costs (a user's network: assumed similar)
        scale = n / IMAGENET_PIXELS
        attacks += int(scale * (count * PRETRAINED_BYTES_PER_IMAGE
                                + rows_per_pass(n) * PRETRAINED_PROBE_BYTES_PER_IMAGE))
    stages = {"training (autoencoder.*, classifier.*)": _real_training(experiment, used, n, classes),
              "attacks (measure.attacks.n_points x n per mode)": attacks}
    if experiment.manifold == "autoencoder":  # the kept bases; Jacobians in chunks of a fixed budget
        stages["tangent bases (measure.n_points x n x autoencoder.latent_dim)"] = \
            count * n * k * 2 * F32 + DECODER_JACOBIAN_CHUNK_BYTES
    return MemoryEstimate(kept, stages)


def _widest(experiment) -> int:
    """Width of the features whose Jacobian the stretch alignment takes (0: the pretrained
    classifier exposes none)."""
    return 0 if experiment.pretrained else experiment.classifier.hidden[-1]


def _conv_maps(pixels: int, channels: list[int], pooled: bool) -> int:
    """Values in one image's conv feature maps (each layer halves the sides)."""
    return sum(width * pixels // 4 ** (layer + (1 if not pooled else 0)) for layer, width in enumerate(channels))


def _real_training(experiment, used: int, n: int, classes: int) -> int:
    streamed = experiment.dataset.source == "folder"
    inputs = 0 if streamed else used * n * F32  # a folder is read batch by batch
    autoencoder = 0
    if experiment.manifold == "autoencoder":
        spec = experiment.autoencoder
        batch = min(spec.batch_size, used or spec.batch_size)
        if spec.architecture == "conv":  # encoder and mirrored decoder maps of one batch
            pixels = n // (1 if experiment.dataset.grayscale else 3)
            maps = 2 * _conv_maps(pixels, spec.channels, pooled=False)
            autoencoder = batch * (maps + 2 * n) * F32 * ACTIVATION_COPIES + ADAM_COPIES * F32 * (
                2 * spec.latent_dim * spec.channels[-1] * pixels // 4 ** len(spec.channels)
                + 2 * 9 * sum(a * b for a, b in pairwise([3, *spec.channels])))
        else:
            hidden = [*spec.hidden, spec.latent_dim, *reversed(spec.hidden)]
            autoencoder = ADAM_COPIES * mlp_parameters(n, hidden, n) * F32 + _mlp_activations(batch, hidden, n)
    if experiment.pretrained:
        return inputs + max(autoencoder, PRETRAINED_WEIGHT_BYTES)
    spec = experiment.classifier
    batch = min(spec.batch_size, used or spec.batch_size)
    if spec.architecture == "cnn":  # conv maps of one batch (each layer halves the sides), dense layers
        pixels = n // (1 if experiment.dataset.grayscale else 3)
        maps = _conv_maps(pixels, spec.channels, pooled=True)
        flat = spec.channels[-1] * pixels // 4 ** len(spec.channels)
        classifier = batch * maps * F32 * ACTIVATION_COPIES + _mlp_activations(batch, list(spec.hidden), classes)
        classifier += ADAM_COPIES * mlp_parameters(flat, list(spec.hidden), classes) * F32
    else:
        classifier = ADAM_COPIES * mlp_parameters(n, list(spec.hidden), classes) * F32
        classifier += _mlp_activations(batch, list(spec.hidden), classes)
    return inputs + max(autoencoder, classifier)


def memory_report(config) -> str:
    """What `sim scenes validate` prints about memory: the estimate, and whether this machine has
    room for it now (validation itself never fails on memory: that depends on the machine)."""
    estimate = estimate_memory(config)
    available = available_memory()
    line = estimate.summary(parts=3)
    if available is not None and estimate.peak > available:
        line += (f". More than the {format_bytes(available)} available here now: `sim run` would refuse to start "
                 f"(--max-memory sets another limit)")
    return line
