"""Google Gemini API: POST /v1beta/models/{model}:generateContent, GET /v1beta/models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import Chat, Emulator, Reply, json_response, random_id


class _Part(Struct):
    text: str = ""


class _Content(Struct):
    parts: list[_Part] = []
    role: str | None = None


class _Config(Struct):
    maxOutputTokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None


class _Request(Struct):
    contents: Annotated[list[_Content], Meta(min_length=1)]
    systemInstruction: _Content | None = None
    generationConfig: _Config | None = None


_decoder = msgspec.json.Decoder(_Request)

#: status -> (error.status, error.message), as Google APIs send them
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_KEY_INVALID = "API key not valid. Please pass a valid API key."
_KEY_INVALID_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": _KEY_INVALID},
]
_MODELS = (
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 65536),
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 65536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 8192),
)
_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]


def _text(content: _Content) -> str:
    return "".join(part.text for part in content.parts)


class GeminiEmulator(Emulator):
    provider = "gemini"
    models_body = msgspec.json.encode(
        {
            "models": [
                {
                    "name": f"models/{model_id}",
                    "version": "001",
                    "displayName": name,
                    "inputTokenLimit": 1048576,
                    "outputTokenLimit": output_limit,
                    "supportedGenerationMethods": _METHODS,
                }
                for model_id, name, output_limit in _MODELS
            ]
        }
    )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{model}:generateContent", self.chat),
            web.get("/v1beta/models", self.models),
        ]

    def authenticate(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        if not key:
            return self._error(403, "PERMISSION_DENIED", _UNREGISTERED)
        if key.startswith("bad"):
            return self._error(400, "INVALID_ARGUMENT", _KEY_INVALID, _KEY_INVALID_DETAILS)
        return None

    def parse_chat(self, request: web.Request, body: bytes) -> Chat:
        req = _decoder.decode(body)
        texts = [_text(req.systemInstruction)] if req.systemInstruction else []
        texts += [_text(c) for c in req.contents]
        config = req.generationConfig
        return Chat(request.match_info["model"], texts, config.maxOutputTokens if config else None)

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": reply.content}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if reply.truncated else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": reply.tokens_in,
                "candidatesTokenCount": reply.tokens_out,
                "totalTokenCount": reply.tokens_in + reply.tokens_out,
            },
            "modelVersion": chat.model,
            "responseId": random_id("", 16),
        }

    def error(self, status: int, message: str | None = None, *, retry_after_s: float = 1.0) -> web.Response:
        code, default = _ERRORS.get(status, ("UNKNOWN", f"Emulated error {status}."))
        details = None
        if status == 429:  # Google sends no retry-after header, only this detail
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_s:g}s"}]
        return self._error(status, code, message or default, details)

    @staticmethod
    def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": code}
        if details:
            error["details"] = details
        return json_response({"error": error}, status)
