"""Tests of the scene schema: the shipped scene, error messages, overrides, JSON Schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple, get_args

import pytest
import torch
import yaml

from simulator.config.loading import load_scene, scene_from_dict, scene_json_schema, set_dotted
from simulator.config.real import ClassifierSpec
from simulator.config.scene import FAMILY_NAMES, LBFGS_HISTORY, LBFGS_ITERATIONS, RULE_NAMES, ModelSpec, Scene, TrainSpec
from simulator.errors import SceneError
from simulator.models import ACTIVATIONS
from simulator.training.optimizers import OPTIMIZERS, make_optimizer

SHIPPED = Path(__file__).resolve().parents[1] / "scenes" / "sheet_two_class.yaml"

FAMILIES = ["flat", "sphere", "torus", "swiss_roll", "sine_sheet", "concentric_spheres"]
SECTIONS = ["manifold", "labels", "data", "model", "train", "snapshots", "measure", "render"]

# The smallest valid scene; most malformed cases add one bad section to it.
BASE = "manifold:\n  family: flat\nlabels:\n  rule: clusters\n"


# --------------------------------------------------------------------------- shipped scene


def test_shipped_scene_loads_with_defaults_filled():
    scene = load_scene(SHIPPED)
    assert isinstance(scene, Scene)
    assert scene.name == "sheet_two_class"  # no `name:` in the file: the file stem
    assert scene.manifold.family == "flat"
    assert scene.manifold.dim == 2 and scene.manifold.ambient_dim == 3
    assert scene.labels.rule == "clusters" and scene.labels.n_clusters == 16
    assert scene.train.steps == 2000
    # sections and fields the file leaves out get their documented defaults
    assert scene.train.device == "auto"
    assert scene.train.momentum == 0.9
    assert scene.data.noise_std == 0.0
    assert scene.measure.n_points == 200
    assert scene.render.dpi == 120
    assert scene.render.cross_section_half_width is None


def test_shipped_scene_round_trips_through_resolved_yaml(tmp_path):
    scene = load_scene(SHIPPED)
    text = scene.to_yaml()
    resolved = yaml.safe_load(text)
    assert set(SECTIONS) <= set(resolved)
    assert resolved["name"] == "sheet_two_class"
    assert resolved["train"]["device"] == "auto"  # defaults are written out

    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    again = load_scene(path)
    assert again.model_dump() == scene.model_dump()
    assert again.name == "sheet_two_class"  # the explicit name wins over the new file stem
    assert again.to_yaml() == text


# --------------------------------------------------------------------------- malformed scenes


class Bad(NamedTuple):
    text: str
    where: str | None  # dotted field path (None: the whole file is wrong)
    value: str | None  # the offending value as the message shows it
    allowed: tuple[str, ...]  # fragments saying what is allowed / how to fix it


BAD_SCENES = {
    "ambient-dim-below-host-dim": Bad(
        "manifold:\n  family: flat\n  ambient_dim: 2\nlabels:\n  rule: clusters\n",
        "manifold.ambient_dim",
        "2",
        ("smaller than the plane's host dimension 3", "at least 3"),
    ),
    "ambient-dim-below-sphere-host": Bad(
        "manifold:\n  family: sphere\n  dim: 3\n  ambient_dim: 3\nlabels:\n  rule: random\n",
        "manifold.ambient_dim",
        "3",
        ("host dimension 4", "at least 4"),
    ),
    "unknown-top-level-key": Bad(
        BASE + "trian:\n  steps: 5\n",
        "trian",
        None,
        ("unknown key", "allowed keys here are:", *SECTIONS, "name", "seed"),
    ),
    "unknown-train-key": Bad(
        BASE + "train:\n  step: 5\n",
        "train.step",
        None,
        ("unknown key", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "steps", "device"),
    ),
    "unknown-key-for-this-family": Bad(
        "manifold:\n  family: torus\n  radius: 2\nlabels:\n  rule: random\n",
        "manifold.radius",
        None,
        ("unknown key", "major_radius", "minor_radius", "ambient_dim"),
    ),
    "unknown-key-for-this-rule": Bad(
        BASE + "  n_stripes: 3\n",
        "labels.n_stripes",
        None,
        ("unknown key", "n_clusters", "layout", "assignment", "spread"),
    ),
    "unknown-manifold-family": Bad(
        "manifold:\n  family: klein_bottle\nlabels:\n  rule: clusters\n",
        "manifold.family",
        "'klein_bottle'",
        ("is not known", "choose one of", *FAMILIES),
    ),
    "missing-labels-rule": Bad(
        "manifold:\n  family: flat\nlabels:\n  n_classes: 2\n",
        "labels.rule",
        None,
        ("missing", "choose one of", "clusters", "half_space", "stripes", "checkerboard", "component"),
    ),
    "missing-labels-section": Bad(
        "manifold:\n  family: flat\n",
        "labels",
        None,
        ("missing required field", "rule:", "clusters"),
    ),
    "string-for-train-steps": Bad(
        BASE + "train:\n  steps: many\n",
        "train.steps",
        "'many'",
        ("valid integer",),
    ),
    "fractional-train-steps": Bad(
        BASE + "train:\n  steps: 2.5\n",
        "train.steps",
        "2.5",
        ("valid integer",),
    ),
    "negative-learning-rate": Bad(
        BASE + "train:\n  lr: -0.1\n",
        "train.lr",
        "-0.1",
        ("greater than 0",),
    ),
    "optimizer-adamw": Bad(
        BASE + "train:\n  optimizer: adamw\n",
        "train.optimizer",
        "'adamw'",
        ("'adam', 'sgd' or 'lbfgs'",),
    ),
    "hidden-width-zero": Bad(
        BASE + "model:\n  hidden: [64, 0]\n",
        "model.hidden.1",
        "0",
        ("greater than or equal to 1",),
    ),
    "torus-tube-too-fat": Bad(
        "manifold:\n  family: torus\n  major_radius: 1.0\n  minor_radius: 1.5\nlabels:\n  rule: random\n",
        "manifold.minor_radius",
        "1.5",
        ("must be smaller than major_radius 1.0",),
    ),
    "concentric-outer-not-larger": Bad(
        "manifold:\n  family: concentric_spheres\n  inner_radius: 1.0\n  outer_radius: 0.8\n"
        "labels:\n  rule: component\n",
        "manifold.outer_radius",
        "0.8",
        ("must be larger than inner_radius 1.0",),
    ),
    "clusters-grid-not-kth-power": Bad(
        BASE + "  n_clusters: 10\n",
        "labels.n_clusters",
        "10",
        ("grid", "k=2", "9", "layout: random"),
    ),
    "component-labels-on-sphere": Bad(
        "manifold:\n  family: sphere\nlabels:\n  rule: component\n",
        "labels.rule",
        "'component'",
        ("concentric_spheres", "not sphere"),
    ),
    "stripes-axis-out-of-range": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: stripes\n  axis: 2\n",
        "labels.axis",
        "2",
        ("out of range", "(0..1)"),
    ),
    "half-space-direction-wrong-length": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: half_space\n  direction: [1.0, 0.0, 0.0]\n",
        "labels.direction",
        "3 entries",
        ("k=2 chart coordinates",),
    ),
    "half-space-three-classes": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: half_space\n  n_classes: 3\n",
        "labels.n_classes",
        "got 3",
        ("exactly 2 classes",),
    ),
    "checkerboard-more-axes-than-k": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: checkerboard\n  n_axes: 3\n",
        "labels.n_axes",
        "3",
        ("exceeds the manifold's k=2",),
    ),
    "fur-on-the-shape-axis": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: shape_and_fur\n  fur_axis: 0\n",
        "labels.fur_axis",
        "0",
        ("also the shape axis", "its own chart axis"),
    ),
    "fur-axis-out-of-range": Bad(
        "manifold:\n  family: flat\nlabels:\n  rule: shape_and_fur\n  fur_axis: 2\n",
        "labels.fur_axis",
        "2",
        ("out of range", "(0..1)"),
    ),
    "component-three-classes": Bad(
        "manifold:\n  family: concentric_spheres\nlabels:\n  rule: component\n  n_classes: 3\n",
        "labels.n_classes",
        "got 3",
        ("exactly 2 classes",),
    ),
    "measure-points-exceed-test-set": Bad(
        BASE + "data:\n  n_test: 50\nmeasure:\n  n_points: 100\n",
        "measure.n_points",
        "100",
        ("larger than data.n_test 50",),
    ),
    "name-with-slash": Bad(
        "name: runs/a\n" + BASE,
        "name",
        "'runs/a'",
        ("not usable as a folder name", "letters, digits"),
    ),
    "invalid-yaml-syntax": Bad(
        BASE + "    n_clusters: 4\n",  # over-indented under a scalar
        None,
        None,
        ("not valid YAML", "line 5", "Fix the syntax"),
    ),
    "empty-file": Bad(
        "",
        None,
        None,
        ("the scene is empty", "must be a mapping", "'manifold'", "'labels'"),
    ),
    "yaml-list": Bad(
        "- manifold\n- labels\n",
        None,
        None,
        ("the scene is a list", "must be a mapping", "'manifold'", "'labels'"),
    ),
}


@pytest.mark.parametrize("bad", list(BAD_SCENES.values()), ids=list(BAD_SCENES))
def test_malformed_scene_message(tmp_path, bad):
    path = tmp_path / "bad_scene.yaml"
    path.write_text(bad.text)
    with pytest.raises(SceneError) as info:
        load_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # (a) the file
    if bad.where is not None:
        assert f"{path}: {bad.where}: " in message, message  # (b) the dotted field path
    if bad.value is not None:
        assert bad.value in message, message  # (c) the bad value
    for fragment in bad.allowed:
        assert fragment in message, (fragment, message)  # (d) what is allowed


def test_every_error_is_reported_on_its_own_line(tmp_path):
    path = tmp_path / "two_errors.yaml"
    path.write_text(BASE + "train:\n  lr: -1\n  steps: 0\n")
    with pytest.raises(SceneError) as info:
        load_scene(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: train.lr: -1: ")
    assert lines[1].startswith(f"{path}: train.steps: 0: ")


def test_missing_file(tmp_path):
    path = tmp_path / "no_such_scene.yaml"
    with pytest.raises(SceneError) as info:
        load_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: scene file not found")
    assert "sheet_two_class.yaml" in message


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(SceneError, match="it is a folder") as info:
        load_scene(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_binary_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(SceneError) as info:
        load_scene(path)
    assert str(info.value).startswith(f"{path}: not a text file")


def test_scene_from_dict_names_its_source():
    with pytest.raises(SceneError) as info:
        scene_from_dict({"manifold": {"family": "flat"}, "labels": {"rule": "clusters"}, "seed": "x"},
                        source="inline")
    assert str(info.value).startswith("inline: seed: 'x': ")


# --------------------------------------------------------------------------- overrides


def test_override_sets_value():
    scene = load_scene(SHIPPED, overrides={"train.steps": 5})
    assert scene.train.steps == 5
    assert scene.train.lr == 0.003  # siblings in the file are kept


def test_override_creates_missing_section(tmp_path):
    path = tmp_path / "minimal.yaml"
    path.write_text(BASE)
    scene = load_scene(path, overrides={"render.dpi": 60, "seed": 7})
    assert scene.render.dpi == 60 and scene.seed == 7
    assert scene.render.cross_section_resolution == 200


def test_invalid_override_is_validated_like_the_file():
    with pytest.raises(SceneError) as info:
        load_scene(SHIPPED, overrides={"train.steps": -1})
    message = str(info.value)
    assert "train.steps: -1" in message
    assert "greater than or equal to 1" in message


def test_overrides_do_not_mutate_the_input_mapping():
    raw = {"manifold": {"family": "flat"}, "labels": {"rule": "clusters"}, "train": {"steps": 10}}
    before = copy.deepcopy(raw)
    scene = scene_from_dict(raw, overrides={"train.steps": 3, "manifold.dim": 1})
    assert scene.train.steps == 3 and scene.manifold.dim == 1
    assert raw == before


# --------------------------------------------------------------------------- JSON Schema


def test_json_schema_describes_every_section():
    schema = scene_json_schema()
    assert isinstance(schema, dict)
    assert set(SECTIONS) <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"manifold", "labels"}
    manifold = schema["properties"]["manifold"]
    assert manifold["discriminator"]["propertyName"] == "family"
    assert set(manifold["discriminator"]["mapping"]) == set(FAMILIES)
    # nested models forbid unknown keys too
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values() if d.get("type") == "object")


def test_yaml_12_booleans_floats_and_duplicate_keys(tmp_path):
    """on/off stay strings (attack modes), 1e-3 is a float, a repeated key is an error."""
    path = tmp_path / "modes.yaml"
    path.write_text("manifold: {family: flat}\nlabels: {rule: random}\ntrain: {lr: 1e-3}\n"
                    "measure: {attacks: {modes: [free, on, off]}}\n")
    scene = load_scene(path)
    assert scene.measure.attacks.modes == ["free", "on", "off"] and scene.train.lr == 0.001
    path.write_text("manifold: {family: flat}\nlabels: {rule: random}\nseed: 1\nseed: 2\n")
    with pytest.raises(SceneError, match="duplicate key 'seed'"):
        load_scene(path)


def test_set_dotted_copies_sections_it_walks_through():
    inner = {"steps": 5}
    raw = {"train": inner, "seed": 1}
    set_dotted(raw, "train.lr", 0.1)
    set_dotted(raw, "render.camera.zoom", 2.0)
    assert raw == {"train": {"steps": 5, "lr": 0.1}, "seed": 1, "render": {"camera": {"zoom": 2.0}}}
    assert inner == {"steps": 5}  # the caller's nested section is not mutated


# --------------------------------------------------------------------------- names defined once


def _literal(model, field):
    return set(get_args(model.model_fields[field].annotation))


def test_tag_lists_are_the_schema_discriminators():
    mapping = scene_json_schema()["properties"]
    assert list(FAMILY_NAMES) == FAMILIES and len(set(RULE_NAMES)) == len(RULE_NAMES)
    assert set(mapping["labels"]["discriminator"]["mapping"]) == set(RULE_NAMES)


@pytest.mark.parametrize("section, key, names", [("manifold", "family", FAMILY_NAMES), ("labels", "rule", RULE_NAMES)])
def test_unknown_and_missing_tags_list_every_name(section, key, names):
    for given, phrase in (({key: "nope"}, "'nope' is not known"), ({}, "missing")):
        raw = {"manifold": {"family": "flat"}, "labels": {"rule": "clusters"}, section: given}
        with pytest.raises(SceneError) as info:
            scene_from_dict(raw, source="s.yaml")
        assert f"s.yaml: {section}.{key}: {phrase}" in str(info.value)
        assert ", ".join(sorted(names)) in str(info.value)
    raw = {"manifold": {"family": "flat"}, "labels": {"rule": "clusters"}}
    del raw[section]
    with pytest.raises(SceneError, match=f"add a '{section}:' section with a '{key}:' \\({', '.join(names)}\\)"):
        scene_from_dict(raw)


def test_activation_names_are_the_model_registry():
    assert _literal(ModelSpec, "activation") == set(ACTIVATIONS) == _literal(ClassifierSpec, "activation")


@pytest.mark.parametrize("name", sorted(_literal(TrainSpec, "optimizer")))
def test_every_schema_optimizer_is_built_with_the_spec_settings(name):
    assert _literal(TrainSpec, "optimizer") == set(OPTIMIZERS)
    spec = TrainSpec(optimizer=name, lr=0.25, momentum=0.5, weight_decay=0.125)
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = make_optimizer([parameter], spec.optimizer, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    expected = {"adam": torch.optim.Adam([parameter], lr=0.25, weight_decay=0.125),
                "lbfgs": torch.optim.LBFGS([parameter], lr=0.25, max_iter=LBFGS_ITERATIONS,
                                           history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe"),
                "sgd": torch.optim.SGD([parameter], lr=0.25, momentum=0.5, weight_decay=0.125)}[name]
    assert type(optimizer) is type(expected)
    assert optimizer.defaults == expected.defaults


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="optimizer: must be one of"):
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], "rmsprop", lr=1.0, weight_decay=0.0)
