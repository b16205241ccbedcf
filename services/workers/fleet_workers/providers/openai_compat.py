"""OpenAI chat completions: OpenAI itself, and LM Studio, which speaks the same protocol.

POST {base_url}/chat/completions, where base_url already ends in /v1. Streamed answers are
``data:`` chunks (``stream_options.include_usage`` adds a last chunk with the usage) ending
with ``data: [DONE]``; an error inside the stream is a ``data: {"error": ...}`` chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_shared.schema import ChatMessage, ToolCall
from fleet_workers.providers.base import DeltaSink, ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.errors import error_from_event
from fleet_workers.providers.limits import spent_reset_s
from fleet_workers.providers.wire import post_json, post_sse, reveal, stream_cut


class _Function(Struct):
    name: str = ""
    arguments: str = ""


class _ToolCall(Struct):
    id: str = ""
    function: _Function = msgspec.field(default_factory=_Function)
    index: int = 0  # in stream deltas: which call a piece belongs to


class _Message(Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(Struct):
    message: _Message
    finish_reason: str | None = None


class _PromptDetails(Struct):
    cached_tokens: int = 0


class _CompletionDetails(Struct):
    reasoning_tokens: int = 0


class _Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Completion(Struct):
    choices: list[_Choice]
    usage: _Usage | None = None
    model: str | None = None


class _Delta(Struct, frozen=True):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _ChunkChoice(Struct):
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _Chunk(Struct):
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None
    model: str | None = None
    error: Any = None


_decoder = msgspec.json.Decoder(_Completion)
_chunk_decoder = msgspec.json.Decoder(_Chunk)


def processing_ms(headers) -> float | None:
    """OpenAI's ``openai-processing-ms``: the API's own time for the request (None: absent)."""
    value = headers.get("openai-processing-ms")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class OpenAIAdapter:
    """OpenAI chat completions. The key is sent as a bearer token when there is one."""

    provider = "openai"
    #: OpenAI deprecated ``max_tokens``; its reasoning models (o-series, gpt-5) reject it.
    max_tokens_field = "max_completion_tokens"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._url = httpx.URL(endpoint.base_url.rstrip("/") + "/chat/completions")
        self._secret = reveal(endpoint.api_key)
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._secret:
            headers["authorization"] = f"Bearer {self._secret}"
        self._headers = httpx.Headers(headers)  # normalised once, copied cheaply per request

    async def call(self, request: ProviderRequest, on_delta: DeltaSink | None = None) -> ProviderReply:
        """Send one chat completion (streamed when ``request.stream``).

        Raises:
            ProviderError: classified failure; ``content_filtered`` when the model refused.
        """
        if request.stream:
            return await self._stream(request, on_delta)
        completion, headers = await post_json(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        return self._reply(completion, headers)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        messages: list[Any] = [wire_message(m) for m in request.messages]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        body: dict[str, Any] = {"model": request.model, "messages": messages, self.max_tokens_field: request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update(sampling_fields(request))
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _reply(self, completion: _Completion, headers: Mapping[str, str]) -> ProviderReply:
        if not completion.choices:
            raise ProviderError("bad_response", f"{self.provider}: the completion has no choices")
        choice = completion.choices[0]
        self._check_refusal(choice.finish_reason, choice.message.content, choice.message.refusal)
        calls = [ToolCall(c.id, c.function.name, c.function.arguments or "{}") for c in choice.message.tool_calls or ()]
        return self._make_reply(
            choice.message.content or "", choice.finish_reason, completion.usage, completion.model, headers, calls
        )

    def _check_refusal(self, finish_reason: str | None, content: str | None, refusal: str | None) -> None:
        if finish_reason == "content_filter" or (refusal and not content):
            raise ProviderError("content_filtered", f"{self.provider}: the model refused ({finish_reason})")

    def _make_reply(self, content, finish_reason, usage: _Usage | None, model, headers, calls=()) -> ProviderReply:
        usage = usage or _Usage()
        return ProviderReply(
            content=content,
            tool_calls=list(calls) or None,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            finish_reason=finish_reason,
            provider_model=model,
            cached_tokens_in=usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0,
            reasoning_tokens=usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0,
            limit_reset_s=spent_reset_s(headers),
            provider_ms=processing_ms(headers),
        )

    async def _stream(self, request: ProviderRequest, on_delta: DeltaSink | None) -> ProviderReply:
        parts: list[str] = []
        refusal: list[str] = []
        finish: str | None = None
        usage: _Usage | None = None
        model: str | None = None
        calls: dict[int, _ToolCall] = {}
        async with post_sse(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            provider=self.provider,
            secret=self._secret,
            timeouts=request,
        ) as (events, headers):
            async for event in events:
                if event.data.strip() == "[DONE]":
                    break
                chunk = _chunk_decoder.decode(event.data)
                if chunk.error is not None:
                    raise error_from_event(self.provider, event.data.encode(), secret=self._secret)
                usage, model = chunk.usage or usage, chunk.model or model
                for choice in chunk.choices[:1]:
                    finish = choice.finish_reason or finish
                    if choice.delta.refusal:
                        refusal.append(choice.delta.refusal)
                    for piece in choice.delta.tool_calls or ():
                        _merge_call(calls, piece)
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        if on_delta is not None:
                            await on_delta(choice.delta.content)
            else:
                raise stream_cut(self.provider, "data: [DONE]")
        content = "".join(parts)
        self._check_refusal(finish, content, "".join(refusal))
        tool_calls = [ToolCall(c.id, c.function.name, c.function.arguments or "{}") for _, c in sorted(calls.items())]
        return self._make_reply(content, finish, usage, model, headers, tool_calls)


def _merge_call(calls: dict[int, _ToolCall], piece: _ToolCall) -> None:
    """A streamed tool call comes in pieces by ``index``: the id and name first, then the
    arguments' JSON text in fragments."""
    call = calls.setdefault(piece.index, _ToolCall(index=piece.index))
    call.id = call.id or piece.id
    call.function.name = call.function.name or piece.function.name
    call.function.arguments += piece.function.arguments


def wire_message(m: ChatMessage) -> dict[str, Any]:
    """A fleet message in OpenAI's form (tool calls and tool results included)."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def sampling_fields(request: ProviderRequest) -> dict[str, Any]:
    """tools, tool_choice, response_format, stop, top_p and seed, as OpenAI names them."""
    body: dict[str, Any] = {}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        elif choice:
            body["tool_choice"] = {"type": "function", "function": {"name": choice}}
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "answer", "schema": fmt.json_schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    for field in ("stop", "top_p", "seed"):
        value = getattr(request, field)
        if value is not None:
            body[field] = value
    return body


class LMStudioAdapter(OpenAIAdapter):
    """LM Studio's OpenAI-compatible server (local; a key is optional)."""

    provider = "lmstudio"
    max_tokens_field = "max_tokens"
