"""The gateway's answers when things go wrong, through the real fleet: error shapes and
statuses of both APIs, keys, limits, and provider faults (emulator markers) seen over HTTP
— including streams that fail before and after their first byte."""

from __future__ import annotations

import re

import anthropic
import httpx
import msgspec
import openai
import pytest

from tests.gateway_harness import GATEWAY_KEY, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
LONG = "tell me a long story about queues, routers, workers and ledgers in a fleet of machines"


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0, stream_stall_s=1.0)


def chat(text: str, model: str = "openai", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_events(body: str) -> list[str]:
    return [block for block in body.split("\n\n") if block.strip()]


async def test_keys_missing_or_wrong_get_401_in_each_shape_without_echoing_the_key(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            missing = await http.post("/v1/chat/completions", json=chat("hi"))
            wrong = await http.post(
                "/v1/messages",
                json={"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": "sk-wrong-key-123456"},
            )
            models = await http.get("/v1/models", headers={"x-api-key": "sk-wrong-key-123456"})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": wrong.json()["error"]["message"]},
    }
    assert "sk-wrong-key" not in wrong.text and models.status_code == 401


async def test_invalid_requests_get_400_404_413_501_in_openai_shape(settings):
    async with gateway_fleet(settings, ledger=False, max_body_bytes=4096) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH) as http:
            n2 = await http.post("/v1/chat/completions", json=chat("hi", n=2))
            not_json = await http.post(
                "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
            )
            wrong_type = await http.post("/v1/chat/completions", json=chat("hi", max_tokens="many"))
            unknown_model = await http.post("/v1/chat/completions", json=chat("hi", model="gpt-99"))
            bad_hint = await http.post("/v1/chat/completions", json=chat("hi"), headers={"x-router-complexity": "11"})
            too_large = await http.post("/v1/chat/completions", json=chat("x" * 10_000))
            embeddings = await http.post("/v1/embeddings", json={"model": "auto", "input": "x"})
            nowhere = await http.get("/v1/nowhere")
            wrong_method = await http.get("/v1/chat/completions")
    assert (n2.status_code, n2.json()["error"]["param"]) == (400, "n")
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"
    assert (wrong_type.status_code, wrong_type.json()["error"]["param"]) == (400, "max_tokens")
    assert (unknown_model.status_code, unknown_model.json()["error"]["code"]) == (404, "model_not_found")
    assert bad_hint.status_code == 400
    assert too_large.status_code == 413
    assert (embeddings.status_code, embeddings.json()["error"]["code"]) == (501, "not_implemented")
    assert (nowhere.status_code, nowhere.json()["error"]["code"]) == (404, "unknown_url")
    assert wrong_method.status_code == 405
    for response in (n2, not_json, wrong_type, unknown_model, too_large, embeddings, nowhere):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in response.text


async def test_sdks_raise_their_own_exceptions_for_gateway_errors(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        oa = openai.AsyncOpenAI(api_key="sk-not-this-one", base_url=gw.openai_base, max_retries=0)
        an = anthropic.AsyncAnthropic(api_key=GATEWAY_KEY, base_url=gw.url, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await oa.chat.completions.create(**chat("hi"))
        with pytest.raises(anthropic.NotFoundError):
            await an.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(anthropic.BadRequestError):
            await an.messages.create(model="claude", max_tokens=5, messages=[{"role": "assistant", "content": "x"}])
        await oa.close()
        await an.close()


async def test_rate_limited_model_fails_over_and_the_answer_names_who_answered(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions",
                json=chat("hi [emulate:openai:error=429] [emulate:openai:retry_after=2]", model="openai"),
            )
    assert r.status_code == 200
    body = r.json()
    assert r.headers["x-router-attempts"] == "2" and r.headers["x-router-model"] != "openai"
    answered = gw.fleet.services["router"].policy.registry.models[r.headers["x-router-model"]]
    assert body["model"] == answered.provider_model
    assert body["choices"][0]["message"]["content"].startswith(f"[{answered.provider} emulator")
    assert gw.emulators["openai"].emulator.calls["chat"] == 1  # honoured: not hammered


async def test_context_length_everywhere_is_a_400_and_no_model_is_retried(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post("/v1/chat/completions", json=chat("big [emulate:*:fault=context_length]"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert all(handle.emulator.calls["chat"] <= 1 for handle in gw.emulators.values())


async def test_content_filtered_is_an_error_not_a_success(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post(
                "/v1/messages",
                json={
                    "model": "claude",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "bad [emulate:*:fault=content_filter]"}],
                },
            )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert "content filter" in r.json()["error"]["message"]


async def test_every_provider_down_is_a_503_in_anthropic_shape(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": GATEWAY_KEY}, timeout=30) as http:
            r = await http.post(
                "/v1/messages",
                json={
                    "model": "auto",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "x [emulate:*:error=503]"}],
                },
            )
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "overloaded_error"
    assert r.headers["x-request-id"]


async def test_a_provider_that_never_answers_gets_a_504_within_the_timeout(settings):
    fast = msgspec.structs.replace(settings, provider_timeout_s=1.0)
    async with gateway_fleet(fast, ledger=False, request_timeout_s=0.5) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
            r = await http.post("/v1/chat/completions", json=chat("wait [emulate:*:hang]"))
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "timeout" and "Idempotency-Key" in r.json()["error"]["message"]


async def test_stream_failing_before_its_first_byte_fails_over_invisibly(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            **chat(f"{LONG} [emulate:openai:error=500]"), stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
        await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert raw.headers["x-router-model"] != "openai"
    assert "openai emulator" not in text and text.startswith(f"[{raw.headers['x-router-provider'] or ''}")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} != {"gpt-4o"}


@pytest.mark.parametrize("fault", ["cut", "stall", "stream_error"])
async def test_stream_failing_after_bytes_without_a_fallback_ends_with_an_error_event_and_no_done(settings, fault):
    # no continuation possible: the request keeps the job to its forced model
    keep = {"x-router-no-fallback": "1"}
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={**AUTH, **keep}, timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions", json=chat(f"{LONG} [emulate:openai:fault={fault}]", stream=True)
            )
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0)
        stream = await client.chat.completions.create(
            **chat(f"{LONG} again [emulate:openai:fault={fault}]"), stream=True, extra_headers=keep
        )
        received = []
        with pytest.raises(openai.APIError, match="interrupted"):
            async for chunk in stream:
                received.append(chunk)
        await client.close()
    events = sse_events(r.text)
    assert r.status_code == 200 and r.headers["x-router-model"] == "openai"
    assert "[DONE]" not in r.text
    error = msgspec.json.decode(events[-1].removeprefix("data: "))
    assert error["error"]["code"] == "stream_interrupted"
    deltas = [msgspec.json.decode(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(d["choices"][0]["finish_reason"] is None for d in deltas)  # never looked complete
    assert any(c.choices and c.choices[0].delta.content for c in received)


async def test_anthropic_stream_cut_everywhere_ends_with_an_error_event_and_no_message_stop(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": GATEWAY_KEY}, timeout=30) as http:
            r = await http.post(
                "/v1/messages",
                json={
                    "model": "claude",
                    "max_tokens": 500,
                    "stream": True,
                    "messages": [{"role": "user", "content": f"{LONG} [emulate:*:fault=cut]"}],  # every model
                },
            )
    events = sse_events(r.text)
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error")
    assert "message_stop" not in r.text and "content_block_delta" in r.text


@pytest.mark.parametrize("fault", ["cut", "stream_error"])
async def test_stream_cut_mid_answer_is_continued_by_the_next_model_and_ends_with_done(settings, fault):
    async with gateway_fleet(settings, ledger=False) as gw:
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            **chat(f"{LONG} [emulate:openai:fault={fault}]"), stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]  # no APIError: the stream completed
        await client.close()
        job_id = raw.headers["x-request-id"]
        result = await gw.fleet.result(job_id)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]  # one end, after the whole answer
    assert raw.headers["x-router-model"] == "openai"  # the stream began with it
    # the first model's partial answer, then the next model's continuation (the emulators
    # echo the last message: the request to continue, or Anthropic's prefill)
    assert text.startswith("[openai emulator · gpt-4o] tell me")
    # (Anthropic's echoes its prefill, which is the partial answer: so only the start is checked)
    continuation = text.removeprefix(result.attempts[0].partial_content or "")
    assert continuation != text and re.match(r"\[(?!openai )[a-z]+ emulator ·", continuation), continuation
    assert result.content == text and len(result.attempts) == 2  # the Result is the whole answer
    assert result.attempts[0].partial_content and text.startswith(result.attempts[0].partial_content)
