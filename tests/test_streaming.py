"""Streaming from every provider: the adapters read each emulator's event stream, hand every
piece to ``on_delta`` in order, and fail a stream that breaks off, stalls or carries an error
event (never a truncated success)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest

from fleet_emulators import running_emulator
from fleet_shared.config import ProviderEndpoint, Secret
from fleet_shared.schema import ChatMessage
from fleet_shared.subjects import PROVIDERS
from fleet_workers.providers import ProviderError, ProviderRequest, make_adapter
from fleet_workers.transport import AiohttpTransport

pytestmark = pytest.mark.anyio

KEY = "sk-stream-test-8c1d2e3f4a5b"
MODELS = {
    "lmstudio": "qwen/qwen3-30b-a3b-2507",
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-pro",
}
PROMPT = "please stream this fairly long answer back to me in several pieces"


@asynccontextmanager
async def streaming(provider: str, *, transport: str):
    async with running_emulator(provider) as url:
        if transport == "aiohttp":
            client = httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(5.0))
        else:
            client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        adapter = make_adapter(provider, ProviderEndpoint(provider, url, Secret(KEY)), client)
        try:
            yield adapter
        finally:
            await adapter.aclose()


def ask(provider: str, text: str, **fields) -> ProviderRequest:
    fields.setdefault("stall_timeout_s", 0.5)
    return ProviderRequest(model=MODELS[provider], messages=[ChatMessage("user", text)], stream=True, **fields)


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_delivers_pieces_and_usage(provider, transport):
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    async with streaming(provider, transport=transport) as adapter:
        plain = await adapter.call(ProviderRequest(model=MODELS[provider], messages=[ChatMessage("user", PROMPT)]))
        streamed = await adapter.call(ask(provider, PROMPT), on_delta)
    assert len(pieces) > 3 and "".join(pieces) == streamed.content == plain.content
    assert (streamed.tokens_in, streamed.tokens_out) == (plain.tokens_in, plain.tokens_out)  # usage arrived
    assert streamed.finish_reason == plain.finish_reason


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_truncated_at_max_tokens_is_flagged_not_failed(provider):
    async with streaming(provider, transport="aiohttp") as adapter:
        reply = await adapter.call(ask(provider, PROMPT, max_tokens=3))
    assert reply.finish_reason in ("length", "max_tokens", "MAX_TOKENS") and reply.tokens_out == 3


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("fault", "codes"),
    [
        ("cut", {"connection"}),
        ("stall", {"timeout"}),
        ("stream_error", {"overloaded", "server_error"}),
        ("content_filter", {"content_filtered"}),
        ("context_length", {"context_length"}),
    ],
)
async def test_stream_faults_fail_the_call(provider, transport, fault, codes):
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    async with streaming(provider, transport=transport) as adapter:
        with pytest.raises(ProviderError) as info:
            await adapter.call(ask(provider, f"{PROMPT} [emulate:{provider}:fault={fault}]"), on_delta)
    assert info.value.code in codes, info.value
    assert KEY not in str(info.value)
    if fault in ("cut", "stall", "stream_error"):
        assert pieces  # the answer was under way when it failed


async def test_gemini_blocked_prompt_in_a_stream():
    async with streaming("gemini", transport="aiohttp") as adapter:
        with pytest.raises(ProviderError) as info:
            await adapter.call(ask("gemini", "hi [emulate:gemini:fault=blocked]"))
    assert info.value.code == "content_filtered" and "prompt blocked" in info.value.message


async def test_anthropic_midstream_overload_is_overloaded():
    async with streaming("anthropic", transport="aiohttp") as adapter:
        with pytest.raises(ProviderError) as info:
            await adapter.call(ask("anthropic", f"{PROMPT} [emulate:anthropic:fault=stream_error]"))
    assert info.value.code == "overloaded" and "overloaded_error" in info.value.message
