"""Damaged run folders: a command either works or stops with a one-paragraph message (exit 2),
never a traceback, and changes nothing outside the run folder.

One tiny synthetic run and one tiny real-image run are made once per session. Each variant
copies one, damages it (a file deleted, emptied, truncated, overwritten with random bytes, the
wrong JSON shape, wrong arrays, NaN, a foreign pickle, an edited scene, another run's file...)
and runs read-only commands on the copy with click's CliRunner. Hypothesis adds random byte
damage and random edits of metrics.json. `pytest -s` prints how many variants ended how.
"""

from __future__ import annotations

import collections
import contextlib
import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import SCENES, SYNTHETIC_SCENES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from simulator.config.loading import load_scene
from simulator.data import make_dataset
from simulator.models import build_model
from simulator.runs.checks import read_scene
from simulator.runs.integrity import REWRITTEN_SECTIONS, scene_digest

SCENE = SCENES / "sheet_two_class.yaml"
# A run in about a second: tiny data, model, grids and attacks; no 3-D render, animation or report.
TINY = {"train.steps": 40, "data.n_train": 120, "data.n_test": 60, "snapshots.count": 3, "model.hidden": "[16]",
        "train.device": "cpu", "measure.n_points": 12, "measure.height_resolution": 6,
        "measure.final_height_resolution": 8, "measure.attacks.modes": "[free, on, off]",
        "measure.attacks.bootstrap": 10, "measure.attacks.max_steps": 100, "measure.attacks.robust_epsilons": "[0.05]",
        "measure.attacks.check_with_deepfool": "false", "render.three_d": "false", "render.animation": "false",
        "render.report": "false", "render.first_look": "false"}
REAL = {"kind": "real", "name": "digits_damage", "device": "cpu", "examples": 1,
        "dataset": {"source": "digits", "n_train": 200, "n_test": 40},
        "autoencoder": {"latent_dim": 3, "hidden": [16], "steps": 30, "lr": 3e-3},
        "classifier": {"hidden": [16], "steps": 60, "lr": 1e-2},
        "measure": {"n_points": 4, "attacks": {"bootstrap": 10, "max_steps": 60, "refine_steps": 3, "normal_rounds": 0,
                                               "check_with_deepfool": False, "modes": ["free", "on", "off"],
                                               "robust_epsilons": [0.5]}}}

OUTCOMES: collections.Counter = collections.Counter()


def invoke(*args) -> object:
    return CliRunner().invoke(cli.main, [str(arg) for arg in args])


# --------------------------------------------------------------------------- the pristine runs


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """{"synthetic": run folder, "real": run folder}, made once; variants work on copies."""
    root = tmp_path_factory.mktemp("pristine")
    sets = [part for key, value in TINY.items() for part in ("--set", f"{key}={value}")]
    made = invoke("run", SCENE, "--out", root, "--quiet", *sets)
    assert made.exit_code == 0, made.output
    (root / "real.yaml").write_text(yaml.safe_dump(REAL))
    made = invoke("run", root / "real.yaml", "--out", root, "--quiet")
    assert made.exit_code == 0, made.output
    return {"synthetic": root / "sheet_two_class", "real": root / "digits_damage"}


@pytest.fixture(scope="session")
def strangers(pristine, tmp_path_factory) -> dict[str, Path]:
    """Files of *another* run of the same scene (seed 1): same names and shapes, other content."""
    folder = tmp_path_factory.mktemp("stranger")
    scene = load_scene(pristine["synthetic"] / "scene.yaml").model_copy(update={"seed": 1})
    (folder / "scene.yaml").write_text(scene.to_yaml())
    make_dataset(scene).save(folder / "data.npz")
    stored = torch.load(pristine["synthetic"] / "snapshots.pt", weights_only=True)
    torch.manual_seed(1)
    model = build_model(scene.model, scene.manifold.ambient_dim, scene.labels.n_classes)
    torch.save({"steps": stored["steps"], "state_dicts": [model.state_dict() for _ in stored["steps"]]},
               folder / "snapshots.pt")
    return {path.name: path for path in folder.iterdir()}


def fingerprint(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """(size, mtime, bytes) of every file under `root` except those under `skip`."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and (skip is None or skip not in p.parents)}


# --------------------------------------------------------------------------- variants


@dataclass
class Variant:
    name: str
    kind: str  # which pristine run it damages: "synthetic" or "real"
    damage: Callable[[Path, dict], None]  # (the copied run folder, strangers)
    expect: str = "error"  # "error" (exit 2), "ok" (exit 0) or "either"
    names: str | None = None  # a text the error message must contain (usually the file's name)
    commands: tuple = (("report",),)


def _write(name: str, data: bytes | str) -> Callable:
    def damage(run: Path, _):
        target = run / name
        target.unlink(missing_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else data.encode())
    return damage


def _delete(name):
    return lambda run, _: (run / name).unlink()


def _truncate(name, keep):
    """Keep the first `keep` of the file: a fraction of it (float) or a number of bytes (int)."""
    def damage(run, _):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    return damage


def _random_bytes(name):
    def damage(run, _):
        size = (run / name).stat().st_size
        (run / name).write_bytes(np.random.default_rng(len(name)).bytes(size))
    return damage


def _flip_middle(name):
    def damage(run, _):
        data = bytearray((run / name).read_bytes())
        for offset in range(len(data) // 2, len(data) // 2 + 16):
            data[offset] ^= 0xFF
        (run / name).write_bytes(bytes(data))
    return damage


def _folder_instead(name):
    def damage(run, _):
        (run / name).unlink()
        (run / name).mkdir()
    return damage


def _copy_from(name, source):
    return lambda run, _: shutil.copyfile(run / source, run / name)


def _stranger(name):
    return lambda run, strangers: shutil.copyfile(strangers[name], run / name)


def _edit_json(name, edit):
    def damage(run, _):
        value = json.loads((run / name).read_text())
        value = edit(value)
        (run / name).write_text(json.dumps(value))
    return damage


def _edit_metrics(edit):
    """Edit metrics.json in place (`edit`'s return value is ignored)."""
    def in_place(metrics):
        edit(metrics)
        return metrics
    return _edit_json("metrics.json", in_place)


def _legacy(*damages):
    """A run written before digests (no `integrity` section), then damaged: the checks of shape and
    consistency must catch what the digests would have."""
    def damage(run, strangers):
        _edit_metrics(lambda m: m.pop("integrity"))(run, strangers)
        for step in damages:
            step(run, strangers)
    return damage


def _edit_yaml(edit):
    def damage(run, _):
        scene = yaml.safe_load((run / "scene.yaml").read_text())
        edit(scene)
        (run / "scene.yaml").write_text(yaml.safe_dump(scene, sort_keys=False))
    return damage


def _set(section, key, value):
    def edit(scene):
        scene[section][key] = value
    return edit


def _edit_arrays(name, edit):
    def damage(run, _):
        with np.load(run / name) as stored:
            arrays = {key: stored[key] for key in stored.files}
        edit(arrays)
        with open(run / name, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return damage


def _torch_value(name, value):
    def damage(run, _):
        torch.save(value() if callable(value) else value, run / name)
    return damage


def _edit_torch(name, edit, replace=False):
    """Edit a torch file in place, or with `replace` store what `edit` returns instead."""
    def damage(run, _):
        stored = torch.load(run / name, weights_only=True)
        result = edit(stored)
        torch.save(result if replace else stored, run / name)
    return damage


class _Payload:
    """A pickle whose loading would create a marker file: weights_only=True must refuse it."""

    marker = Path(tempfile.gettempdir()) / "sim-damaged-run-payload-ran"

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _foreign_pickle(name):
    return _write(name, pickle.dumps({"steps": [0], "state_dicts": [_Payload()]}, protocol=2))


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


GENERIC_DAMAGE = {
    "deleted": _delete, "empty": lambda name: _write(name, b""), "half": lambda name: _truncate(name, 0.5),
    "ten-bytes": lambda name: _truncate(name, 10), "random-bytes": _random_bytes,
    "flipped-bytes": _flip_middle, "a-folder": _folder_instead, "null": lambda name: _write(name, "null"),
}

# Files later commands read; each gets every generic damage. `names`: what the message must name
# (a deleted file is named in the "missing ..." message too).
SYNTHETIC_FILES = ("scene.yaml", "metrics.json", "data.npz", "snapshots.pt", "attack_distances.npz",
                   "height_field.npz")
REAL_FILES = ("scene.yaml", "metrics.json", "points.npz", "models.pt", "attack_distances.npz", "examples.npz")
OPTIONAL_FILES = {"synthetic": ("attack_distances.npz", "height_field.npz"), "real": ("examples.npz",)}
# The first half of scene.yaml may still be a valid scene whose missing sections are ones the digest
# leaves out (measure, render, experiments take their defaults): a valid run then.
MAY_STILL_BE_VALID = {("scene.yaml", "half")}


def generic_variants() -> list[Variant]:
    variants = []
    for kind, files in (("synthetic", SYNTHETIC_FILES), ("real", REAL_FILES)):
        for name in files:
            for damage, make in GENERIC_DAMAGE.items():
                # Without a stage's optional output the run is valid: its readers skip what is not a file.
                optional = damage in ("deleted", "a-folder") and name in OPTIONAL_FILES[kind]
                expect = "ok" if optional else "either" if (name, damage) in MAY_STILL_BE_VALID else "error"
                variants.append(Variant(f"{kind}/{name}/{damage}", kind, make(name), expect=expect,
                                        names=None if optional else name))
    return variants


def _drop_snapshot(metrics):
    metrics["snapshots"].pop(1)


def _swap_steps(stored):
    stored["steps"] = list(reversed(stored["steps"]))


def _nan_weights(stored):
    first = stored["state_dicts"][-1]
    name = next(iter(first))
    first[name] = torch.full_like(first[name], float("nan"))


def _float64_weights(stored):
    stored["state_dicts"] = [{k: v.double() for k, v in state.items()} for state in stored["state_dicts"]]


def _wider_layer(stored):
    stored["state_dicts"] = [{k: torch.cat([v, v]) if k.endswith("bias") else v for k, v in s.items()}
                             for s in stored["state_dicts"]]


def _renamed_keys(stored):
    stored["state_dicts"] = [{"x" + k: v for k, v in s.items()} for s in stored["state_dicts"]]


def _extra_column(arrays):
    arrays["x_train"] = np.concatenate([arrays["x_train"], arrays["x_train"][:, :1]], axis=1)


def synthetic_variants() -> list[Variant]:
    S = "synthetic"
    scene_edits = {
        "family": _set("manifold", "family", "sine_sheet"), "ambient-dim": _set("manifold", "ambient_dim", 4),
        "n-train": _set("data", "n_train", 100), "n-classes": _set("labels", "n_classes", 3),
        "hidden": _set("model", "hidden", [8]), "steps": _set("train", "steps", 41),
        "labels-spread": _set("labels", "spread", 0.2),
    }
    variants = [Variant(f"{S}/scene.yaml/edited-{what}", S, _edit_yaml(edit), names="scene.yaml")
                for what, edit in scene_edits.items()]
    variants += [Variant(f"{S}/scene.yaml/legacy-edited-{what}", S, _legacy(_edit_yaml(edit)), expect="either")
                 for what, edit in scene_edits.items()]
    variants += [
        Variant(f"{S}/scene.yaml/seed", S, _edit_yaml(lambda s: s.update(seed=7)), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/name", S, _edit_yaml(lambda s: s.update(name="other")), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/legacy-name", S, _legacy(_edit_yaml(lambda s: s.update(name="other"))),
                names="scene.yaml"),
        Variant(f"{S}/scene.yaml/unknown-key", S, _edit_yaml(lambda s: s.update(colour="red")), names="colour"),
        Variant(f"{S}/scene.yaml/kind-real", S, _edit_yaml(lambda s: s.update(kind="real")), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/syntax-error", S, _write("scene.yaml", "manifold: {family: flat\nlabels: [\n"),
                names="scene.yaml"),
        Variant(f"{S}/scene.yaml/python-tag", S, _write("scene.yaml", "!!python/object/apply:os.system ['true']\n"),
                names="scene.yaml"),
        Variant(f"{S}/scene.yaml/tag-in-value", S,
                lambda run, _: (run / "scene.yaml").write_text((run / "scene.yaml").read_text().replace(
                    "seed: 0", "seed: !!python/name:os.system")), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/list", S, _write("scene.yaml", "- a\n- b\n"), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/duplicate-key", S,
                lambda run, _: (run / "scene.yaml").write_text((run / "scene.yaml").read_text() + "seed: 0\n"),
                names="scene.yaml"),
        Variant(f"{S}/scene.yaml/list-key", S, _write("scene.yaml", "? [a, b]\n: 1\n"), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/latin-1", S, _write("scene.yaml", "description: caf\xe9\n".encode("latin-1")),
                names="scene.yaml"),
        Variant(f"{S}/scene.yaml/another-run", S, _stranger("scene.yaml"), names="scene.yaml"),
        Variant(f"{S}/scene.yaml/metrics-json", S, _copy_from("scene.yaml", "metrics.json"), names="scene.yaml"),
        # Allowed: what later commands rewrite, the description, and formatting.
        Variant(f"{S}/scene.yaml/measure-edited", S, _edit_yaml(_set("measure", "n_points", 10)), expect="ok"),
        Variant(f"{S}/scene.yaml/render-edited", S, _edit_yaml(_set("render", "dpi", 90)), expect="ok"),
        Variant(f"{S}/scene.yaml/description", S, _edit_yaml(lambda s: s.update(description="mine")), expect="ok"),
        Variant(f"{S}/scene.yaml/reformatted", S, lambda run, _: (run / "scene.yaml").write_text(
            "# my comment\n" + yaml.safe_dump(yaml.safe_load((run / "scene.yaml").read_text()), sort_keys=True,
                                               default_flow_style=True)), expect="ok"),
    ]
    variants += [Variant(f"{S}/metrics.json/{what}", S, _edit_json("metrics.json", edit), names="metrics.json")
                 for what, edit in {"list": lambda m: [m], "string": lambda m: "metrics",
                                    "empty-object": lambda m: {}}.items()]
    metrics_edits = {
        "no-format-version": lambda m: m.pop("format_version"), "future-version": lambda m: m.update(format_version=99),
        "no-training": lambda m: m.pop("training"), "snapshots-dict": lambda m: m.update(snapshots={"a": 1}),
        "one-snapshot-fewer": _drop_snapshot, "snapshot-step": lambda m: m["snapshots"][0].update(step=999),
        "step-as-string": lambda m: m["snapshots"][0].update(step="0"),
        "geometry-list": lambda m: m.update(geometry=[]),
        "geometry-no-snapshots": lambda m: m["geometry"].update(snapshots=[]),
        "verdict-strings": lambda m: m["geometry"]["snapshots"][-1].update(verdict=["a"]),
        "tangent-string": lambda m: m["geometry"]["snapshots"][-1].update(tangent="x"),
        "attacks-final-list": lambda m: m["attacks"].update(final=[]),
        "attack-mode-number": lambda m: m["attacks"]["final"]["modes"].update(on=3),
        "mode-without-distance": lambda m: m["attacks"]["final"]["modes"]["free"].pop("mean_distance"),
        "relabel-string": lambda m: m.update(relabel="x"), "kind-real": lambda m: m.update(kind="real"),
        "kind-unknown": lambda m: m.update(kind="photo"), "scene-renamed": lambda m: m.update(scene="other"),
        "integrity-md5": lambda m: m["integrity"].update(algorithm="md5"),
        "integrity-short": lambda m: m["integrity"]["files"].update({"data.npz": "abc"}),
        "integrity-no-data": lambda m: m["integrity"]["files"].pop("data.npz"),
        "data-digest-changed": lambda m: m["integrity"]["files"].update({"data.npz": "0" * 64}),
        "snapshots-digest-changed": lambda m: m["integrity"]["files"].update({"snapshots.pt": "f" * 64}),
    }
    mentions = {"no-format-version": "format_version", "future-version": "format version",
                "data-digest-changed": "data.npz", "snapshots-digest-changed": "snapshots.pt",
                "one-snapshot-fewer": "snapshots.pt", "snapshot-step": "snapshots.pt", "scene-renamed": "scene.yaml",
                "integrity-no-data": "metrics.json"}
    variants += [Variant(f"{S}/metrics.json/{what}", S, _edit_metrics(edit), names=mentions.get(what, "metrics.json"))
                 for what, edit in metrics_edits.items()]
    variants += [
        Variant(f"{S}/metrics.json/legacy", S, _legacy(), expect="ok"),
        Variant(f"{S}/metrics.json/nan-loss", S, _edit_metrics(lambda m: m["snapshots"][0].update(loss=None)),
                expect="ok"),
        Variant(f"{S}/timings.json/list", S, _write("timings.json", "[1, 2]"), expect="ok"),
        Variant(f"{S}/timings.json/random-bytes", S, _random_bytes("timings.json"), expect="ok"),
        Variant(f"{S}/timings.json/deleted", S, _delete("timings.json"), expect="ok"),
        Variant(f"{S}/verdict.json/deleted", S, _delete("verdict.json"), expect="ok"),
    ]
    data_edits = {
        "no-x-train": lambda a: a.pop("x_train"), "extra-column": _extra_column,
        "fewer-rows": lambda a: a.update(x_test=a["x_test"][:-1]),
        "int-points": lambda a: a.update(x_train=a["x_train"].astype(np.int64)),
        "float-labels": lambda a: a.update(y_train=a["y_train"].astype(float)),
        "label-out-of-range": lambda a: a["y_test"].__setitem__(0, 5),
        "negative-label": lambda a: a["y_train"].__setitem__(0, -1),
        "n-classes": lambda a: a.update(n_classes=np.array(3)),
        "nan-points": lambda a: a["x_train"].__setitem__((0, 0), np.nan),
        # runs before format 2 stored dense tangent bases: a damaged one is still refused
        "inf-tangent": lambda a: a.update(tangent_test=np.full((len(a["x_test"]), a["x_test"].shape[1],
                                                                a["u_test"].shape[1]), np.inf)),
        "flat-tangent": lambda a: a.update(tangent_train=np.zeros(a["x_train"].shape)),
        "u-columns": lambda a: a.update(u_test=a["u_test"][:, :1]),
        "complex": lambda a: a.update(u_train=a["u_train"].astype(complex)),
        "text-labels": lambda a: a.update(y_test=a["y_test"].astype(str)),
    }
    for what, edit in data_edits.items():
        variants.append(Variant(f"{S}/data.npz/{what}", S, _edit_arrays("data.npz", edit), names="data.npz"))
        variants.append(Variant(f"{S}/data.npz/legacy-{what}", S, _legacy(_edit_arrays("data.npz", edit)),
                                names="data.npz"))
    variants += [
        Variant(f"{S}/data.npz/extra-array", S, _edit_arrays("data.npz", lambda a: a.update(extra=np.ones(2))),
                names="data.npz"),
        Variant(f"{S}/data.npz/legacy-extra-array", S,
                _legacy(_edit_arrays("data.npz", lambda a: a.update(extra=np.ones(2)))), expect="ok"),
        Variant(f"{S}/data.npz/npy", S, lambda run, _: (run / "data.npz").write_bytes(_npy_bytes(np.ones(3))),
                names="data.npz"),
        Variant(f"{S}/data.npz/pickled-object", S,
                lambda run, _: np.savez(run / "data.npz", x_train=np.array([{"a": 1}], dtype=object)),
                names="data.npz"),
        Variant(f"{S}/data.npz/another-run", S, _stranger("data.npz"), names="data.npz"),
        Variant(f"{S}/data.npz/height-field", S, _copy_from("data.npz", "height_field.npz"), names="data.npz"),
        Variant(f"{S}/data.npz/legacy-another-run", S, _legacy(_stranger("data.npz")), expect="ok"),
    ]
    snapshot_edits = {
        "steps-reversed": _swap_steps, "nan-weights": _nan_weights, "float64": _float64_weights,
        "wider-layer": _wider_layer, "renamed": _renamed_keys,
        "one-fewer": lambda s: s["state_dicts"].pop(), "no-state-dicts": lambda s: s.pop("state_dicts"),
        "steps-strings": lambda s: s.update(steps=[str(x) for x in s["steps"]]),
        "state-dict-list": lambda s: s.update(state_dicts=[list(d.values()) for d in s["state_dicts"]]),
    }
    for what, edit in snapshot_edits.items():
        variants.append(Variant(f"{S}/snapshots.pt/{what}", S, _edit_torch("snapshots.pt", edit),
                                names="snapshots.pt"))
        variants.append(Variant(f"{S}/snapshots.pt/legacy-{what}", S, _legacy(_edit_torch("snapshots.pt", edit)),
                                names="snapshots.pt"))
    variants += [
        Variant(f"{S}/snapshots.pt/list", S, _torch_value("snapshots.pt", [1, 2]), names="snapshots.pt"),
        Variant(f"{S}/snapshots.pt/tensor", S, _torch_value("snapshots.pt", lambda: torch.ones(3)),
                names="snapshots.pt"),
        Variant(f"{S}/snapshots.pt/foreign-pickle", S, _foreign_pickle("snapshots.pt"), names="snapshots.pt"),
        Variant(f"{S}/snapshots.pt/another-run", S, _stranger("snapshots.pt"), names="snapshots.pt"),
        Variant(f"{S}/snapshots.pt/legacy-another-run", S, _legacy(_stranger("snapshots.pt")), expect="ok"),
        Variant(f"{S}/snapshots.pt/data-npz", S, _copy_from("snapshots.pt", "data.npz"), names="snapshots.pt"),
    ]
    attack_edits = {
        "no-mode": lambda a: a.pop("on"), "extra-mode": lambda a: a.update(random_on=a["free"]),
        "short-mode": lambda a: a.update(off=a["off"][:-1]), "index-out-of-range": lambda a: a["point_index"].__iadd__(999),
        "delta-columns": lambda a: a.update(free_delta=a["free_delta"][:, :2]),
        "int-distances": lambda a: a.update(free=np.zeros(len(a["free"]), dtype=int)),
        "only-extras": lambda a: [a.pop(k) for k in ("free", "on", "off")],
    }
    variants += [Variant(f"{S}/attack_distances.npz/{what}", S, _edit_arrays("attack_distances.npz", edit),
                         names="attack_distances.npz") for what, edit in attack_edits.items()]
    height_edits = {
        "no-u": lambda a: a.pop("u"), "grid-shape": lambda a: a.update(grid_shape=np.array([3, 3])),
        "u-columns": lambda a: a.update(u=a["u"][:, :1]), "label-bool": lambda a: a.update(label=a["near"]),
    }
    variants += [Variant(f"{S}/height_field.npz/{what}", S, _edit_arrays("height_field.npz", edit),
                         names="height_field.npz") for what, edit in height_edits.items()]
    return variants


def real_variants() -> list[Variant]:
    R = "real"
    points_edits = {
        "x-columns": lambda a: a.update(x=a["x"][:, :10]), "nan-x": lambda a: a["x"].__setitem__((0, 0), np.nan),
        "tangent-k": lambda a: a.update(tangent_bases=a["tangent_bases"][..., :2]),
        "no-tangent": lambda a: a.pop("tangent_bases"), "image-shape": lambda a: a.update(image_shape=np.array([5])),
        "label-out-of-range": lambda a: a["y"].__setitem__(0, 10), "long-tau": lambda a: a.update(tau=np.ones(99)),
    }
    variants = []
    for what, edit in points_edits.items():
        variants.append(Variant(f"{R}/points.npz/{what}", R, _edit_arrays("points.npz", edit), names="points.npz"))
        variants.append(Variant(f"{R}/points.npz/legacy-{what}", R, _legacy(_edit_arrays("points.npz", edit)),
                                names="points.npz"))
    model_edits = {"no-classifier": lambda m: m.pop("classifier"),
                   "nan-classifier": lambda m: m["classifier"].update(
                       {k: v * float("nan") for k, v in m["classifier"].items()}),
                   "latent-dim": lambda m: m["autoencoder_config"].update(latent_dim=9)}
    for what, edit in model_edits.items():
        variants.append(Variant(f"{R}/models.pt/{what}", R, _edit_torch("models.pt", edit), names="models.pt"))
        variants.append(Variant(f"{R}/models.pt/legacy-{what}", R, _legacy(_edit_torch("models.pt", edit)),
                                names="models.pt"))
    variants += [
        Variant(f"{R}/models.pt/foreign-pickle", R, _foreign_pickle("models.pt"), names="models.pt"),
        Variant(f"{R}/models.pt/list", R, _edit_torch("models.pt", lambda m: [m], replace=True), names="models.pt"),
        Variant(f"{R}/models.pt/legacy-list", R, _legacy(_edit_torch("models.pt", lambda m: [m], replace=True)),
                names="models.pt"),
        Variant(f"{R}/scene.yaml/latent-dim", R, _edit_yaml(_set("autoencoder", "latent_dim", 5)), names="scene.yaml"),
        Variant(f"{R}/scene.yaml/n-train", R, _edit_yaml(_set("dataset", "n_train", 300)), names="scene.yaml"),
        Variant(f"{R}/scene.yaml/no-kind", R, _edit_yaml(lambda s: s.pop("kind")), expect="ok"),  # the default
        Variant(f"{R}/scene.yaml/scene-of-a-synthetic-run", R,
                lambda run, strangers: shutil.copyfile(strangers["scene.yaml"], run / "scene.yaml"),
                names="scene.yaml"),
        Variant(f"{R}/scene.yaml/examples", R, _edit_yaml(lambda s: s.update(examples=0)), expect="ok"),
        Variant(f"{R}/scene.yaml/measure", R, _edit_yaml(_set("measure", "n_points", 3)), expect="ok"),
        Variant(f"{R}/metrics.json/no-real", R, _edit_metrics(lambda m: m.pop("real")), names="metrics.json"),
        Variant(f"{R}/metrics.json/ambient-string", R, _edit_metrics(lambda m: m["real"].update(ambient_dim="64")),
                names="metrics.json"),
        Variant(f"{R}/metrics.json/no-latent-dim", R, _edit_metrics(lambda m: m["real"].pop("latent_dim")),
                names="metrics.json"),
        Variant(f"{R}/metrics.json/no-verdict", R,
                _edit_metrics(lambda m: m["geometry"]["snapshots"][-1].pop("verdict")), names="metrics.json"),
        Variant(f"{R}/metrics.json/synthetic", R, _edit_metrics(lambda m: m.update(kind="synthetic")), expect="error"),
        Variant(f"{R}/metrics.json/legacy", R, _legacy(), expect="ok"),
        Variant(f"{R}/examples.npz/bad-name", R, _edit_arrays("examples.npz", lambda a: a.update({"modes/x": a["x"]})),
                names="examples.npz"),
        Variant(f"{R}/attack_distances.npz/index", R,
                _edit_arrays("attack_distances.npz", lambda a: a["point_index"].__iadd__(50)),
                names="attack_distances.npz"),
    ]
    return variants


VARIANTS = generic_variants() + synthetic_variants() + real_variants()


# --------------------------------------------------------------------------- running a variant


def run_variant(variant: Variant, pristine: dict, strangers: dict, workspace: Path) -> list:
    """Copy, damage, run each command; check the outcome and that nothing else changed."""
    run = Path(shutil.copytree(pristine[variant.kind], workspace / "runs" / pristine[variant.kind].name))
    variant.damage(run, strangers)
    OUTCOMES["variants"] += 1
    before = fingerprint(workspace, skip=run), fingerprint(pristine[variant.kind])
    results = []
    runner = CliRunner()
    (workspace / "cwd").mkdir()
    with contextlib.chdir(workspace / "cwd"):  # a stray relative write lands in the workspace
        for command in variant.commands:
            result = runner.invoke(cli.main, [command[0], str(run), *command[1:]])
            check_result(variant, command, run, result)
            results.append(result)
        after = fingerprint(workspace, skip=run), fingerprint(pristine[variant.kind])
    assert after == before, f"{variant.name}: a file outside the run folder changed"
    return results


def check_result(variant: Variant, command: tuple, run: Path, result) -> None:
    where = f"{variant.name}: sim {' '.join(command)}"
    output = result.output
    assert "Traceback" not in output, f"{where}\n{output}"
    assert result.exit_code in (0, 2), f"{where}: exit {result.exit_code} ({result.exception!r})\n{output}"
    OUTCOMES[result.exit_code] += 1
    if result.exit_code == 2:
        assert isinstance(result.exception, SystemExit), where
        message = output.strip()
        assert message.startswith("error: ") and "\n" not in message, f"{where}: not one paragraph:\n{output}"
        assert variant.expect in ("error", "either"), f"{where}: refused a valid run:\n{output}"
        if variant.names:
            assert variant.names in message, f"{where}: the message does not name {variant.names}:\n{output}"
    else:
        assert result.exception is None, where
        assert variant.expect in ("ok", "either"), f"{where}: accepted a damaged run:\n{output}"
        if command[0] == "report":
            assert "wrote" in output and (run / "report.md").is_file() and (run / "report.html").is_file(), where


@pytest.fixture(scope="module", autouse=True)
def outcome_summary():
    yield
    print(f"\ndamaged runs: {OUTCOMES['variants']} variants ({len(VARIANTS)} listed, the rest from hypothesis and "
          f"the specific tests), {OUTCOMES[0] + OUTCOMES[2]} commands: {OUTCOMES[0]} exit 0, {OUTCOMES[2]} exit 2")


def test_at_least_a_hundred_variants():
    assert len(VARIANTS) >= 100
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_damaged_run(variant, pristine, strangers, tmp_path):
    run_variant(variant, pristine, strangers, tmp_path)


# --------------------------------------------------------------------------- the reproducers of the issue


STAGE_COMMANDS = (("report",), ("measure", "--quiet"), ("attack", "--quiet"), ("render",), ("animate", "--quiet"))

REPRODUCERS = {
    "truncated snapshots.pt": (_truncate("snapshots.pt", 0.5), "snapshots.pt"),
    "empty snapshots.pt": (_write("snapshots.pt", b""), "snapshots.pt"),
    "snapshots.pt holding a list": (_torch_value("snapshots.pt", [1, 2]), "snapshots.pt"),
    "snapshots.pt without state_dicts": (_torch_value("snapshots.pt", {"steps": [0]}), "snapshots.pt"),
    "foreign pickle as snapshots.pt": (_foreign_pickle("snapshots.pt"), "snapshots.pt"),
    "truncated data.npz": (_truncate("data.npz", 0.5), "data.npz"),
    "data.npz with a column too many": (_legacy(_edit_arrays("data.npz", _extra_column)), "data.npz"),
    "metrics.json of the wrong shape": (_edit_metrics(lambda m: m.update(snapshots=[{"loss": 1}])), "metrics.json"),
    "metrics.json snapshots without step": (_edit_metrics(lambda m: m["snapshots"][0].pop("step")), "metrics.json"),
    "scene.yaml with a syntax error": (_write("scene.yaml", "manifold: [\n"), "scene.yaml"),
    "scene.yaml with a YAML tag": (_write("scene.yaml", "seed: !!python/object:os.system {}\n"), "scene.yaml"),
}


@pytest.mark.parametrize("name", REPRODUCERS)
def test_issue_reproducers_exit_2_naming_the_file(name, pristine, strangers, tmp_path):
    damage, file = REPRODUCERS[name]
    _Payload.marker.unlink(missing_ok=True)
    variant = Variant(name, "synthetic", damage, names=file, commands=(("report",), ("measure", "--quiet")))
    for result in run_variant(variant, pristine, strangers, tmp_path):
        assert result.exit_code == 2
    assert not _Payload.marker.exists(), "the foreign pickle's payload ran"


def test_an_edited_manifold_family_stops_every_command(pristine, strangers, tmp_path):
    """The worst case of the issue: before, `sim measure/attack/render/report/animate` measured the
    wrong geometry and exited 0."""
    variant = Variant("family", "synthetic", _edit_yaml(_set("manifold", "family", "sine_sheet")),
                      names="scene.yaml", commands=STAGE_COMMANDS)
    for result in run_variant(variant, pristine, strangers, tmp_path):
        assert result.exit_code == 2 and "scene.yaml" in result.output
        # the integrity check, or (a family without the flat's fields) validation of the run's copy
        assert "edited or replaced after the run" in result.output or "run's own copy of its scene" in result.output


# --------------------------------------------------------------------------- what must keep working


def test_commands_that_rewrite_the_scene_keep_the_run_loadable(pristine, strangers, tmp_path):
    """`sim measure --set` rewrites scene.yaml's measure section: the run still loads after it."""
    variant = Variant("measure --set", "synthetic", lambda run, _: None, expect="ok",
                      commands=(("measure", "--quiet", "--set", "measure.n_points=8", "--set", "measure.attacks.enabled=false",
                                 "--set", "measure.final_height_resolution=6"), ("report",)))
    run_variant(variant, pristine, strangers, tmp_path)
    assert "n_points: 8" in (tmp_path / "runs" / "sheet_two_class" / "scene.yaml").read_text()


def test_a_real_run_stays_loadable_after_a_rerun(pristine, strangers, tmp_path):
    """`sim attack` on a real run rewrites points.npz and metrics.json: the digests follow."""
    variant = Variant("real attack", "real", lambda run, _: None, expect="ok",
                      commands=(("attack", "--quiet", "--set", "measure.attacks.n_points=2"), ("report",)))
    run_variant(variant, pristine, strangers, tmp_path)


@pytest.mark.parametrize("path", SYNTHETIC_SCENES, ids=lambda p: p.stem)
def test_scene_digest_survives_the_round_trip_through_scene_yaml(path, tmp_path):
    """What write_run records (the scene as validated) is what a loader recomputes from scene.yaml."""
    scene = load_scene(path)
    (tmp_path / "scene.yaml").write_text(scene.to_yaml())
    again = read_scene(tmp_path, "synthetic")
    excluded = REWRITTEN_SECTIONS["synthetic"]
    assert scene_digest(again, excluded) == scene_digest(scene, excluded)
    assert scene_digest(again.model_copy(update={"seed": scene.seed + 1}), excluded) != scene_digest(scene, excluded)


# --------------------------------------------------------------------------- hypothesis


def _hypothesis_run(pristine, strangers, damage, kind="synthetic"):
    with tempfile.TemporaryDirectory() as workspace:
        run_variant(Variant("hypothesis", kind, damage, expect="either"), pristine, strangers, Path(workspace))


def draw_byte_damage(data, pristine) -> tuple[str, Callable]:
    """(kind of run, damage): bytes of one file replaced from a random offset, the rest kept or cut."""
    kind = data.draw(st.sampled_from(["synthetic", "real"]))
    name = data.draw(st.sampled_from(SYNTHETIC_FILES if kind == "synthetic" else REAL_FILES))
    start = data.draw(st.integers(0, (pristine[kind] / name).stat().st_size - 1))
    junk = data.draw(st.binary(min_size=0, max_size=64))
    keep_tail = data.draw(st.booleans())

    def damage(run, _):
        original = (run / name).read_bytes()
        (run / name).write_bytes(original[:start] + junk + (original[start + len(junk):] if keep_tail else b""))

    return kind, damage


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)


def _json_paths(value, path=()):
    """Every path into a JSON value (of lists: the first two items and the last, which readers single out)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index in sorted({0, 1, len(value) - 1} & set(range(len(value)))):
            yield from _json_paths(value[index], path + (index,))


def draw_metrics_edit(data, pristine) -> tuple[str, Callable]:
    """(kind of run, damage): one value of metrics.json deleted or replaced by random JSON."""
    kind = data.draw(st.sampled_from(["synthetic", "real"]))
    metrics = json.loads((pristine[kind] / "metrics.json").read_text())
    paths = [p for p in _json_paths(metrics) if p and p[0] != "provenance" and "history" not in p]
    path = data.draw(st.sampled_from(paths))
    delete = data.draw(st.booleans())
    value = None if delete else data.draw(JSON_VALUES)

    def edit(metrics):
        node = metrics
        for key in path[:-1]:
            node = node[key]
        if delete:
            node.pop(path[-1])
        else:
            node[path[-1]] = value

    return kind, _edit_metrics(edit)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_byte_damage(pristine, strangers, data):
    kind, damage = draw_byte_damage(data, pristine)
    _hypothesis_run(pristine, strangers, damage, kind)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_metrics_edits(pristine, strangers, data):
    kind, damage = draw_metrics_edit(data, pristine)
    _hypothesis_run(pristine, strangers, damage, kind)
