"""A JSON Schema validator for the subset structured outputs use, with no dependency.

The keywords checked are the ones OpenAI's structured outputs and Gemini's responseSchema
accept: ``type`` (one or a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (false or a schema), ``items``, ``minItems``/``maxItems``,
``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum`` (and the exclusive
forms), ``anyOf``/``oneOf``/``allOf``, and local ``$ref`` (``#/$defs/...``,
``#/definitions/...``). A keyword outside the subset is ignored, never a failure: a check
that escalates must not reject an answer the schema allows. (The ``jsonschema`` library
would cover the whole draft, at the cost of four packages, one of them compiled, for
keywords a provider does not enforce anyway.)
"""

from __future__ import annotations

import re
from typing import Any

#: Errors reported per answer at most (the first ones found).
MAX_ERRORS = 10
#: $ref hops followed at most (a schema that refers to itself forever is not followed).
MAX_DEPTH = 64

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """What makes ``value`` invalid for ``schema`` (a JSON path and a reason each); [] if valid."""
    errors: list[str] = []
    _check(value, schema, "$", schema, errors, 0)
    return errors[:MAX_ERRORS]


def is_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False  # JSON booleans are not numbers (Python's bool is an int)
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, object))


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None  # remote references are not fetched
    node: Any = root
    for part in (p for p in ref[1:].split("/") if p):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _check(value: Any, schema: Any, path: str, root: dict[str, Any], errors: list[str], depth: int) -> None:
    if not isinstance(schema, dict) or len(errors) >= MAX_ERRORS or depth > MAX_DEPTH:
        return  # `true` / `{}` / an unsupported form: anything goes
    if isinstance(schema.get("$ref"), str):
        target = _resolve(schema["$ref"], root)
        if target is not None:
            _check(value, target, path, root, errors, depth + 1)
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(is_type(value, n) for n in names):
            errors.append(f"{path}: expected {' or '.join(map(str, names))}, got {_json_type(value)}")
            return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    _check_combinators(value, schema, path, root, errors, depth)
    if isinstance(value, dict):
        _check_object(value, schema, path, root, errors, depth)
    elif isinstance(value, list):
        _check_array(value, schema, path, root, errors, depth)
    elif isinstance(value, str):
        _check_string(value, schema, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, path, errors)


def _check_combinators(
    value: Any, schema: dict[str, Any], path: str, root: dict[str, Any], errors: list[str], depth: int
) -> None:
    for sub in schema.get("allOf") or ():
        _check(value, sub, path, root, errors, depth + 1)
    for keyword, wanted in (("anyOf", "any"), ("oneOf", "one")):
        options = schema.get(keyword)
        if not isinstance(options, list) or not options:
            continue
        passing = sum(1 for sub in options if not _sub_errors(value, sub, path, root, depth))
        if passing == 0 or (wanted == "one" and passing > 1):
            errors.append(f"{path}: matches {passing} of the {keyword} schemas")


def _sub_errors(value: Any, schema: Any, path: str, root: dict[str, Any], depth: int) -> list[str]:
    found: list[str] = []
    _check(value, schema, path, root, found, depth + 1)
    return found


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, root: dict[str, Any], errors: list[str], depth: int
) -> None:
    given = schema.get("properties")
    properties: dict[str, Any] = given if isinstance(given, dict) else {}
    for name in schema.get("required") or ():
        if name not in value:
            errors.append(f"{path}: missing required property {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            _check(item, properties[name], f"{path}.{name}", root, errors, depth + 1)
        elif extra is False:
            errors.append(f"{path}: unexpected property {name!r}")
        elif isinstance(extra, dict):
            _check(item, extra, f"{path}.{name}", root, errors, depth + 1)


def _check_array(
    value: list[Any], schema: dict[str, Any], path: str, root: dict[str, Any], errors: list[str], depth: int
) -> None:
    if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", root, errors, depth + 1)


def _check_string(value: str, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if re.search(pattern, value) is None:
                errors.append(f"{path}: does not match {pattern!r}")
        except re.error:
            pass  # a pattern Python's re cannot compile: not checked


def _check_number(value: float, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    bounds = (
        ("minimum", lambda b: value < b, "less than"),
        ("maximum", lambda b: value > b, "more than"),
        ("exclusiveMinimum", lambda b: value <= b, "at most"),
        ("exclusiveMaximum", lambda b: value >= b, "at least"),
    )
    for keyword, broken, words in bounds:
        bound = schema.get(keyword)
        if isinstance(bound, int | float) and not isinstance(bound, bool) and broken(bound):
            errors.append(f"{path}: {value} is {words} {bound}")


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if is_type(value, name):
            return name
    return type(value).__name__
