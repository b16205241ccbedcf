"""Google Gemini API: POST {base_url}/v1beta/models/{model}:generateContent."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_workers.providers.base import ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.wire import post_json, reveal

#: Finish reasons that mean the answer was withheld, not merely cut short.
BLOCKED_FINISH = frozenset({"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})


class _Part(Struct):
    text: str = ""
    thought: bool = False  # a thinking summary, not part of the answer


class _Content(Struct):
    parts: list[_Part] = []


class _Candidate(Struct):
    content: _Content | None = None
    finishReason: str | None = None


class _Usage(Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    thoughtsTokenCount: int = 0  # billed as output


class _Feedback(Struct):
    blockReason: str | None = None


class _Response(Struct):
    candidates: list[_Candidate] = []
    usageMetadata: _Usage | None = None
    promptFeedback: _Feedback | None = None
    modelVersion: str | None = None


_decoder = msgspec.json.Decoder(_Response)


class GeminiAdapter:
    provider = "gemini"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._base = endpoint.base_url.rstrip("/") + "/v1beta/models/"
        self._secret = reveal(endpoint.api_key)
        self._headers = {"content-type": "application/json"}
        if self._secret:
            self._headers["x-goog-api-key"] = self._secret

    async def call(self, request: ProviderRequest) -> ProviderReply:
        """Generate one answer.

        Raises:
            ProviderError: classified failure; ``content_filtered`` when the prompt or the
                answer was blocked.
        """
        model = request.model.removeprefix("models/")
        response = await post_json(
            self._client,
            f"{self._base}{model}:generateContent",
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        return self._reply(response)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _body(request: ProviderRequest) -> dict[str, Any]:
        config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        body: dict[str, Any] = {
            "contents": [
                {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
                for m in request.messages
            ],
            "generationConfig": config,
        }
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        return body

    def _reply(self, response: _Response) -> ProviderReply:
        blocked = response.promptFeedback.blockReason if response.promptFeedback else None
        if blocked:
            raise ProviderError("content_filtered", f"{self.provider}: prompt blocked ({blocked})")
        if not response.candidates:
            raise ProviderError("bad_response", f"{self.provider}: the response has no candidates")
        candidate = response.candidates[0]
        if candidate.finishReason in BLOCKED_FINISH:
            raise ProviderError("content_filtered", f"{self.provider}: answer blocked ({candidate.finishReason})")
        parts = candidate.content.parts if candidate.content else []
        usage = response.usageMetadata or _Usage()
        return ProviderReply(
            content="".join(p.text for p in parts if not p.thought),
            tokens_in=usage.promptTokenCount,
            tokens_out=usage.candidatesTokenCount + usage.thoughtsTokenCount,
            finish_reason=candidate.finishReason,
            provider_model=response.modelVersion,
        )
