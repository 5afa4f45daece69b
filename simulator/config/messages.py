"""A pydantic ValidationError of a scene (or a real-image experiment), as the messages a user
reads: one line per problem, "file: section.field: what is wrong; what is allowed".

pydantic's raw errors name internal things (the union tag in the location, "Value error, "
prefixes) and never list the allowed keys; this module rewrites them. A value beyond a field's
limit is followed by why the limit is there (the field's `x-limit`); a string that YAML 1.1
would have read as a number or boolean (1:30, 010, yes) by what to write instead.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from simulator.config.scene import FAMILY_NAMES, RULE_NAMES, Scene

# Discriminated unions put the tag (e.g. 'flat') into the error location; users never write it.
_TAG_CHOICES = {"family": set(FAMILY_NAMES), "rule": set(RULE_NAMES)}
_UNION_TAGS = _TAG_CHOICES["family"] | _TAG_CHOICES["rule"]
_TAGGED_SECTIONS = {"manifold", "labels"}


# Error types whose message gains the field's reason for its limit.
_LIMIT_ERRORS = {"less_than_equal", "less_than", "greater_than", "greater_than_equal", "finite_number", "too_long"}
# Error types of a value of the wrong type (where a YAML 1.1 reading is worth mentioning).
_TYPE_ERRORS = {"int_type", "float_type", "bool_type", "int_parsing", "float_parsing", "bool_parsing"}
# Longest value quoted in full; longer ones are shortened (a message stays one screen).
_SHOWN_CHARACTERS = 60


def shown(value: Any) -> str:
    """repr(value), shortened when long (a 400-digit integer, a page of text)."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    size = f"{len(str(value))} digits" if isinstance(value, int) else f"{len(text)} characters"
    return f"{text[:_SHOWN_CHARACTERS - 20]}...{text[-8:]} ({size})"


def explanation(item: dict, root: type[BaseModel]) -> str:
    """What to add to pydantic's message of `item`: why the field's limit is there, or how YAML 1.1
    would have read a string; empty when neither applies."""
    if item["type"] in _LIMIT_ERRORS:
        field = _field_at(root, item["loc"])
        extra = getattr(field, "json_schema_extra", None)
        if isinstance(extra, dict) and "x-limit" in extra:
            return f"; {extra['x-limit']}"
    if item["type"] in _TYPE_ERRORS and isinstance(item.get("input"), str):
        return yaml_11_hint(item["input"])
    return ""


def yaml_11_hint(text: str) -> str:
    """For a string YAML 1.1 reads as a number or boolean (1:30 as 90, 010 as 8, yes as true): say so."""
    if len(text) > 40:
        return ""
    try:
        reading = yaml.safe_load(text)  # PyYAML's own YAML 1.1 reading, of a short scalar
    except (yaml.YAMLError, ValueError, TypeError):
        return ""
    if isinstance(reading, bool):
        return (f"; YAML 1.1 would read {text!r} as {str(reading).lower()}, but experiment files are YAML 1.2: "
                f"write {str(reading).lower()}")
    if isinstance(reading, (int, float)):
        return (f"; YAML 1.1 would read {text!r} as {reading!r}, but experiment files are YAML 1.2, which does "
                f"not read it as a number: write the number you mean in plain decimal (no leading zeros, "
                f"underscores, colons or 0x)")
    return ""


def describe_validation_error(error: ValidationError, source: str, overridden: set[str] = frozenset()) -> str:
    """The message of a scene's ValidationError; `overridden`: dotted paths set by --set overrides."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 2 and loc[0] in _TAGGED_SECTIONS and loc[1] in _UNION_TAGS:
            loc.pop(1)
        message = item["msg"].removeprefix("Value error, ")
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(item["loc"]))
            message = f"unknown key; allowed keys here are: {allowed}"
        elif kind == "missing":
            message = "missing required field"
            if loc == ["manifold"]:
                message += f"; add a 'manifold:' section with a 'family:' ({', '.join(FAMILY_NAMES)})"
            elif loc == ["labels"]:
                message += f"; add a 'labels:' section with a 'rule:' ({', '.join(RULE_NAMES)})"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            key = "family" if loc[:1] == ["manifold"] else "rule"
            choices = ", ".join(sorted(_TAG_CHOICES[key]))
            loc.append(key)
            if kind == "union_tag_invalid":
                message = f"{item['ctx']['tag']!r} is not known; choose one of: {choices}"
            else:
                given = item.get("input")
                keys = f" (keys given: {', '.join(map(str, given))})" if isinstance(given, dict) and given else ""
                message = f"missing; choose one of: {choices}{keys}"
        elif item.get("input", ...) is None:
            message = f"is empty; {message}"
        elif "input" in item and kind not in ("value_error",) and not isinstance(item["input"], dict):
            message = f"{shown(item['input'])}: {message}"
        message += explanation(item, Scene)
        # Validators that check several fields name the offending one first ("ambient_dim: ...");
        # fold it into the location so every message reads "file: section.field: problem".
        named = re.match(r"([a-z_][a-z0-9_.]*): ", message)
        if kind == "value_error" and named:
            loc.append(named.group(1))
            message = message[named.end():]
        where = ".".join(loc)
        if _overridden(where, overridden):
            message += " (this value came from a --set override, not from the file)"
        lines.append(f"{source}: {where + ': ' if where else ''}{message}")
    return "\n".join(lines)


def _overridden(where: str, overridden: set[str]) -> bool:
    """True when the value at `where` (e.g. model.hidden.0) came from a --set of it or a section above it."""
    return any(where == path or where.startswith(path + ".") for path in overridden)


def _field_at(root: type[BaseModel], loc: tuple):
    """The pydantic FieldInfo that location `loc` (as pydantic gives it) names, or None."""
    model: Any = root
    field = None
    for part in loc:
        if isinstance(part, int):  # a list index: the item is checked under the list's field
            continue
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return None
            model = field.annotation
        else:
            model = _tagged_member(model, part)  # the tag of a discriminated union
            if model is None:
                return None
        model = _model_in(model)
    return field


def _model_in(annotation: Any) -> Any:
    """The model class inside `X | None` or `list[X]`, else `annotation` itself (a tagged union)."""
    members = getattr(annotation, "__args__", ())
    models = [member for member in members if isinstance(member, type) and issubclass(member, BaseModel)]
    return models[0] if len(models) == 1 and len(members) <= 2 else annotation


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc` (for 'unknown key' errors)."""
    model: Any = Scene
    for part in loc[:-1]:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            model = _tagged_member(annotation, None) or annotation
        else:
            member = _tagged_member(model, part)
            if member is None:
                return []
            model = member
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _tagged_member(annotation: Any, tag: Any):
    """The member of a tagged union whose tag is `tag` (None: no selection possible)."""
    members = getattr(annotation, "__args__", None)
    if not members:
        return None
    for member in members:
        if hasattr(member, "__args__") and not (isinstance(member, type) and issubclass(member, BaseModel)):
            found = _tagged_member(member, tag)
            if found is not None:
                return found
        if isinstance(member, type) and issubclass(member, BaseModel):
            for key in ("family", "rule"):
                field = member.model_fields.get(key)
                if field is not None and tag in getattr(field.annotation, "__args__", ()):
                    return member
    return None


def describe_real_validation_error(error: ValidationError, source: str, overridden: set[str] = frozenset(),
                                   root: type[BaseModel] | None = None) -> str:
    """The message of a real-image experiment's ValidationError (plainer: no tagged unions).
    `root`: the experiment's model class, where the limits' reasons are looked up."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (see docs/real_images.md for the allowed ones)"
        elif "input" in item and not isinstance(item["input"], dict):
            message = f"{shown(item['input'])}: {message}"
        message += explanation(item, root) if root is not None else ""
        if _overridden(where, overridden):
            message += " (this value came from a --set override, not from the file)"
        lines.append(f"{source}: {where + ': ' if where else ''}{message}")
    return "\n".join(lines)
