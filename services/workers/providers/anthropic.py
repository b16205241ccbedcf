"""Anthropic Messages API: POST {base_url}/v1/messages."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_workers.providers.base import ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.wire import post_json, reveal

API_VERSION = "2023-06-01"


class _Block(Struct):
    type: str
    text: str = ""


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


_decoder = msgspec.json.Decoder(_Message)


class AnthropicAdapter:
    provider = "anthropic"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._url = endpoint.base_url.rstrip("/") + "/v1/messages"
        self._secret = reveal(endpoint.api_key)
        self._headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if self._secret:
            self._headers["x-api-key"] = self._secret

    async def call(self, request: ProviderRequest) -> ProviderReply:
        """Send one message request.

        Raises:
            ProviderError: classified failure; ``content_filtered`` on a ``refusal`` stop.
        """
        message = await post_json(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        return self._reply(message)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _body(request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": request.messages}
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def _reply(self, message: _Message) -> ProviderReply:
        if message.stop_reason == "refusal":
            raise ProviderError("content_filtered", f"{self.provider}: the model refused (stop_reason refusal)")
        usage = message.usage
        cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        return ProviderReply(
            content="".join(block.text for block in message.content if block.type == "text"),
            tokens_in=usage.input_tokens + cached,
            tokens_out=usage.output_tokens,
            finish_reason=message.stop_reason,
            provider_model=message.model,
        )
