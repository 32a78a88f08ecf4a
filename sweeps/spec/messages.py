"""Pydantic validation errors as one line per problem: the field path, the message, and what
the field allows (read off the model's JSON schema). Shared by the sweep spec and the
single-run `train` command."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ValidationError


class SpecError(ValueError):
    """A sweep spec that does not validate; the message lists every problem by field path."""


def format_number(value: float) -> str:
    """Shortest exact text of a number: 0.95 -> '0.95', 0.0 -> '0', 2.0 -> '2'."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


SEED_LIST, SEED_MAPPING = "seed list", "seed mapping"
UNION_TAGS = frozenset({SEED_LIST, SEED_MAPPING})
"""The tags of the spec's tagged unions (`grid.seeds`): pydantic puts the tag of the form a
value took in an error's path; they are left out of the path shown (no field has a space)."""


def join_path(loc: tuple[Any, ...]) -> str:
    """`('grid', 'seeds', 1)` -> `grid.seeds[1]`."""
    text = ""
    for part in loc:
        if part in UNION_TAGS:
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _options(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a (possibly `X | None`) schema node, resolved."""
    node = _resolve(node, defs)
    union = node.get("anyOf", node.get("oneOf"))
    if union is None:
        return [node]
    return [_resolve(option, defs) for option in union if option.get("type") != "null"]


def _schema_at(model: type[BaseModel], loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The JSON-schema node of the field at `loc` (list indexes and dict keys followed)."""
    schema = _schema(model)
    defs = schema.get("$defs", {})
    node: dict[str, Any] | None = schema
    for part in loc:
        if node is None:
            return None
        if part in UNION_TAGS:
            continue
        step = None
        for option in _options(node, defs):
            if isinstance(part, int) and "items" in option:
                step = option["items"]
            elif part in option.get("properties", {}):
                step = option["properties"][part]
            elif isinstance(option.get("additionalProperties"), dict):
                step = option["additionalProperties"]
            if step is not None:
                break
        node = step
    return None if node is None else _resolve(node, defs)


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else format_number(value)


def _allowed(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """What a schema node accepts, in words: `an integer in [1, 10000]`, `one of 'a', 'b'`."""
    node = _resolve(node, defs)
    if "anyOf" in node or "oneOf" in node:
        union = node.get("anyOf", node.get("oneOf"))
        return " or ".join(_allowed(option, defs) for option in union)
    if "enum" in node or "const" in node:
        return "one of " + ", ".join(repr(value) for value in node.get("enum", [node.get("const")]))
    kind = node.get("type")
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low, high = (
            node.get("minimum", node.get("exclusiveMinimum")),
            node.get("maximum", node.get("exclusiveMaximum")),
        )
        left = "(" if "exclusiveMinimum" in node else "["
        right = ")" if "exclusiveMaximum" in node else "]"
        if low is not None and high is not None:
            return f"{noun} in {left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f"{noun} {'>' if left == '(' else '>='} {_number(low)}"
        if high is not None:
            return f"{noun} {'<' if right == ')' else '<='} {_number(high)}"
        return noun
    if kind == "array":
        size = "a non-empty list" if node.get("minItems", 0) >= 1 else "a list"
        return f"{size}, each item {_allowed(node.get('items', {}), defs)}"
    if kind == "object" and "properties" in node:
        return f"a mapping with keys {', '.join(node['properties'])}"
    return {
        "boolean": "true or false",
        "string": "a string",
        "object": "a mapping",
        "null": "null",
    }.get(kind, "see the schema")


_SELF_EXPLAINED = ("value_error", "assertion_error", "literal_error", "enum", "extra_forbidden")


def describe_error(item: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """A pydantic error item's message plus what the field allows (its keys or values)."""
    message = item["msg"].removeprefix("Value error, ")
    defs = _schema(model).get("$defs", {})
    if item["type"] == "extra_forbidden":
        owner = _schema_at(model, tuple(loc[:-1]))
        keys = [
            key for option in _options(owner or {}, defs) for key in option.get("properties", {})
        ]
        if keys:
            message += f"; allowed keys: {', '.join(keys)}"
    elif item["type"] not in _SELF_EXPLAINED:
        node = _schema_at(model, loc)
        if node is not None:
            message += f" (allowed: {_allowed(node, defs)})"
    return message


def format_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem of validating `model`: `field.path[i]: message (allowed ...)`."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        message = describe_error(item, model, loc)
        if not loc:
            lines.append(message)
        elif message.startswith(("[", ".")):
            lines.append(f"{join_path(loc)}{message}")
        else:
            lines.append(f"{join_path(loc)}: {message}")
    return "\n".join(lines)
