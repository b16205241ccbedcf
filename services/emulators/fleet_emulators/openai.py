"""OpenAI chat completions (and LM Studio's copy of it), served under /v1."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_emulators.base import (
    PROCESSING_MS_HEADER,
    BadRequest,
    Chat,
    Emulator,
    Reply,
    json_response,
    random_id,
    sse,
)
from fleet_emulators.tools import OfferedTool


class _Part(Struct):
    type: str = "text"
    text: str = ""


class _Function(Struct):
    name: str
    parameters: dict[str, Any] = {}
    arguments: str = ""


class _Tool(Struct):
    function: _Function
    type: str = "function"


class _Choice(Struct):
    function: _Function
    type: str = "function"


class _Format(Struct):
    type: str
    json_schema: dict[str, Any] | None = None


class _Message(Struct):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_Tool] | None = None
    tool_call_id: str | None = None


class _StreamOptions(Struct):
    include_usage: bool = False


class _Request(Struct):
    model: str
    messages: Annotated[list[_Message], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: float | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | _Choice | None = None
    response_format: _Format | None = None
    stop: str | list[str] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: int | None = None


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
    processing_ms_header: str | None = PROCESSING_MS_HEADER  # the real API sends it on every response
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
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        chat = Chat(
            req.model,
            [_text(m) for m in req.messages],
            req.max_completion_tokens or req.max_tokens,
            stream=req.stream,
            options={"include_usage": include_usage},
        )
        _tool_options(chat, req)
        chat.trailing_assistant = req.messages[-1].role == "assistant"
        return chat

    @staticmethod
    def _finish(reply: Reply) -> str:
        if reply.tool_call is not None:
            return "tool_calls"
        if reply.filtered:
            return "content_filter"
        return "length" if reply.truncated else "stop"

    @staticmethod
    def _usage(reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.tokens_in,
            "completion_tokens": reply.tokens_out,
            "total_tokens": reply.tokens_in + reply.tokens_out,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        content = None if reply.filtered else reply.content  # a filtered answer is withheld
        return {
            "id": random_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": _message(reply, content),
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": self._usage(reply),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }

    def stream_events(self, chat: Chat, reply: Reply) -> list[bytes]:
        base = {
            "id": random_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": chat.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        include_usage = chat.options.get("include_usage", False)

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                body["usage"] = None
            return sse(body)

        events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        call = reply.tool_call
        if call is not None:
            head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            events.append(chunk({"tool_calls": [head]}, None))
            text = call.arguments_json
            for i in range(0, len(text), 8):  # the arguments' JSON text in fragments, as OpenAI sends it
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[i : i + 8]}}]}, None))
        elif not reply.filtered:
            events += [chunk({"content": piece}, None) for piece in reply.pieces()]
        events.append(chunk({}, self._finish(reply)))
        if include_usage:
            events.append(sse({**base, "choices": [], "usage": self._usage(reply)}))
        return events + [b"data: [DONE]\n\n"]

    def stream_error_event(self) -> bytes:
        kind, code, message = _ERRORS[500]
        return sse({"error": {"message": message, "type": kind, "param": None, "code": code}})

    def context_length_error(self, chat: Chat) -> web.Response:
        message = (
            "This model's maximum context length is 128000 tokens. However, your messages resulted in "
            "210000 tokens. Please reduce the length of the messages."
        )
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
        return json_response(body, 400)

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


def _message(reply: Reply, content: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    call = reply.tool_call
    if call is not None:
        function = {"name": call.name, "arguments": call.arguments_json}
        message |= {"content": None, "tool_calls": [{"id": call.id, "type": "function", "function": function}]}
    return message


def _tool_options(chat: Chat, req: _Request) -> None:
    """Tools, tool_choice and response_format, checked as OpenAI checks them."""
    chat.tools = [OfferedTool(t.function.name, t.function.parameters) for t in req.tools or ()]
    choice = req.tool_choice
    chat.tool_choice = choice.function.name if isinstance(choice, _Choice) else choice
    if chat.tool_choice and not chat.tools:
        raise BadRequest("'tool_choice' is only allowed when 'tools' are specified.")
    last = req.messages[-1]
    chat.after_tool_result = last.role == "tool"
    if last.role == "tool" and not last.tool_call_id:
        raise BadRequest("Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.")
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        if not fmt.json_schema or "schema" not in fmt.json_schema:
            raise BadRequest("Missing required parameter: 'response_format.json_schema'.")
        chat.json_schema = fmt.json_schema["schema"]
    chat.json_mode = fmt is not None and fmt.type in ("json_object", "json_schema")
