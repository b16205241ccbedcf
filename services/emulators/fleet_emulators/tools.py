"""Tool calls and JSON answers, the same for every emulated provider.

The deterministic rules the SDK tests rely on:

* with tools offered and ``tool_choice`` not ``none``, the answer is a call of one tool
  when the choice forces it (``required`` / a named tool), or when the last message names
  a tool; its arguments are an example valid for the tool's parameter schema;
* after a tool result (the last message is one), the answer is text echoing the result;
* with a JSON schema asked for, the answer is an example JSON value valid for it;
  with plain JSON mode, ``{"answer": <the usual echo>}``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


@dataclass(slots=True, frozen=True)
class OfferedTool:
    name: str
    parameters: dict[str, Any]


@dataclass(slots=True, frozen=True)
class EmulatedCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return _encoder.encode(self.arguments).decode()


def example_for(schema: Any) -> Any:
    """A small JSON value valid for ``schema`` (types, required properties, enums, consts)."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example_for(sub) for name, sub in props.items()}
    if kind == "array":
        return [example_for(schema.get("items", {}))] * max(1, int(schema.get("minItems", 1)))
    simple = {"string": "emulated", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    return simple.get(kind, "emulated")


def choose_call(
    tools: list[OfferedTool], choice: str | None, last_text: str, after_tool_result: bool
) -> EmulatedCall | None:
    """The tool call the emulator answers with, or None for a text answer.

    ``choice``: auto (or None), none, required, or a tool's name.
    """
    if not tools or choice == "none" or after_tool_result:
        return None
    by_name = {t.name: t for t in tools}
    if choice in by_name:
        tool = by_name[choice]
    elif choice == "required":
        tool = tools[0]
    else:
        named = [t for t in tools if t.name in last_text]
        if not named:
            return None
        tool = named[0]
    return EmulatedCall(f"call_{random.getrandbits(64):016x}", tool.name, example_for(tool.parameters))


def json_answer(schema: dict[str, Any] | None, echo: str) -> str:
    """The JSON text of an answer in JSON mode (valid for ``schema`` when one is given)."""
    return _encoder.encode(example_for(schema) if schema else {"answer": echo}).decode()
