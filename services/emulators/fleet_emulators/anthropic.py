"""Anthropic Messages API: POST /v1/messages, GET /v1/models."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import BadRequest, Chat, Emulator, Reply, json_response, random_id, sse
from fleet_emulators.tools import OfferedTool


class _Block(Struct):
    type: str = "text"
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None
    tool_use_id: str = ""
    content: str | list[_Block] | None = None  # a tool_result's


class _Tool(Struct):
    name: str
    input_schema: dict[str, Any]
    description: str = ""


class _ToolChoice(Struct):
    type: str
    name: str | None = None


class _Message(Struct):
    role: str
    content: str | list[_Block]


class _Request(Struct):
    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    system: str | list[_Block] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    stream: bool = False
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    stop_sequences: list[str] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None


_decoder = msgspec.json.Decoder(_Request)

#: status -> (error.type, error.message), as Anthropic sends them
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "[emulated] Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization. Try again later."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}
_MODELS = (
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)


def _text(content: str | list[_Block] | None) -> str:
    if isinstance(content, list):
        return "".join(_text(b.content) if b.type == "tool_result" else b.text for b in content)
    return content or ""


def _is_tool_result(message: _Message) -> bool:
    return isinstance(message.content, list) and any(b.type == "tool_result" for b in message.content)


def _tool_options(chat: Chat, req: _Request) -> None:
    chat.tools = [OfferedTool(t.name, t.input_schema) for t in req.tools or ()]
    choice = req.tool_choice
    if choice is not None:
        if choice.type == "tool" and not choice.name:
            raise BadRequest("tool_choice.name: Field required")
        chat.tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type, choice.name)
    chat.after_tool_result = _is_tool_result(req.messages[-1])


def _content(reply: Reply) -> list[dict[str, Any]]:
    call = reply.tool_call
    if call is not None:
        return [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}]
    return [{"type": "text", "text": reply.content}]


class AnthropicEmulator(Emulator):
    provider = "anthropic"
    models_body = msgspec.json.encode(
        {
            "data": [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in _MODELS],
            "has_more": False,
            "first_id": _MODELS[0][0],
            "last_id": _MODELS[-1][0],
        }
    )

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.chat), web.get("/v1/models", self.models)]

    def authenticate(self, request: web.Request) -> web.Response | None:
        # the API takes the key as x-api-key, or (as SDK 2.x sends it) as a bearer token
        key = (
            request.headers.get("x-api-key", "")
            or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        )
        if not key:
            return self.error(401, "x-api-key header is required")
        if key.startswith("bad"):
            return self.error(401, "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self.error(400, "anthropic-version: header is required")
        return None

    def parse_chat(self, request: web.Request, body: bytes) -> Chat:
        req = _decoder.decode(body)
        texts = [_text(req.system)] if req.system else []
        texts += [_text(m.content) for m in req.messages]
        chat = Chat(req.model, texts, req.max_tokens, stream=req.stream)
        _tool_options(chat, req)
        chat.trailing_assistant = req.messages[-1].role == "assistant"
        return chat

    @staticmethod
    def _stop(reply: Reply) -> str:
        if reply.tool_call is not None:
            return "tool_use"
        if reply.filtered:
            return "refusal"
        return "max_tokens" if reply.truncated else "end_turn"

    @staticmethod
    def _usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": reply.tokens_in,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        return {
            "id": random_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": [] if reply.filtered else _content(reply),
            "stop_reason": self._stop(reply),
            "stop_sequence": None,
            "usage": self._usage(reply, reply.tokens_out),
        }

    def stream_events(self, chat: Chat, reply: Reply) -> list[bytes]:
        message = {**self.success(chat, reply), "content": [], "stop_reason": None, "usage": self._usage(reply, 1)}
        events = [sse({"type": "message_start", "message": message}, "message_start")]
        call = reply.tool_call
        if call is not None:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            text = call.arguments_json
            events.append(
                sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
            )
            for i in range(0, len(text), 8):
                fragment = {"type": "input_json_delta", "partial_json": text[i : i + 8]}
                events.append(
                    sse({"type": "content_block_delta", "index": 0, "delta": fragment}, "content_block_delta")
                )
            events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        elif not reply.filtered:
            events.append(
                sse(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            for piece in reply.pieces():
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                events.append(sse(delta, "content_block_delta"))
            events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        usage = {"output_tokens": reply.tokens_out}
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop(reply), "stop_sequence": None},
            "usage": usage,
        }
        return events + [sse(end, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    stream_error_status = 529

    def stream_error_event(self) -> bytes:
        error = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": random_id("req_01"),
        }
        return sse(error, "error")

    def context_length_error(self, chat: Chat) -> web.Response:
        return self.error(400, "prompt is too long: 210000 tokens > 200000 maximum")

    def error(self, status: int, message: str | None = None, *, retry_after_s: float = 1.0) -> web.Response:
        fallback = ("api_error" if status >= 500 else "invalid_request_error", f"Emulated error {status}.")
        kind, default = _ERRORS.get(status, fallback)
        request_id = random_id("req_01")
        headers = {"request-id": request_id}
        if status == 429:
            reset = datetime.fromtimestamp(time.time() + retry_after_s, UTC)
            headers |= {
                "retry-after": f"{retry_after_s:g}",
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": reset.isoformat(timespec="seconds").replace("+00:00", "Z"),
            }
        body = {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": request_id}
        return json_response(body, status, headers)
