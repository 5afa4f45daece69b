"""Reading experiment files: the YAML dialect, `--set` overrides, and scene loading.

    scene = load_scene("scenes/sheet_two_class.yaml", overrides={"train.steps": 50})
    scene = scene_from_dict({"manifold": {"family": "flat"}, "labels": {"rule": "stripes"}})

`read_yaml_file`, `validate_run_file` (and under them `parse_yaml`, `set_dotted`) serve the
real-image experiment file (`config.real`) too. Every failure is a SceneError naming the file,
the field path, the bad value and what is allowed.

The YAML dialect is plain YAML 1.2 (core schema), read with bounded work: a document is at most
MAX_DOCUMENT_BYTES long, MAX_DEPTH levels deep and MAX_NODES values once its aliases are
expanded, so no file (not even an alias bomb) can make validation slow or deep. YAML 1.1 forms
that PyYAML would otherwise reinterpret (1:30 as 90, 010 as 8, yes/on as true, `<<` merges,
timestamps, !!binary) are never read as numbers: they stay strings the schema refuses, or are
refused here, each with a message saying what to write instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
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
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:  # before reading it: the file may be huge
            raise _document_too_large(size)
        return parse_yaml(path.read_text())
    except RefusedYaml as error:
        mark = error.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SceneError(f"{path}{where}: {error.problem}.") from None
    except OSError as error:
        raise SceneError(f"{path}: cannot read the {kind} file ({error.strerror or error}).") from None
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


# --------------------------------------------------------------------------- the YAML dialect

# Experiment files are a few kilobytes (the shipped ones are under 3 KB) and 5 levels deep.
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DEPTH = 32
# Values (scalars, lists, mappings) in a document after its aliases are expanded: a scene has
# about a hundred; the limit stops alias bombs (nine lines can expand to 10^9 values).
MAX_NODES = 10_000
# Digits of an integer. Every count has a limit far below this; longer ones are refused before
# Python converts them (it refuses beyond 4300 digits itself, and takes quadratic time).
MAX_INTEGER_DIGITS = 100

_TAG = "tag:yaml.org,2002:"
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")  # no leading zeros: 010 is octal 8 in YAML 1.1
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
                        |[-+]?[0-9]+[eE][-+]?[0-9]+
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.VERBOSE)
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


class RefusedYaml(yaml.MarkedYAMLError):
    """Well-formed YAML that experiment files do not accept (too large, too deep, a YAML 1.1-only
    form). `problem` says what and how to fix it; `problem_mark` where, when known."""


def _refuse(problem: str, mark=None) -> RefusedYaml:
    return RefusedYaml(problem=problem, problem_mark=mark)


def _document_too_large(size: int) -> RefusedYaml:
    return _refuse(f"the file is {size:,} bytes, more than the {MAX_DOCUMENT_BYTES:,} bytes an experiment file "
                   f"may have (the shipped ones are under 3 KB; the limit keeps validation fast); shorten it")


class _SceneLoader(yaml.SafeLoader):
    """yaml.safe_load with YAML 1.2 scalars, bounded size and depth, and no duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    # -- scanning: bounded bracket nesting (PyYAML's scanner slows quadratically with it)

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= MAX_DEPTH:
            raise _too_deep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    # -- composing: bounded depth and node count (aliases are counted by `_check_expansion`)

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if not self.check_event(yaml.AliasEvent):
            self._composed += 1
            if self._composed > MAX_NODES:
                raise _too_many_nodes(mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # checked while composing: PyYAML's composer recurses
                raise _too_deep(mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node

    # -- constructing: YAML 1.2 scalars only, unique hashable keys, no merge keys

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge" or (isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<"
                                                   and key_node.style is None):
                raise _refuse("merge keys (<<: *anchor) are a YAML 1.1 feature that experiment files do not use; "
                              "write the keys out in full", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a mapping key; use a plain name", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the second one would silently win); keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_strict_int(self, node):
        text = self.construct_scalar(node)
        if not _INT.match(text):
            raise _refuse(f"{text!r} is not a plain decimal integer (YAML 1.1 reads forms such as 010, 0x1F, 0b101, "
                          f"1_000 and 1:30 as numbers in other bases); write it in decimal", node.start_mark)
        digits = len(text.lstrip("+-"))
        if digits > MAX_INTEGER_DIGITS:
            raise _refuse(f"an integer of {digits:,} digits; numbers in experiment files have at most "
                          f"{MAX_INTEGER_DIGITS} digits (every count has a far smaller limit); check the value",
                          node.start_mark)
        return int(text)

    def construct_strict_float(self, node):
        text = self.construct_scalar(node)
        if _INT.match(text):  # !!float 3
            return float(self.construct_strict_int(node))
        if not _FLOAT.match(text):
            raise _refuse(f"{text!r} is not a decimal number such as 0.5, 1e-3 or .inf", node.start_mark)
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        return math.nan if lowered == ".nan" else float(text)

    def construct_strict_bool(self, node):
        text = self.construct_scalar(node)
        if not _BOOL.match(text):
            raise _refuse(f"{text!r} is not a boolean; write true or false", node.start_mark)
        return text.lower() == "true"

    def construct_refused_tag(self, node):
        raise _refuse(f"the tag {node.tag.replace(_TAG, '!!')} is not read in experiment files, which hold only "
                      f"plain values (numbers, strings, true/false, null, lists, mappings); remove the tag",
                      node.start_mark)


def _too_deep(mark) -> RefusedYaml:
    return _refuse(f"values are nested more than {MAX_DEPTH} levels deep (experiment files need 5); flatten "
                   f"the nesting", mark)


def _too_many_nodes(mark) -> RefusedYaml:
    return _refuse(f"the document holds more than {MAX_NODES:,} values once its aliases (*name) are expanded "
                   f"(a scene has about a hundred); write the values out without repeating them", mark)


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root) -> None:
    """Refuse a node graph that aliases make recursive, deeper than MAX_DEPTH or larger than
    MAX_NODES once expanded. Each node is visited once (sizes are memoised), so an alias bomb
    is measured without being expanded."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, expanded height)
    open_nodes: set[int] = set()

    def measure(node, depth: int) -> tuple[int, int]:
        if id(node) in open_nodes:
            raise _refuse("an alias (*name) is used inside the value it names, which makes an endless "
                          "structure; write the value out", node.start_mark)
        if id(node) not in measured:
            if depth > MAX_DEPTH:
                raise _too_deep(node.start_mark)
            open_nodes.add(id(node))
            count, height = 1, 0
            for child in _children(node):
                child_count, child_height = measure(child, depth + 1)
                count, height = count + child_count, max(height, child_height + 1)
                if count > MAX_NODES:
                    raise _too_many_nodes(node.start_mark)
            open_nodes.discard(id(node))
            measured[id(node)] = count, height
        count, height = measured[id(node)]
        if depth + height > MAX_DEPTH:
            raise _too_deep(node.start_mark)
        return count, height

    if root is not None:
        measure(root, 1)


# Only the YAML 1.2 core schema's plain scalars are typed (null, true/false, decimal integers and
# floats); everything else, YAML 1.1's yes/on/off, 010, 0x1F, 1_000, 1:30 and timestamps
# included, stays a string, which the schema refuses where a number is expected (with a hint).
_SceneLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
        ("bool", _BOOL, "tTfF"), ("int", _INT, "-+0123456789"), ("float", _FLOAT, "-+0123456789."),
        ("null", _NULL, ["~", "n", "N", ""])):
    _SceneLoader.add_implicit_resolver(_TAG + _tag, _pattern, list(_first))
# Explicit tags (!!int 010) get the same strict reading; YAML 1.1's extra types are refused.
_SceneLoader.add_constructor(_TAG + "int", _SceneLoader.construct_strict_int)
_SceneLoader.add_constructor(_TAG + "float", _SceneLoader.construct_strict_float)
_SceneLoader.add_constructor(_TAG + "bool", _SceneLoader.construct_strict_bool)
for _tag in ("binary", "timestamp", "omap", "pairs", "set", "merge", "value"):
    _SceneLoader.add_constructor(_TAG + _tag, _SceneLoader.construct_refused_tag)
_SceneLoader.add_constructor(None, _SceneLoader.construct_refused_tag)


def parse_yaml(text: str):
    """Parse experiment-file YAML: YAML 1.2 scalars, duplicate keys rejected, bounded size, depth
    and alias expansion. Every problem is a yaml.YAMLError (RefusedYaml for the limits)."""
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise _document_too_large(len(text.encode("utf-8", "surrogatepass")))
    return yaml.load(text, Loader=_SceneLoader)


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
