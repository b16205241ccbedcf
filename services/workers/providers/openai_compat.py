"""OpenAI chat completions: OpenAI itself, and LM Studio, which speaks the same protocol.

POST {base_url}/chat/completions, where base_url already ends in /v1.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_workers.providers.base import ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.wire import post_json, reveal


class _Message(Struct):
    content: str | None = None
    refusal: str | None = None


class _Choice(Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(Struct):
    choices: list[_Choice]
    usage: _Usage | None = None
    model: str | None = None


_decoder = msgspec.json.Decoder(_Completion)


class OpenAIAdapter:
    """OpenAI chat completions. The key is sent as a bearer token when there is one."""

    provider = "openai"
    #: OpenAI deprecated ``max_tokens``; its reasoning models (o-series, gpt-5) reject it.
    max_tokens_field = "max_completion_tokens"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._secret = reveal(endpoint.api_key)
        self._headers = {"content-type": "application/json"}
        if self._secret:
            self._headers["authorization"] = f"Bearer {self._secret}"

    async def call(self, request: ProviderRequest) -> ProviderReply:
        """Send one chat completion.

        Raises:
            ProviderError: classified failure; ``content_filtered`` when the model refused.
        """
        completion = await post_json(
            self._client,
            self._url,
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        return self._reply(completion)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        messages: list[Any] = list(request.messages)
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        body = {"model": request.model, "messages": messages, self.max_tokens_field: request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def _reply(self, completion: _Completion) -> ProviderReply:
        if not completion.choices:
            raise ProviderError("bad_response", f"{self.provider}: the completion has no choices")
        choice = completion.choices[0]
        if choice.finish_reason == "content_filter" or (choice.message.refusal and not choice.message.content):
            raise ProviderError("content_filtered", f"{self.provider}: the model refused ({choice.finish_reason})")
        usage = completion.usage or _Usage()
        return ProviderReply(
            content=choice.message.content or "",
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            finish_reason=choice.finish_reason,
            provider_model=completion.model,
        )


class LMStudioAdapter(OpenAIAdapter):
    """LM Studio's OpenAI-compatible server (local; a key is optional)."""

    provider = "lmstudio"
    max_tokens_field = "max_tokens"
