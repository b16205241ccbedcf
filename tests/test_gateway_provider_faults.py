"""Provider faults seen through the gateway (issue 10 item 6), each from an emulator fault
marker to the HTTP answer, through the real fleet: a connection reset before headers, a late
first token, a malformed event, a stream without its terminator, a 500 once, a flapping
primary, a fallback that rejects an assistant prefill, a 429 that never ends. None may end
in a hang (every client has a timeout), a truncated success, or the wrong model's name."""

from __future__ import annotations

import httpx
import msgspec
import openai
import pytest

from tests.gateway_harness import GATEWAY_KEY, GatewayFleet, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
KEEP = {"x-router-no-fallback": "1"}  # no continuation possible: the job stays on its model
LONG = "tell me a long story about queues, routers, workers and ledgers in a fleet of machines"


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0, stream_stall_s=1.0)


def chat(text: str, model: str = "openai", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_names_who_answered(gw: GatewayFleet, response: httpx.Response) -> str:
    """The headers, the body's ``model`` and the emulator's tag in the text agree; the model id."""
    assert response.status_code == 200, response.text
    model = response.headers["x-router-model"]
    spec = gw.fleet.services["router"].policy.registry.models[model]
    body = response.json()
    assert body["model"] == spec.provider_model
    assert response.headers["x-router-provider"] == spec.provider
    assert body["choices"][0]["message"]["content"].startswith(f"[{spec.provider} emulator · {spec.provider_model}]")
    return model


async def stream_text(gw: GatewayFleet, text: str, **options) -> tuple[list, openai.types.chat.ChatCompletionChunk]:
    client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0, timeout=30)
    raw = await client.chat.completions.with_raw_response.create(**chat(text), stream=True, **options)
    chunks = [chunk async for chunk in raw.parse()]  # no APIError: the stream completed
    await client.close()
    return chunks, raw


def joined(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_connection_reset_before_headers_fails_over_plain_and_streamed(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            plain = await http.post("/v1/chat/completions", json=chat("hi [emulate:openai:fault=reset]"))
        chunks, raw = await stream_text(gw, f"{LONG} [emulate:openai:fault=reset]")
        result = await gw.fleet.result(raw.headers["x-request-id"])
    assert assert_names_who_answered(gw, plain) != "openai"
    assert plain.headers["x-router-attempts"] == "2"
    assert raw.headers["x-router-model"] != "openai"  # invisible: nothing was sent before the reset
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert "openai emulator" not in joined(chunks) and joined(chunks) == result.content
    assert result.attempts[0].error.code == "connection" and result.attempts[0].partial_content is None
    assert gw.emulators["openai"].emulator.calls["chat"] == 2


async def test_a_first_token_later_than_the_stall_limit_is_tolerated(make_settings, database_url):
    """The issue's case is a first token after 20 s. Scaled down so the test takes about a
    second: the stall limit (FLEET_STREAM_STALL_S) is 0.3 s, the first event comes after
    1.2 s (4x the stall limit, as 20 s is to a 5 s stall limit) and the fleet allows
    FLEET_FIRST_TOKEN_TIMEOUT_S = 10 s before it. The answer is whole, from the model asked,
    in one attempt: a slow start is not a stall."""
    settings = make_settings(database_url=database_url, ack_wait_s=10.0, stream_stall_s=0.3, first_token_timeout_s=10.0)
    async with gateway_fleet(settings, ledger=False) as gw:
        chunks, raw = await stream_text(gw, f"{LONG} [emulate:openai:first_token_ms=1200]")
        result = await gw.fleet.result(raw.headers["x-request-id"])
    assert raw.headers["x-router-model"] == "openai" and len(result.attempts) == 1
    assert joined(chunks).startswith("[openai emulator · gpt-4o] tell me") and joined(chunks) == result.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_a_first_token_later_than_the_first_token_limit_is_a_stall_that_fails_over(make_settings, database_url):
    """The other side of the limit: silence past FLEET_FIRST_TOKEN_TIMEOUT_S is a ``timeout``
    before any byte, so the next model answers invisibly."""
    settings = make_settings(database_url=database_url, ack_wait_s=10.0, stream_stall_s=0.2, first_token_timeout_s=0.4)
    async with gateway_fleet(settings, ledger=False) as gw:
        chunks, raw = await stream_text(gw, f"{LONG} [emulate:openai:first_token_ms=5000]")
        result = await gw.fleet.result(raw.headers["x-request-id"])
    assert raw.headers["x-router-model"] != "openai" and result.attempts[0].error.code == "timeout"
    assert "openai emulator" not in joined(chunks) and joined(chunks) == result.content


@pytest.mark.parametrize("fault", ["malformed_sse", "no_terminator"])
async def test_bad_stream_after_bytes_is_continued_by_the_next_model(settings, fault):
    async with gateway_fleet(settings, ledger=False) as gw:
        chunks, raw = await stream_text(gw, f"{LONG} [emulate:openai:fault={fault}]")
        result = await gw.fleet.result(raw.headers["x-request-id"])
    text = joined(chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert raw.headers["x-router-model"] == "openai" and text.startswith("[openai emulator · gpt-4o] tell me")
    assert result.success and result.content == text and len(result.attempts) == 2
    first = result.attempts[0]
    assert first.error.code == ("bad_response" if fault == "malformed_sse" else "server_error")
    assert first.partial_content and text.startswith(first.partial_content) and len(text) > len(first.partial_content)


@pytest.mark.parametrize("fault", ["malformed_sse", "no_terminator"])
async def test_bad_stream_without_a_fallback_ends_with_an_error_event_and_no_done(settings, fault):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={**AUTH, **KEEP}, timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions", json=chat(f"{LONG} [emulate:openai:fault={fault}]", stream=True)
            )
    events = [block.removeprefix("data: ") for block in r.text.split("\n\n") if block.strip()]
    assert r.status_code == 200 and "[DONE]" not in r.text
    assert msgspec.json.decode(events[-1])["error"]["code"] == "stream_interrupted"
    deltas = [msgspec.json.decode(e) for e in events[:-1]]
    assert deltas and all(d["choices"][0]["finish_reason"] is None for d in deltas)


async def test_plain_answer_cut_in_half_fails_over_not_a_truncated_success(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post("/v1/chat/completions", json=chat("hi [emulate:openai:fault=malformed_sse]"))
    assert assert_names_who_answered(gw, r) != "openai" and r.headers["x-router-attempts"] == "2"


async def test_500_once_then_healthy_the_job_succeeds_and_the_model_serves_the_next_one(settings):
    once = "hi [emulate:openai:error=500] [emulate:openai:times=1]"
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            first = await http.post("/v1/chat/completions", json=chat(once))
            # the same prompt again (the emulator is healthy now), kept to the model: it is
            # not marked down (a 500 is no cooldown), so it answers at once
            again = await http.post("/v1/chat/completions", json=chat(once), headers=KEEP)
    assert assert_names_who_answered(gw, first) != "openai" and first.headers["x-router-attempts"] == "2"
    assert assert_names_who_answered(gw, again) == "openai" and again.headers["x-router-attempts"] == "1"
    assert gw.emulators["openai"].emulator.calls["chat"] == 2


async def test_a_flapping_primary_every_request_is_answered_and_names_its_model(settings):
    flapping = "hi [emulate:openai:flap] [emulate:openai:error=500]"
    answered: list[str] = []
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            for _ in range(6):  # bounded: three failures and three successes at most
                r = await http.post("/v1/chat/completions", json=chat(flapping))
                answered.append(assert_names_who_answered(gw, r))
        calls = gw.emulators["openai"].emulator.calls["chat"]
    assert "openai" in answered and any(model != "openai" for model in answered)
    # the primary was called each time it was chosen; it answered every other call
    assert answered.count("openai") == calls // 2


async def test_a_fallback_that_rejects_the_prefill_continues_in_a_user_turn(settings):
    # openai breaks off mid-stream; lmstudio and gemini refuse, so the continuation goes to
    # claude, whose emulator rejects a trailing assistant message (the prefill) with a 400:
    # the worker asks it again with the partial answer as an assistant turn + a user turn
    text = (
        f"{LONG} [emulate:openai:fault=cut] [emulate:lmstudio:error=503] [emulate:gemini:error=503]"
        " [emulate:anthropic:fault=reject_prefill]"
    )
    async with gateway_fleet(settings, ledger=False) as gw:
        chunks, raw = await stream_text(gw, text)
        result = await gw.fleet.result(raw.headers["x-request-id"])
        claude_calls = gw.emulators["anthropic"].emulator.calls["chat"]
    streamed = joined(chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert result.success and result.model == "claude" and result.content == streamed
    assert result.attempts[0].model == "openai" and result.attempts[0].partial_content
    _, _, continuation = streamed.partition(result.attempts[0].partial_content)
    assert continuation.startswith("[anthropic emulator")  # claude continued, in a user turn
    assert claude_calls == 2  # the rejected prefill, then the user-turn form


async def test_429_everywhere_and_for_ever_gets_a_bounded_error(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions",
                json=chat("hi [emulate:*:error=429] [emulate:*:retry_after=0.2]", model="auto"),
            )
        calls = {name: handle.emulator.calls["chat"] for name, handle in gw.emulators.items()}
        models = len(gw.fleet.services["router"].policy.registry.models)
    # every model tried once, none twice (a 429 cools the model: no hammering), then a 503
    # that says when to come back; the bound on time is the client's own timeout
    assert r.status_code == 503 and r.json()["error"]["code"] == "all_models_failed", r.text
    assert float(r.headers["retry-after"]) >= 1 and "rate_limited" in r.json()["error"]["message"]
    assert sum(calls.values()) == models, calls
