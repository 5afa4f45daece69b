"""Reading a run's files with every check, so a damaged run is a message, never a traceback.

Each reader turns whatever a damaged file raises (truncated zip, random bytes, an empty file, a
pickle of foreign objects) into a RunError naming the file and the fix. Each `check_*` then
compares what was read with what the run's scene says it must be: array names, dtypes, shapes
(columns = ambient dimension, rows = n_train / n_test), finite values where a NaN would be
measured silently, labels in range, state dicts that fit the model the scene builds.

Shapes are declared as `ArraySpec`s whose dimensions are numbers, named sizes that must agree
across the arrays of one file ("N" rows everywhere), or None (any).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from simulator.config.loading import parse_yaml, scene_from_dict
from simulator.config.real import RealExperiment, real_experiment_from_dict
from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.errors import RunError, SceneError
from simulator.runs.format import ATTACK_EXTRAS, LOWER_BOUND_PREFIX

# What to do about a damaged input file, per kind of run.
RERUN = {
    "synthetic": "Rerun `sim run` on the scene to make the run again.",
    "real": "Rerun `sim run` on the experiment file to make the run again.",
}


def damaged(file: Path, problem: str, fix: str) -> RunError:
    return RunError(f"{file}: {problem}; the file is damaged or does not belong to this run. {fix}")


# --------------------------------------------------------------------------- readers


def read_scene(folder: Path, kind: str) -> Scene | RealExperiment:
    """The run's scene.yaml (a `kind` "real" run: its experiment), validated."""
    file = Path(folder) / "scene.yaml"
    raw = _parse_scene_text(file, _read_text(file, kind), kind)
    try:
        if kind == "real":
            return real_experiment_from_dict(raw, source=str(file), default_name=Path(folder).name)
        return scene_from_dict(raw, source=str(file), default_name=Path(folder).name)
    except SceneError as error:
        problems = str(error).splitlines()  # one line per problem: the first says enough here
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise RunError(f"{problems[0].rstrip('.')}{more}. This is the run's own copy of its scene, which must stay "
                       f"as the run wrote it. {RERUN[kind]}") from None


def _read_text(file: Path, kind: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise damaged(file, "not a UTF-8 text file", RERUN[kind]) from None
    except OSError as error:
        raise damaged(file, f"cannot be read ({error.strerror or error})", RERUN[kind]) from None


def _parse_scene_text(file: Path, text: str, kind: str) -> Any:
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise damaged(file, f"not valid YAML{where} ({problem})", RERUN[kind]) from None
    except (TypeError, ValueError, RecursionError) as error:  # PyYAML's constructors on some malformed documents
        raise damaged(file, f"not a YAML mapping of settings ({type(error).__name__}: {error})",
                      RERUN[kind]) from None


def read_npz(file: Path, fix: str = RERUN["synthetic"]) -> dict[str, np.ndarray]:
    """Every array of an .npz archive (pickled objects refused)."""
    try:
        stored = np.load(file, allow_pickle=False)
    except Exception as error:  # noqa: BLE001  numpy raises OSError, ValueError, BadZipFile... for bad bytes
        raise damaged(file, f"not a readable .npz archive ({_first_line(error)})", fix) from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise damaged(file, f"a single {type(stored).__name__}, not an .npz archive of named arrays", fix)
    try:
        with stored:
            return {name: stored[name] for name in stored.files}
    except Exception as error:  # noqa: BLE001  a damaged member: zlib.error, BadZipFile, EOFError...
        raise damaged(file, f"an array in it cannot be read ({_first_line(error)})", fix) from None


def read_torch(file: Path, fix: str = RERUN["synthetic"]) -> Any:
    """A torch file, loaded with weights_only=True (tensors and plain containers only)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise damaged(file, f"not a torch file of tensors and plain containers only (loading it with "
                            f"weights_only=True refused it: {_first_line(error)})", fix) from None
    except Exception as error:  # noqa: BLE001  torch raises RuntimeError, EOFError, OSError... for bad bytes
        raise damaged(file, f"not a readable torch file ({_first_line(error)})", fix) from None


def _first_line(error: BaseException) -> str:
    """The error's type and first sentence: library messages go on for lines about their internals."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    sentence = text.split(". ")[0][:160]
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


# --------------------------------------------------------------------------- arrays


KIND_WORDS = {"f": "floating-point", "iu": "integer", "b": "boolean", "US": "text"}


@dataclass(frozen=True)
class ArraySpec:
    kinds: str  # numpy dtype kinds allowed: a key of KIND_WORDS
    shape: tuple  # per axis: a size, a name of a size shared by the file's arrays, or None (any)
    finite: bool = False  # NaN or infinity would be measured silently
    required: bool = True


def check_arrays(file: Path, arrays: dict[str, np.ndarray], specs: dict[str, ArraySpec], sizes: dict[str, int],
                 fix: str) -> dict[str, int]:
    """RunError unless every array in `specs` is there with its dtype kind, shape and finiteness.
    `sizes` gives named sizes known in advance; the others are taken from the first array that
    has them. Returns every named size."""
    sizes = dict(sizes)
    for name, spec in specs.items():
        if name not in arrays:
            if spec.required:
                raise damaged(file, f"no array {name!r} (it holds {_short(sorted(arrays)) if arrays else 'none'})", fix)
            continue
        _check_array(file, name, arrays[name], spec, sizes, fix)
    return sizes


def _check_array(file: Path, name: str, array: np.ndarray, spec: ArraySpec, sizes: dict[str, int], fix: str) -> None:
    if array.dtype.kind not in spec.kinds:
        raise damaged(file, f"array {name!r} has dtype {array.dtype}, expected {KIND_WORDS[spec.kinds]}", fix)
    fits = array.ndim == len(spec.shape)
    for size, wanted in zip(array.shape, spec.shape):
        if isinstance(wanted, str):
            wanted = sizes.setdefault(wanted, size)
        fits = fits and (wanted is None or size == wanted)
    if not fits:
        expected = ", ".join("any" if s is None else f"{s}={sizes[s]}" if s in sizes else str(s) for s in spec.shape)
        raise damaged(file, f"array {name!r} has shape {tuple(array.shape)}, expected ({expected})", fix)
    if spec.finite and not np.isfinite(array).all():
        raise damaged(file, f"array {name!r} holds NaN or infinite values", fix)


def check_labels(file: Path, name: str, labels: np.ndarray, n_classes: int, fix: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise damaged(file, f"array {name!r} holds labels outside 0..{n_classes - 1} ({int(labels.min())}.."
                            f"{int(labels.max())})", fix)


# --------------------------------------------------------------------------- data.npz


def dataset_specs() -> dict[str, ArraySpec]:
    specs = {"n_classes": ArraySpec("iu", ())}
    for split in ("train", "test"):
        rows = f"data.n_{split}"
        specs |= {f"x_{split}": ArraySpec("f", (rows, "manifold.ambient_dim"), finite=True),
                  f"y_{split}": ArraySpec("iu", (rows,)),
                  f"u_{split}": ArraySpec("f", (rows, "manifold dim k"), finite=True),
                  # Runs before format 2 also stored the dense tangent bases; they are checked, then
                  # ignored: the manifold recomputes them from u.
                  f"tangent_{split}": ArraySpec("f", (rows, "manifold.ambient_dim", "manifold dim k"), finite=True,
                                                required=False)}
    return specs


def check_dataset(file: Path, arrays: dict[str, np.ndarray], scene: Scene) -> Dataset:
    """data.npz's arrays as a Dataset, checked against the scene the run was made with."""
    fix = RERUN["synthetic"]
    sizes = {"data.n_train": scene.data.n_train, "data.n_test": scene.data.n_test,
             "manifold.ambient_dim": scene.manifold.ambient_dim, "manifold dim k": scene.manifold_dim()}
    check_arrays(file, arrays, dataset_specs(), sizes, fix)
    missing = [f.name for f in fields(Dataset) if f.name not in arrays]
    if missing:
        raise damaged(file, f"no array {missing[0]!r}", fix)
    n_classes = int(arrays["n_classes"])
    if n_classes != scene.labels.n_classes:
        raise damaged(file, f"n_classes is {n_classes}, but the scene's labels.n_classes is {scene.labels.n_classes}",
                      fix)
    for name in ("y_train", "y_test"):
        check_labels(file, name, arrays[name], n_classes, fix)
    return Dataset(**{**{f.name: arrays[f.name] for f in fields(Dataset)}, "n_classes": n_classes})


# --------------------------------------------------------------------------- state dicts


def check_state_dict(file: Path, what: str, state: Any, template: dict[str, torch.Tensor] | None, fix: str) -> None:
    """RunError unless `state` maps names to finite tensors; with a `template` (the state dict of
    the model the scene builds), exactly its names, shapes and dtypes."""
    if not isinstance(state, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              and value.layout == torch.strided for key, value in state.items()):
        raise damaged(file, f"{what} is not a state dict (names to dense tensors)", fix)
    if template is not None:
        missing, unexpected = sorted(set(template) - set(state)), sorted(set(state) - set(template))
        if missing or unexpected:
            raise damaged(file, f"{what} does not fit the scene's model (missing {missing or 'none'}, unexpected "
                                f"{unexpected or 'none'})", fix)
        for name, expected in template.items():
            tensor = state[name]
            if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
                raise damaged(file, f"{what}: {name} is {tensor.dtype} {tuple(tensor.shape)}, but the scene's model "
                                    f"has {expected.dtype} {tuple(expected.shape)}", fix)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise damaged(file, f"{what}: {name} holds NaN or infinite weights", fix)


def check_snapshots(file: Path, stored: Any, template: dict[str, torch.Tensor], metrics_steps: list[int]
                    ) -> list[dict]:
    """snapshots.pt's state dicts, checked against the scene's model and metrics.json's snapshots."""
    fix = RERUN["synthetic"]
    if not isinstance(stored, dict) or not {"steps", "state_dicts"} <= set(stored):
        found = f"keys {sorted(map(str, stored))}" if isinstance(stored, dict) else f"a {type(stored).__name__}"
        raise damaged(file, f"expected a dict with 'steps' and 'state_dicts', found {found}", fix)
    steps, states = stored["steps"], stored["state_dicts"]
    if not isinstance(steps, list) or not all(type(step) is int for step in steps):
        raise damaged(file, "'steps' is not a list of integers", fix)
    if not isinstance(states, list) or len(states) != len(steps):
        raise damaged(file, f"'state_dicts' is not a list of {len(steps)} state dicts (one per step)", fix)
    if steps != metrics_steps:
        raise damaged(file, f"its snapshots are at steps {_short(steps)}, but metrics.json lists {_short(metrics_steps)}",
                      fix)
    for index, state in enumerate(states):
        check_state_dict(file, f"snapshot {index} (step {steps[index]})", state, template, fix)
    return states


def _short(values: list) -> str:
    return str(values) if len(values) <= 8 else f"[{', '.join(map(str, values[:8]))}, ... ({len(values)} in all)]"


# --------------------------------------------------------------------------- files later stages wrote


def check_attack_arrays(file: Path, arrays: dict[str, np.ndarray], metrics: dict, n_points_stored: int | None,
                        ambient_dim: int, fix: str) -> None:
    """attack_distances.npz: one (N,) distance array per mode, free_delta (N, n), point_index (N,)
    rows of the attacked set (the test set, or points.npz for a real run), modes as metrics.json
    reports them."""
    modes = sorted(name for name in arrays if name not in ATTACK_EXTRAS and not name.startswith(LOWER_BOUND_PREFIX))
    if not modes:
        raise damaged(file, "it holds no attack mode's distances", fix)
    specs = {mode: ArraySpec("f", ("N",)) for mode in modes}
    # Lower bounds are certified radii: finite and never negative (runs from before them lack them).
    specs |= {LOWER_BOUND_PREFIX + mode: ArraySpec("f", ("N",), finite=True, required=False) for mode in modes}
    unknown = sorted(name for name in arrays if name.startswith(LOWER_BOUND_PREFIX) and name not in specs)
    if unknown:
        raise damaged(file, f"it holds lower bounds {unknown} of modes without distances", fix)
    specs["free_delta"] = ArraySpec("f", ("N", "n"), required=False)
    specs["point_index"] = ArraySpec("iu", ("N",), required=False)
    check_arrays(file, arrays, specs, {"n": ambient_dim}, fix)
    index = arrays.get("point_index")
    if index is not None and n_points_stored is not None and index.size and \
            (index.min() < 0 or index.max() >= n_points_stored):
        raise damaged(file, f"point_index holds rows outside 0..{n_points_stored - 1}", fix)
    attacks = metrics.get("attacks")  # format-checked: final.modes is a mapping
    if attacks is not None and sorted(attacks["final"]["modes"]) != modes:
        raise damaged(file, f"it holds the modes {modes}, but metrics.json's attack report has "
                            f"{sorted(attacks['final']['modes'])}", fix)


HEIGHT_FIELD_SPECS = {
    "u": ArraySpec("f", ("G", "manifold dim k"), finite=True),
    "h": ArraySpec("f", ("G",)),  # NaN: no boundary within t_max
    "weight": ArraySpec("f", ("G",), finite=True),
    "label": ArraySpec("iu", ("G",)),
    "near": ArraySpec("b", ("G",)),
    "interface": ArraySpec("b", ("G",)),
    "t_max": ArraySpec("f", (), finite=True),
    "grid_shape": ArraySpec("iu", (None,)),
}


def check_height_field(file: Path, arrays: dict[str, np.ndarray], k: int, fix: str) -> None:
    """height_field.npz: the chart points (G, k) of the last measured snapshot and h there."""
    sizes = check_arrays(file, arrays, HEIGHT_FIELD_SPECS, {"manifold dim k": k}, fix)
    grid = arrays["grid_shape"]
    if grid.size and int(np.prod(grid)) != sizes["G"]:
        raise damaged(file, f"grid_shape {tuple(int(v) for v in grid)} does not hold its {sizes['G']} chart points", fix)


def point_specs(k: int | None) -> dict[str, ArraySpec]:
    """points.npz of a real-image run (k None: no manifold estimate, so no tangent arrays)."""
    specs = {"x": ArraySpec("f", ("N", "n"), finite=True), "y": ArraySpec("iu", ("N",)),
             "test_indices": ArraySpec("iu", ("N",)), "image_shape": ArraySpec("iu", (None,)),
             "names": ArraySpec("US", ("N",), required=False), "tau": ArraySpec("f", (None,), required=False),
             "reconstruction": ArraySpec("f", ("N", "n"), required=False),
             "data_radius": ArraySpec("f", (), finite=True, required=False)}
    if k is not None:
        specs |= {"tangent_bases": ArraySpec("f", ("N", "n", "k"), finite=True),
                  "singular_values": ArraySpec("f", ("N", "k"), required=False)}
    return specs


def check_points(file: Path, arrays: dict[str, np.ndarray], real: dict, k: int | None) -> int:
    """points.npz against metrics.json's `real` section; returns the number of points."""
    fix = RERUN["real"]
    known = {"n": real["ambient_dim"]} | ({"k": k} if k is not None else {})
    sizes = check_arrays(file, arrays, point_specs(k), known, fix)
    if int(np.prod(arrays["image_shape"])) != sizes["n"]:
        raise damaged(file, f"image_shape {tuple(int(v) for v in arrays['image_shape'])} does not hold "
                            f"{sizes['n']} pixels", fix)
    if "tau" in arrays and len(arrays["tau"]) > sizes["N"]:
        raise damaged(file, f"tau has {len(arrays['tau'])} values for {sizes['N']} points", fix)
    n_classes = (real.get("dataset") or {}).get("n_classes")
    if isinstance(n_classes, int):
        check_labels(file, "y", arrays["y"], n_classes, fix)
    return sizes["N"]


def check_models(file: Path, models: Any, with_autoencoder: bool, ambient_dim: int, k: int | None,
                 with_classifier: bool = True) -> None:
    """models.pt of a real-image run: the classifier's state dict (unless it is pretrained), and the
    autoencoder's with its configuration when the run estimated the manifold."""
    fix = RERUN["real"]
    if not isinstance(models, dict) or (with_classifier and "classifier" not in models):
        raise damaged(file, "expected a dict with the classifier's state dict under 'classifier'", fix)
    if with_classifier:
        check_state_dict(file, "the classifier", models["classifier"], None, fix)
    if not with_autoencoder:
        return
    check_state_dict(file, "the autoencoder", models.get("autoencoder"), None, fix)
    config = models.get("autoencoder_config")
    wanted = {"ambient_dim": ambient_dim, "latent_dim": k}
    if not isinstance(config, dict) or any(config.get(key) != value for key, value in wanted.items()) or \
            not isinstance(config.get("hidden"), list) or not all(type(width) is int for width in config["hidden"]) \
            or not isinstance(config.get("activation"), str) or not isinstance(config.get("output"), str):
        raise damaged(file, f"'autoencoder_config' is not the configuration of an autoencoder from {ambient_dim} "
                            f"pixels to {k} latent dimensions", fix)


EXAMPLE_FIELDS = {"delta": ArraySpec("f", ("E", "n")), "distance": ArraySpec("f", ("E",)),
                  "adversarial_label": ArraySpec("iu", ("E",))}


def check_examples(file: Path, arrays: dict[str, np.ndarray], ambient_dim: int, fix: str) -> None:
    """examples.npz of a real-image run: E images and labels, and for every mode its
    modes/<mode>/delta, distance and adversarial_label (what the examples figure draws)."""
    specs = {"x": ArraySpec("f", ("E", "n")), "label": ArraySpec("iu", ("E",))}
    modes = set()
    for name in arrays:
        parts = name.split("/")
        if name not in specs and (len(parts) != 3 or parts[0] != "modes" or parts[2] not in EXAMPLE_FIELDS):
            raise damaged(file, f"unexpected array {name!r} (expected x, label and modes/<mode>/<field> with "
                                f"field {', '.join(EXAMPLE_FIELDS)})", fix)
        if name not in specs:
            modes.add(parts[1])
    for mode in sorted(modes):
        specs |= {f"modes/{mode}/{field}": spec for field, spec in EXAMPLE_FIELDS.items()}
    check_arrays(file, arrays, specs, {"n": ambient_dim}, fix)
