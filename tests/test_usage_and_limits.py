"""What a provider's answer says beyond the text: rate-limit headers (on errors and on
successes), cached and reasoning tokens, and what they cost."""

from __future__ import annotations

import email.utils
import time

import pytest

from tests.test_providers import anthropic_error, ask, failure, mock_adapter, respond


def test_reset_headers_parse_durations_and_times():
    from fleet_workers.providers.limits import parse_reset, reset_after_s, spent_reset_s

    assert parse_reset("6m0s") == 360 and parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1h2m3.5s") == pytest.approx(3723.5) and parse_reset("7") == 7
    assert parse_reset("2030-01-01T00:00:10Z", now=1893456000.0) == pytest.approx(10.0)
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "30s",
    }
    assert spent_reset_s(headers) == 2.0 and reset_after_s(headers) == 30.0
    assert spent_reset_s({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "2s"}) is None


@pytest.mark.anyio
async def test_429_without_retry_after_uses_the_ratelimit_reset_headers():
    reset = email.utils.formatdate(time.time() + 5, usegmt=True)  # not RFC 3339: ignored
    headers = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2099-01-01T00:00:00Z",
        "anthropic-ratelimit-requests-reset": reset,
    }
    adapter = mock_adapter("anthropic", respond(429, anthropic_error("rate_limit_error", "slow"), headers))
    error = await failure(adapter, ask("anthropic", "hi"))
    assert error.code == "rate_limited" and error.retry_after_s > 10**6


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "body", "cached", "reasoning", "tokens_in", "tokens_out"),
    [
        (
            "openai",
            {
                "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": 50,
                    "prompt_tokens_details": {"cached_tokens": 60},
                    "completion_tokens_details": {"reasoning_tokens": 30},
                },
            },
            60,
            30,
            100,
            50,
        ),
        (
            "anthropic",
            {
                "content": [{"type": "text", "text": "x"}],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 5,
                    "cache_read_input_tokens": 80,
                    "cache_creation_input_tokens": 20,
                },
            },
            80,
            0,
            110,
            5,
        ),
        (
            "gemini",
            {
                "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
                "usageMetadata": {
                    "promptTokenCount": 100,
                    "cachedContentTokenCount": 40,
                    "candidatesTokenCount": 5,
                    "thoughtsTokenCount": 20,
                },
            },
            40,
            20,
            100,
            25,
        ),
    ],
)
async def test_cached_and_reasoning_tokens(provider, body, cached, reasoning, tokens_in, tokens_out):
    reply = await mock_adapter(
        provider, respond(200, body, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"})
    ).call(ask(provider, "hi"))
    assert (reply.cached_tokens_in, reply.reasoning_tokens) == (cached, reasoning)
    assert (reply.tokens_in, reply.tokens_out) == (tokens_in, tokens_out)
    assert reply.limit_reset_s == 3.0


def test_cost_uses_cached_and_cache_write_prices():
    from fleet_shared.registry import load_registry

    claude = load_registry().models["claude"]  # $3 in, $15 out, $0.30 cached per Mtok
    plain = claude.cost_usd(1_000_000, 0)
    cached = claude.cost_usd(1_000_000, 0, cached_in=1_000_000)
    assert plain == pytest.approx(3.0) and cached == pytest.approx(0.30)
    assert claude.cost_usd(1_000_000, 1_000_000, cached_in=500_000) == pytest.approx(1.5 + 0.15 + 15.0)
    assert claude.cost_usd(1_000_000, 0, cache_write_in=1_000_000) == pytest.approx(3.75)
