"""What the provider adapters send on the wire, and how they read a rich success body
(MockTransport: the request is captured, the answer is chosen)."""

from __future__ import annotations

import json

import httpx
import pytest

from fleet_shared.config import ProviderEndpoint
from fleet_shared.schema import ChatMessage
from fleet_shared.subjects import PROVIDERS
from fleet_workers.providers import ADAPTERS, ProviderRequest, make_adapter
from tests.provider_mocks import KEY, capture, mock_adapter, openai_choice

CONVERSATION = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello"), ChatMessage("user", "bye")]
SENT_CONVERSATION = [{"role": m.role, "content": m.content} for m in CONVERSATION]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "key", "field"), [("openai", KEY, "max_completion_tokens"), ("lmstudio", None, "max_tokens")]
)
async def test_openai_compatible_request(provider, key, field):
    seen, handler = capture(openai_choice("stop", "fine"))
    adapter = mock_adapter(provider, handler, key=key)
    request = ProviderRequest(model="m", messages=CONVERSATION, system="sys", max_tokens=7, temperature=0.5)
    reply = await adapter.call(request)
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "https://api.example.test/v1/chat/completions"
    assert seen[0].headers.get("authorization") == (f"Bearer {KEY}" if key else None)
    assert sent == {
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}] + SENT_CONVERSATION,
        field: 7,
        "temperature": 0.5,
    }
    assert (reply.content, reply.tokens_in, reply.tokens_out) == ("fine", 1, 1)


@pytest.mark.anyio
async def test_anthropic_request_and_reply():
    seen, handler = capture(
        {
            "content": [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                {"type": "text", "text": "b"},
            ],
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 5},
            "stop_reason": "end_turn",
            "model": "claude-x",
        }
    )
    request = ProviderRequest(model="claude-x", messages=CONVERSATION, system="sys", max_tokens=9)
    reply = await mock_adapter("anthropic", handler).call(request)
    request = seen[0]
    assert str(request.url) == "https://api.example.test/v1/v1/messages"  # base URL has no /v1 for Anthropic
    assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert json.loads(request.content) == {
        "model": "claude-x",
        "max_tokens": 9,
        "messages": SENT_CONVERSATION,
        "system": "sys",
    }
    assert (reply.content, reply.tokens_in, reply.tokens_out, reply.finish_reason) == ("ab", 15, 4, "end_turn")


@pytest.mark.anyio
async def test_gemini_request_and_reply():
    seen, handler = capture(
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "plan", "thought": True}, {"text": "answer"}]},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 30},
            "modelVersion": "gemini-2.5-pro-001",
        }
    )
    request = ProviderRequest(
        model="models/gemini-2.5-pro", messages=CONVERSATION, system="sys", max_tokens=5, temperature=0.0
    )
    reply = await mock_adapter("gemini", handler).call(request)
    assert str(seen[0].url) == "https://api.example.test/v1/v1beta/models/gemini-2.5-pro:generateContent"
    assert seen[0].headers["x-goog-api-key"] == KEY
    assert json.loads(seen[0].content) == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "bye"}]},
        ],
        "generationConfig": {"maxOutputTokens": 5, "temperature": 0.0},
        "systemInstruction": {"parts": [{"text": "sys"}]},
    }
    assert (reply.content, reply.tokens_in, reply.tokens_out) == ("answer", 8, 32)  # thinking is billed output
    assert reply.provider_model == "gemini-2.5-pro-001"


@pytest.mark.anyio
async def test_make_adapter_knows_every_provider():
    assert set(ADAPTERS) == set(PROVIDERS)
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="no adapter"):
            make_adapter("nope", ProviderEndpoint("nope", "http://x", None), client)
