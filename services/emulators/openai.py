"""OpenAI chat completions (and LM Studio's copy of it), served under /v1."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import Chat, Emulator, Reply, json_response, random_id


class _Part(Struct):
    type: str = "text"
    text: str = ""


class _Message(Struct):
    role: str
    content: str | list[_Part] | None = None


class _Request(Struct):
    model: str
    messages: Annotated[list[_Message], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: float | None = None


_decoder = msgspec.json.Decoder(_Request)

#: status -> (error.type, error.code, error.message), as OpenAI sends them
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "[emulated] Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in {retry}s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini", "gpt-5")


def _text(message: _Message) -> str:
    if isinstance(message.content, list):
        return "".join(part.text for part in message.content)
    return message.content or ""


def _masked(key: str) -> str:
    # OpenAI shows the key's ends; a short key is hidden whole
    return key[:3] + "*" * 8 + key[-4:] if len(key) >= 16 else "*" * 8


class OpenAIEmulator(Emulator):
    provider = "openai"
    fingerprint = "fp_emulator"
    models_body = msgspec.json.encode(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in _MODELS],
        }
    )

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat), web.get("/v1/models", self.models)]

    def authenticate(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        key = header.removeprefix("Bearer").strip()
        if not key:
            return self._error(401, "invalid_request_error", None, _MISSING_KEY)
        if key.startswith("bad"):
            message = (
                f"Incorrect API key provided: {_masked(key)}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
            return self._error(401, "invalid_request_error", "invalid_api_key", message)
        return None

    def parse_chat(self, request: web.Request, body: bytes) -> Chat:
        req = _decoder.decode(body)
        return Chat(req.model, [_text(m) for m in req.messages], req.max_completion_tokens or req.max_tokens)

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        return {
            "id": random_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "logprobs": None,
                    "finish_reason": "length" if reply.truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.tokens_in,
                "completion_tokens": reply.tokens_out,
                "total_tokens": reply.tokens_in + reply.tokens_out,
            },
            "system_fingerprint": self.fingerprint,
        }

    def error(self, status: int, message: str | None = None, *, retry_after_s: float = 1.0) -> web.Response:
        kind, code, default = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Emulated error {status}.")
        )
        headers = {}
        if status == 429:
            headers = {
                "retry-after": f"{retry_after_s:g}",
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after_s:g}s",
            }
        return self._error(status, kind, code, message or default.format(retry=f"{retry_after_s:g}"), headers)

    @staticmethod
    def _error(
        status: int, kind: str, code: str | None, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return json_response(body, status, headers)


_LMSTUDIO_MODELS = (
    # id, publisher, arch, quantization, max_context_length
    ("qwen/qwen3-30b-a3b-2507", "qwen", "qwen3_moe", "4bit", 262144),
    ("mistralai/devstral-small-2507", "mistralai", "mistral", "4bit", 131072),
)


class LMStudioEmulator(OpenAIEmulator):
    """LM Studio: the OpenAI protocol without authentication, plus its own /api/v0 listing."""

    provider = "lmstudio"
    fingerprint = "lmstudio-emulator"
    models_body = msgspec.json.encode(
        {
            "object": "list",
            "data": [{"id": m[0], "object": "model", "owned_by": "organization_owner"} for m in _LMSTUDIO_MODELS],
        }
    )
    native_models_body = msgspec.json.encode(
        {
            "object": "list",
            "data": [
                {
                    "id": model_id,
                    "object": "model",
                    "type": "llm",
                    "publisher": publisher,
                    "arch": arch,
                    "compatibility_type": "mlx",
                    "quantization": quantization,
                    "state": "loaded",
                    "max_context_length": context,
                }
                for model_id, publisher, arch, quantization, context in _LMSTUDIO_MODELS
            ],
        }
    )

    def routes(self) -> list[web.RouteDef]:
        return super().routes() + [web.get("/api/v0/models", self.native_models)]

    def authenticate(self, request: web.Request) -> web.Response | None:
        return None  # a local server: any key, or none, is accepted

    async def native_models(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.native_models_body, content_type="application/json")
