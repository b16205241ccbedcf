"""Anthropic Messages API: POST /v1/messages, GET /v1/models."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import Chat, Emulator, Reply, json_response, random_id


class _Block(Struct):
    type: str = "text"
    text: str = ""


class _Message(Struct):
    role: str
    content: str | list[_Block]


class _Request(Struct):
    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    system: str | list[_Block] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None


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
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)


def _text(content: str | list[_Block] | None) -> str:
    if isinstance(content, list):
        return "".join(block.text for block in content if block.type == "text")
    return content or ""


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
        key = request.headers.get("x-api-key", "")
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
        return Chat(req.model, texts, req.max_tokens)

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        return {
            "id": random_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": [{"type": "text", "text": reply.content}],
            "stop_reason": "max_tokens" if reply.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.tokens_in,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": reply.tokens_out,
                "service_tier": "standard",
            },
        }

    def error(self, status: int, message: str | None = None, *, retry_after_s: float = 1.0) -> web.Response:
        fallback = ("api_error" if status >= 500 else "invalid_request_error", f"Emulated error {status}.")
        kind, default = _ERRORS.get(status, fallback)
        request_id = random_id("req_01")
        headers = {"request-id": request_id}
        if status == 429:
            reset = datetime.fromtimestamp(time.time() + retry_after_s, timezone.utc)
            headers |= {
                "retry-after": f"{retry_after_s:g}",
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": reset.isoformat(timespec="seconds").replace("+00:00", "Z"),
            }
        body = {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": request_id}
        return json_response(body, status, headers)
