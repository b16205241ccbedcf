"""Tools, tool choice and response formats: each API's wire form to the Job's, and tool
calls from a Result back to each API's wire form."""

from __future__ import annotations

import json
from typing import Any

from fleet_gateway.errors import ApiError
from fleet_shared.schema import ResponseFormat, Result, Tool, ToolCall


def _tool(name: Any, description: Any, parameters: Any, where: str) -> Tool:
    if not isinstance(name, str) or not name:
        raise ApiError("invalid_request", "a tool needs a non-empty string `name`", param=where)
    if parameters is not None and not isinstance(parameters, dict):
        raise ApiError("invalid_request", "a tool's parameter schema must be a JSON object", param=where)
    return Tool(name=name, description=description if isinstance(description, str) else "", parameters=parameters or {})


def openai_tools(tools: list[dict[str, Any]] | None) -> list[Tool] | None:
    """OpenAI ``tools`` (``{"type": "function", "function": {...}}``) as Job tools.

    Raises:
        ApiError: 400 for a tool that is not a function (built-in tools are not served).
    """
    out = []
    for i, t in enumerate(tools or ()):
        fn = t.get("function")
        if t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise ApiError("invalid_request", "only tools of type `function` are supported", param=f"tools.{i}")
        out.append(_tool(fn.get("name"), fn.get("description"), fn.get("parameters"), f"tools.{i}.function"))
    return out or None


def openai_tool_choice(choice: Any) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return choice["function"].get("name")
    raise ApiError("invalid_request", "tool_choice must be auto, none, required or a function", param="tool_choice")


def openai_response_format(fmt: dict[str, Any] | None) -> ResponseFormat | None:
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return ResponseFormat(type="json_object")
    spec = fmt.get("json_schema")
    if fmt.get("type") == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema", {}), dict):
        strict = spec.get("strict")
        return ResponseFormat(
            type="json_schema",
            json_schema=spec.get("schema") or {},
            name=str(spec.get("name") or "answer"),
            strict=strict if isinstance(strict, bool) else None,
        )
    raise ApiError(
        "invalid_request", "response_format must be text, json_object or json_schema", param="response_format"
    )


def anthropic_tools(tools: list[dict[str, Any]] | None) -> list[Tool] | None:
    out = []
    for i, t in enumerate(tools or ()):
        if t.get("type") not in (None, "custom"):
            raise ApiError("invalid_request", f"server tools ({t.get('type')}) are not supported", param=f"tools.{i}")
        out.append(_tool(t.get("name"), t.get("description"), t.get("input_schema"), f"tools.{i}"))
    return out or None


def anthropic_tool_choice(choice: Any) -> str | None:
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return choice["name"]
    raise ApiError("invalid_request", "tool_choice must be auto, any, tool or none", param="tool_choice")


def openai_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def arguments_object(call: ToolCall) -> Any:
    """A call's arguments as a JSON value (Anthropic's ``input``); malformed JSON as text."""
    try:
        return json.loads(call.arguments or "{}")
    except ValueError:
        return {"arguments": call.arguments}


def openai_finish(result: Result) -> str:
    if result.tool_calls:
        return "tool_calls"
    return "length" if result.truncated else "stop"


def anthropic_stop(result: Result) -> str:
    if result.tool_calls:
        return "tool_use"
    return "max_tokens" if result.truncated else "end_turn"
