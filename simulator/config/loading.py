"""Reading experiment files: the YAML dialect, `--set` overrides, and scene loading.

    scene = load_scene("scenes/sheet_two_class.yaml", overrides={"train.steps": 50})
    scene = scene_from_dict({"manifold": {"family": "flat"}, "labels": {"rule": "stripes"}})

`read_yaml_file`, `validate_run_file` (and under them `parse_yaml`, `set_dotted`) serve the
real-image experiment file (`config.real`) too. Every failure is a SceneError naming the file,
the field path, the bad value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from pydantic import ValidationError

from simulator.config.messages import describe_validation_error
from simulator.config.scene import RunFile, Scene, check_run_name
from simulator.errors import SceneError

RunFileT = TypeVar("RunFileT", bound=RunFile)


def load_scene(path: str | Path, overrides: dict[str, Any] | None = None) -> Scene:
    """Read and validate a scene file.

    `overrides` maps dotted field paths to values (e.g. {"train.steps": 50}) applied before
    validation, so a command-line override gets the same checks as the file.
    Raises SceneError with a message naming the file, the field path, the bad value and what
    is allowed.
    """
    path = Path(path)
    raw = read_yaml_file(path, "scene", "Pass the path of a YAML scene, e.g. scenes/sheet_two_class.yaml; "
                                        "`sim scenes list` shows the shipped ones.")
    return scene_from_dict(raw, source=str(path), default_name=path.stem, overrides=overrides)


def scene_from_dict(
    raw: Any, source: str = "<scene>", default_name: str = "scene", overrides: dict[str, Any] | None = None
) -> Scene:
    """Validate a scene given as a mapping (what `load_scene` does after reading YAML)."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise SceneError(
            f"{source}: the scene is {kind}, but it must be a mapping with at least the sections "
            f"'manifold' and 'labels' (see scenes/sheet_two_class.yaml)."
        )
    return validate_run_file(Scene, raw, source, default_name, overrides, describe_validation_error)


# --------------------------------------------------------------------------- shared by every run file


def read_yaml_file(path: Path, kind: str, usage: str) -> Any:
    """The parsed YAML of the `kind` file at `path` ("scene", "experiment"); SceneError (naming
    the file and, for bad syntax, the line) when it is missing, not text or not YAML. `usage`
    ends the not-found message: what to pass instead."""
    if not path.is_file():
        hint = " (it is a folder)" if path.is_dir() else ""
        raise SceneError(f"{path}: {kind} file not found{hint}. {usage}")
    try:
        return parse_yaml(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SceneError(f"{path}: not valid YAML{where}: {problem}. Fix the syntax and try again.") from None
    except UnicodeDecodeError:
        raise SceneError(f"{path}: not a text file; a {kind} is a UTF-8 YAML file.") from None


def validate_run_file(model: type[RunFileT], raw: dict, source: str, default_name: str,
                      overrides: dict[str, Any] | None, describe: Callable[[ValidationError, str, set[str]], str]
                      ) -> RunFileT:
    """`raw` with the dotted `overrides` applied (to a copy), validated as `model` and named
    `default_name` when it names itself nothing. `describe(error, source, overridden paths)`
    words a ValidationError as the SceneError's message."""
    raw = dict(raw)
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    try:
        parsed = model.model_validate(raw)
    except ValidationError as error:
        raise SceneError(describe(error, source, set(overrides or {}))) from None
    if parsed.name is None:
        try:  # the file's own name: checked like a `name:` field, before any work starts
            check_run_name(default_name)
        except ValueError as error:
            raise SceneError(f"{source}: the run is named after the file, and {error}; add a `name:` field "
                             f"or rename the file.") from None
        parsed = parsed.model_copy(update={"name": default_name})
    return parsed


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load semantics, but a key given twice is an error instead of 'last one wins'."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the second one would silently win); keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, which differs from YAML 1.2 in two ways that bite scene files:
# yes/no/on/off are booleans (so `modes: [free, on, off]` would become [free, True, False]) and
# `1e-3` without a dot is a string. Use YAML 1.2's booleans (true/false) and floats.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    """Parse scene YAML (safe loader; duplicate keys rejected; 1e-3 is a float)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def set_dotted(mapping: dict, dotted: str, value: Any) -> None:
    """Set mapping["a"]["b"]["c"] = value for dotted "a.b.c", copying (never mutating) nested sections."""
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = mapping.get(key)
        mapping[key] = child = dict(child) if isinstance(child, dict) else {}
        mapping = child
    mapping[keys[-1]] = value


def scene_json_schema() -> dict:
    """JSON Schema of scene files (for editor autocompletion)."""
    schema = Scene.model_json_schema()
    schema["title"] = "Dimpled-manifold simulator scene"
    return schema
