"""Anthropic Messages API: POST {base_url}/v1/messages.

A streamed answer is ``message_start`` (input usage), ``content_block_start`` /
``content_block_delta`` / ``content_block_stop`` per block, ``message_delta`` (stop reason,
cumulative output usage) and ``message_stop``; ``ping`` may come any time and ``error``
(e.g. ``overloaded_error``) may come mid-stream, after text was already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_shared.schema import ToolCall
from fleet_workers.providers.anthropic_wire import json_instruction, options, wire_messages
from fleet_workers.providers.base import DeltaSink, ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.errors import error_from_event
from fleet_workers.providers.limits import spent_reset_s
from fleet_workers.providers.wire import post_json, post_sse, reveal, stream_cut

API_VERSION = "2023-06-01"
#: Anthropic accepts temperature 0..1 (the Job allows 0..2, as OpenAI and Gemini do).
MAX_TEMPERATURE = 1.0


class _Block(Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


class _Usage(Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    # prompt-cache reads and writes are billed input too, but not counted in input_tokens
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(Struct):
    content: list[_Block]
    usage: _Usage
    stop_reason: str | None = None
    model: str | None = None


class _EventDelta(Struct):
    type: str | None = None
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _Event(Struct):
    type: str
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _EventDelta | None = None
    usage: _Usage | None = None


_decoder = msgspec.json.Decoder(_Message)
_json = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(_Event)


class AnthropicAdapter:
    provider = "anthropic"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._url = httpx.URL(endpoint.base_url.rstrip("/") + "/v1/messages")
        self._secret = reveal(endpoint.api_key)
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if self._secret:
            headers["x-api-key"] = self._secret
        self._headers = httpx.Headers(headers)  # normalised once, copied cheaply per request

    async def call(self, request: ProviderRequest, on_delta: DeltaSink | None = None) -> ProviderReply:
        """Send one message request (streamed when ``request.stream``).

        Raises:
            ProviderError: classified failure; ``content_filtered`` on a ``refusal`` stop.
        """
        if request.stream:
            return await self._stream(request, on_delta)
        message, headers = await post_json(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            ToolCall(b.id, b.name, _json.encode(b.input if b.input is not None else {}).decode())
            for b in message.content
            if b.type == "tool_use"
        ]
        return self._reply(text, message.usage, message.stop_reason, message.model, headers, calls)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _body(request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": wire_messages(request.messages),
        }
        system = "\n\n".join(filter(None, [request.system, json_instruction(request.response_format)]))
        if system:
            body["system"] = system
        body.update(options(request))
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
        if request.stream:
            body["stream"] = True
        return body

    def _reply(
        self, text: str, usage: _Usage, stop_reason, model, headers: Mapping[str, str], calls: list[ToolCall]
    ) -> ProviderReply:
        if stop_reason == "refusal":
            raise ProviderError("content_filtered", f"{self.provider}: the model refused (stop_reason refusal)")
        read = usage.cache_read_input_tokens or 0
        written = usage.cache_creation_input_tokens or 0
        return ProviderReply(
            content=text,
            tool_calls=calls or None,
            tokens_in=usage.input_tokens + read + written,
            tokens_out=usage.output_tokens,
            finish_reason=stop_reason,
            provider_model=model,
            cached_tokens_in=read,
            cache_write_tokens_in=written,
            limit_reset_s=spent_reset_s(headers),
        )

    async def _stream(self, request: ProviderRequest, on_delta: DeltaSink | None) -> ProviderReply:
        parts: list[str] = []
        usage = _Usage()
        stop_reason = model = None
        calls: dict[int, list[str]] = {}  # block index -> [id, name, arguments' JSON text]
        async with post_sse(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            provider=self.provider,
            secret=self._secret,
            timeouts=request,
        ) as (events, headers):
            async for sse in events:
                if sse.event == "error":
                    raise error_from_event(self.provider, sse.data.encode(), secret=self._secret)
                event = _event_decoder.decode(sse.data)
                if event.type == "message_start" and event.message is not None:
                    usage, model = event.message.usage, event.message.model
                elif _track_tool_use(event, calls):
                    continue
                elif event.type == "content_block_delta" and event.delta and event.delta.type == "text_delta":
                    parts.append(event.delta.text)
                    if on_delta is not None and event.delta.text:
                        await on_delta(event.delta.text)
                elif event.type == "message_delta":
                    stop_reason = (event.delta.stop_reason if event.delta else None) or stop_reason
                    if event.usage is not None:  # cumulative output count
                        usage = msgspec.structs.replace(usage, output_tokens=event.usage.output_tokens)
                elif event.type == "message_stop":
                    break
            else:
                raise stream_cut(self.provider, "message_stop")
        tool_calls = [ToolCall(i, n, a or "{}") for _, (i, n, a) in sorted(calls.items())]
        return self._reply("".join(parts), usage, stop_reason, model, headers, tool_calls)


def _track_tool_use(event: _Event, calls: dict[int, list[str]]) -> bool:
    """A ``tool_use`` block's start or a piece of its input JSON; False for other events."""
    if event.type == "content_block_start" and event.content_block is not None:
        if event.content_block.type == "tool_use":
            calls[event.index] = [event.content_block.id, event.content_block.name, ""]
        return event.content_block.type == "tool_use"
    if event.type == "content_block_delta" and event.delta and event.delta.type == "input_json_delta":
        if event.index in calls:
            calls[event.index][2] += event.delta.partial_json
        return True
    return False
