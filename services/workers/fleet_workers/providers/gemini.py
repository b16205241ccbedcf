"""Google Gemini API: POST {base_url}/v1beta/models/{model}:generateContent.

Streamed: POST ...:streamGenerateContent?alt=sse; every ``data:`` event is a partial
GenerateContentResponse carrying the usage so far (cumulative); the last carries a
``finishReason``, and the stream simply ends. Ending without one is a cut stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_shared.schema import ToolCall
from fleet_workers.providers.base import DeltaSink, ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.errors import error_from_event
from fleet_workers.providers.gemini_wire import options, wire_contents
from fleet_workers.providers.limits import spent_reset_s
from fleet_workers.providers.wire import post_json, post_sse, reveal, stream_cut

#: Finish reasons that mean the answer was withheld, not merely cut short.
BLOCKED_FINISH = frozenset({"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})


class _FunctionCall(Struct):
    name: str = ""
    args: Any = None


class _Part(Struct):
    text: str = ""
    thought: bool = False  # a thinking summary, not part of the answer
    functionCall: _FunctionCall | None = None


class _Content(Struct):
    parts: list[_Part] = []


class _Candidate(Struct):
    content: _Content | None = None
    finishReason: str | None = None


class _Usage(Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    thoughtsTokenCount: int = 0  # billed as output
    cachedContentTokenCount: int = 0  # of promptTokenCount


class _Feedback(Struct):
    blockReason: str | None = None


class _Response(Struct):
    candidates: list[_Candidate] = []
    usageMetadata: _Usage | None = None
    promptFeedback: _Feedback | None = None
    modelVersion: str | None = None
    error: Any = None  # an error sent inside a stream


_decoder = msgspec.json.Decoder(_Response)


class GeminiAdapter:
    provider = "gemini"

    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> None:
        self._client = client
        self._base = endpoint.base_url.rstrip("/") + "/v1beta/models/"
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        self._secret = reveal(endpoint.api_key)
        headers = {"content-type": "application/json"}
        if self._secret:
            headers["x-goog-api-key"] = self._secret
        self._headers = httpx.Headers(headers)  # normalised once, copied cheaply per request

    async def call(self, request: ProviderRequest, on_delta: DeltaSink | None = None) -> ProviderReply:
        """Generate one answer (streamed when ``request.stream``).

        Raises:
            ProviderError: classified failure; ``content_filtered`` when the prompt or the
                answer was blocked.
        """
        model = request.model.removeprefix("models/")
        if request.stream:
            return await self._stream(self._url(model, "streamGenerateContent?alt=sse"), request, on_delta)
        response, headers = await post_json(
            self._client,
            self._url(model, "generateContent"),
            self._body(request),
            headers=self._headers,
            decoder=_decoder,
            provider=self.provider,
            secret=self._secret,
        )
        candidate = self._candidate(response)
        if candidate is None:
            raise ProviderError("bad_response", f"{self.provider}: the response has no candidates")
        parts = candidate.content.parts if candidate.content else []
        text = "".join(p.text for p in parts if not p.thought)
        calls = _calls(parts, 0)
        return self._reply(text, candidate.finishReason, response.usageMetadata, response.modelVersion, headers, calls)

    def _url(self, model: str, method: str) -> httpx.URL:
        url = self._urls.get((model, method))
        if url is None:
            url = self._urls[(model, method)] = httpx.URL(f"{self._base}{model}:{method}")
        return url

    async def _stream(self, url: httpx.URL, request: ProviderRequest, on_delta: DeltaSink | None) -> ProviderReply:
        pieces: list[str] = []
        finish = model = None
        usage: _Usage | None = None
        calls: list[ToolCall] = []
        async with post_sse(
            self._client,
            url,
            self._body(request),
            headers=self._headers,
            provider=self.provider,
            secret=self._secret,
            timeouts=request,
        ) as (events, headers):
            async for event in events:
                response = _decoder.decode(event.data)
                if response.error is not None:
                    raise error_from_event(self.provider, event.data.encode(), secret=self._secret)
                usage, model = response.usageMetadata or usage, response.modelVersion or model
                candidate = self._candidate(response)
                if candidate is None:  # nothing to add from this chunk
                    continue
                calls += _calls(candidate.content.parts if candidate.content else [], len(calls))
                for part in candidate.content.parts if candidate.content else []:
                    if part.text and not part.thought:
                        pieces.append(part.text)
                        if on_delta is not None:
                            await on_delta(part.text)
                finish = candidate.finishReason or finish
            if finish is None:
                raise stream_cut(self.provider, "a finishReason")
        return self._reply("".join(pieces), finish, usage, model, headers, calls)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _body(request: ProviderRequest) -> dict[str, Any]:
        config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        body: dict[str, Any] = {"contents": wire_contents(request.messages), "generationConfig": config}
        body.update(options(request, config))
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        return body

    def _candidate(self, response: _Response) -> _Candidate | None:
        """The first candidate, None when there is none; raises when the prompt or it was blocked."""
        blocked = response.promptFeedback.blockReason if response.promptFeedback else None
        if blocked:
            raise ProviderError("content_filtered", f"{self.provider}: prompt blocked ({blocked})")
        if not response.candidates:
            return None
        candidate = response.candidates[0]
        if candidate.finishReason in BLOCKED_FINISH:
            raise ProviderError("content_filtered", f"{self.provider}: answer blocked ({candidate.finishReason})")
        return candidate

    def _reply(
        self, text: str, finish, usage: _Usage | None, model, headers: Mapping[str, str], calls: list[ToolCall]
    ) -> ProviderReply:
        usage = usage or _Usage()
        return ProviderReply(
            content=text,
            tool_calls=calls or None,
            tokens_in=usage.promptTokenCount,
            tokens_out=usage.candidatesTokenCount + usage.thoughtsTokenCount,
            finish_reason=finish,
            provider_model=model,
            cached_tokens_in=usage.cachedContentTokenCount,
            reasoning_tokens=usage.thoughtsTokenCount,
            limit_reset_s=spent_reset_s(headers),
        )


_json = msgspec.json.Encoder()


def _calls(parts: list[_Part], first: int) -> list[ToolCall]:
    """Gemini's function calls carry no id: they are numbered in the order they came."""
    found = [p.functionCall for p in parts if p.functionCall is not None]
    return [
        ToolCall(f"call_{first + i}", c.name, _json.encode(c.args if c.args is not None else {}).decode())
        for i, c in enumerate(found)
    ]
