"""Google Gemini API: POST /v1beta/models/{model}:generateContent, GET /v1beta/models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import BadRequest, Chat, Emulator, Reply, json_response, random_id, sse


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
_KEY_INVALID_DETAILS: list[dict[str, Any]] = [
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


_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


def _response_id(chat: Chat) -> str:
    # one id per answer, repeated on every streamed chunk as Google does
    return chat.options.setdefault("response_id", random_id("", 16))


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
        # the API serves both versions: our adapter uses v1beta, google-genai 3.x uses v1
        return [
            route
            for version in ("v1beta", "v1")
            for route in (
                web.post(f"/{version}/models/{{model}}:generateContent", self.chat),
                web.post(f"/{version}/models/{{model}}:streamGenerateContent", self.chat),
                web.get(f"/{version}/models", self.models),
            )
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
        stream = request.path.endswith(":streamGenerateContent")
        if stream and request.query.get("alt") != "sse":
            raise BadRequest("this emulator streams server-sent events only: add ?alt=sse")
        return Chat(request.match_info["model"], texts, config.maxOutputTokens if config else None, stream=stream)

    @staticmethod
    def _usage(reply: Reply, tokens_out: int) -> dict[str, Any]:
        return {
            "promptTokenCount": reply.tokens_in,
            "candidatesTokenCount": tokens_out,
            "totalTokenCount": reply.tokens_in + tokens_out,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.tokens_in}],
        }

    def _body(self, chat: Chat, reply: Reply, text: str | None, finish: str | None, tokens_out: int) -> dict[str, Any]:
        if reply.filtered == "blocked":
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _RATINGS},
                "usageMetadata": self._usage(reply, 0),
                "modelVersion": chat.model,
            }
        candidate: dict[str, Any] = {"index": 0}
        if text is not None:
            candidate["content"] = {"parts": [{"text": text}], "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
        if reply.filtered:
            candidate["safetyRatings"] = _RATINGS
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(reply, tokens_out),
            "modelVersion": chat.model,
            "responseId": _response_id(chat),
        }

    @staticmethod
    def _finish(reply: Reply) -> str:
        if reply.filtered:
            return "SAFETY"
        return "MAX_TOKENS" if reply.truncated else "STOP"

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        text = None if reply.filtered else reply.content
        return self._body(chat, reply, text, self._finish(reply), reply.tokens_out)

    def stream_events(self, chat: Chat, reply: Reply) -> list[bytes]:
        if reply.filtered:
            return [sse(self._body(chat, reply, None, self._finish(reply), 0))]
        pieces = reply.pieces()
        events, sent = [], 0
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sent = reply.tokens_out if last else min(reply.tokens_out, sent + max(1, len(piece) // 4))
            finish = self._finish(reply) if last else None
            events.append(sse(self._body(chat, reply, piece, finish, sent)))  # usage so far: cumulative
        return events

    def stream_error_event(self) -> bytes:
        code, message = _ERRORS[503]
        return sse({"error": {"code": 503, "message": message, "status": code}})

    def context_length_error(self, chat: Chat) -> web.Response:
        message = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        return self._error(400, "INVALID_ARGUMENT", message)

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
