"""The fleet's messages, tools and options in Gemini's generateContent form.

Tool calls are ``functionCall`` parts of a ``model`` turn; tool results are
``functionResponse`` parts of a ``user`` turn, named by the function (Gemini has no call
ids: the name comes from ``ChatMessage.name`` or from the call the result answers).
Schemas travel as ``parametersJsonSchema`` / ``responseJsonSchema`` (full JSON Schema).
"""

from __future__ import annotations

import json
from typing import Any

from fleet_shared.schema import ChatMessage
from fleet_workers.providers.base import ProviderRequest


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {"arguments": text}


def wire_contents(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in messages for c in m.tool_calls or ()}
    contents: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "", "tool")
            parts: list[dict[str, Any]] = [{"functionResponse": {"name": name, "response": {"content": m.content}}}]
        else:
            parts = [{"text": m.content}] if m.content or not m.tool_calls else []
            parts += [{"functionCall": {"name": c.name, "args": _arguments(c.arguments)}} for c in m.tool_calls or ()]
        role = "model" if m.role == "assistant" else "user"
        if m.role == "tool" and contents and contents[-1]["role"] == "user":
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def options(request: ProviderRequest, config: dict[str, Any]) -> dict[str, Any]:
    """Adds stop, top_p, seed and the response format to ``config``; returns the tool fields."""
    if request.stop:
        config["stopSequences"] = request.stop
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.seed is not None:
        config["seed"] = request.seed
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema:
            config["responseJsonSchema"] = fmt.json_schema
    if not request.tools:
        return {}
    declarations = [
        {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters or {"type": "object"}}
        for t in request.tools
    ]
    body: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
    choice = request.tool_choice
    if choice:
        modes = {"auto": {"mode": "AUTO"}, "none": {"mode": "NONE"}, "required": {"mode": "ANY"}}
        calling = modes.get(choice, {"mode": "ANY", "allowedFunctionNames": [choice]})
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body
