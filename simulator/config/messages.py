"""A pydantic ValidationError of a scene (or a real-image experiment), as the messages a user
reads: one line per problem, "file: section.field: what is wrong; what is allowed".

pydantic's raw errors name internal things (the union tag in the location, "Value error, "
prefixes) and never list the allowed keys; this module rewrites them.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from simulator.config.scene import FAMILY_NAMES, RULE_NAMES, Scene

# Discriminated unions put the tag (e.g. 'flat') into the error location; users never write it.
_TAG_CHOICES = {"family": set(FAMILY_NAMES), "rule": set(RULE_NAMES)}
_UNION_TAGS = _TAG_CHOICES["family"] | _TAG_CHOICES["rule"]
_TAGGED_SECTIONS = {"manifold", "labels"}


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
            message = f"{item['input']!r}: {message}"
        # Validators that check several fields name the offending one first ("ambient_dim: ...");
        # fold it into the location so every message reads "file: section.field: problem".
        named = re.match(r"([a-z_][a-z0-9_.]*): ", message)
        if kind == "value_error" and named:
            loc.append(named.group(1))
            message = message[named.end():]
        where = ".".join(loc)
        if where in overridden:
            message += " (this value came from a --set override, not from the file)"
        lines.append(f"{source}: {where + ': ' if where else ''}{message}")
    return "\n".join(lines)


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


def describe_real_validation_error(error: ValidationError, source: str, overridden: set[str] = frozenset()) -> str:
    """The message of a real-image experiment's ValidationError (plainer: no tagged unions)."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (see docs/real_images.md for the allowed ones)"
        elif "input" in item and not isinstance(item["input"], dict):
            message = f"{item['input']!r}: {message}"
        lines.append(f"{source}: {where + ': ' if where else ''}{message}")
    return "\n".join(lines)
