"""The fleet's messages, tools and options in Anthropic's Messages form.

Tool calls are ``tool_use`` content blocks of the assistant turn; tool results are
``tool_result`` blocks of the next user turn (consecutive results share one user turn, as
Anthropic requires turns to alternate). Anthropic has no JSON mode: ``response_format``
becomes an instruction in the system prompt.
"""

from __future__ import annotations

import json
from typing import Any

from fleet_shared.schema import ChatMessage, ResponseFormat
from fleet_workers.providers.base import ProviderRequest


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {"arguments": text}  # a model's malformed JSON still travels, as text


def _blocks(m: ChatMessage) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _arguments(c.arguments)} for c in m.tool_calls or ()
    ]
    return blocks


def wire_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Plain turns stay plain (``content`` a string); turns with tools become blocks."""
    if not any(m.role == "tool" or m.tool_calls for m in messages):
        return [{"role": m.role, "content": m.content} for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        role = "user" if m.role == "tool" else m.role
        blocks = _blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return out


def json_instruction(fmt: ResponseFormat | None) -> str | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.json_schema:
        return "Answer with one JSON value only, valid for this JSON Schema: " + json.dumps(fmt.json_schema)
    return "Answer with one JSON object only."


def options(request: ProviderRequest) -> dict[str, Any]:
    """tools, tool_choice, stop_sequences and top_p as Anthropic names them (no seed)."""
    body: dict[str, Any] = {}
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": t.parameters or {"type": "object", "properties": {}},
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice:
            named = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
            body["tool_choice"] = named.get(choice, {"type": "tool", "name": choice})
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.top_p is not None:
        body["top_p"] = request.top_p
    return body
