"""Providers as they really behave, end to end over a real nats-server (and PostgreSQL):
rate-limit cooldowns, overloads and cut streams that escalate, rejected keys, the prober."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from fleet_shared.schema import Dispatch, Job, TaskType, encode, stream_chunk_decoder
from tests.provider_fleet import eventually, provider_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def settings(make_settings, database_url):
    # a short ramp: a model back from a cooldown takes all its jobs again soon
    return make_settings(database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0)


async def test_429_retry_after_cools_the_model_and_queued_work_waits(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, emulators):
        limited = await fleet.request(
            {
                "prompt": "hi [emulate:openai:error=429] [emulate:openai:retry_after=2]",
                "context": {"force_model": "openai"},
            }
        )
        assert limited.success and limited.model != "openai"
        assert limited.attempts[0].model == "openai" and limited.attempts[0].error.code == "rate_limited"
        board = fleet.services["router"].board
        state = await eventually(lambda: board.get("openai").reason == "rate_limited" and board.get("openai"))
        assert state.until - state.at == pytest.approx(2.0, abs=0.05)  # the provider's retry-after
        calls_before = emulators["openai"].emulator.calls["chat"]
        # a job already dispatched to openai (as by a router that had not heard yet) waits in
        # the queue until the cooldown ends, then is served by openai
        job = Job(prompt="queued during the cooldown")
        dispatch = Dispatch(
            job_id="queued-1",
            job=job,
            task_type=TaskType.COMPLETION,
            complexity=5,
            model="openai",
            provider="openai",
            provider_model="gpt-4o",
            reasoning="dispatched during a cooldown",
        )
        await fleet.js.publish(fleet.subjects.dispatch("openai"), encode(dispatch))
        served = await fleet.result("queued-1")
        assert time.time() >= state.until  # it cannot have been called earlier
        assert served.success and served.model == "openai"
        assert emulators["openai"].emulator.calls["chat"] == calls_before + 1


async def test_router_stops_choosing_a_cooling_model(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        await fleet.request(
            {
                "prompt": "x [emulate:openai:error=429] [emulate:openai:retry_after=60]",
                "context": {"force_model": "openai"},
            }
        )
        board = fleet.services["router"].board
        await eventually(lambda: board.get("openai").phase(time.time()) == "cooling")
        r = await fleet.request({"prompt": "a completion", "task_type": "completion", "complexity": 5})
        assert r.success and r.model == "local_mlx" and "openai unavailable" in r.reasoning


async def test_overloaded_529_escalates_to_another_model(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request(
            {"prompt": "deep question [emulate:anthropic:error=529]", "task_type": "reasoning", "complexity": 8}
        )
    assert r.success and r.model == "gemini"
    assert [(a.model, a.error.code if a.error else None) for a in r.attempts] == [
        ("claude", "overloaded"),
        ("gemini", None),
    ]


async def test_cut_stream_escalates_and_the_client_sees_both_attempts(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        chunks = []
        done = asyncio.Event()

        async def on_chunk(msg):
            chunk = stream_chunk_decoder.decode(msg.data)
            chunks.append(chunk)
            if chunk.done and chunk.error is None:
                done.set()

        await fleet.nc.subscribe(fleet.subjects.stream("cut-1"), cb=on_chunk)
        r = await fleet.request(
            {
                "id": "cut-1",
                "stream": True,
                "task_type": "reasoning",
                "complexity": 8,
                "prompt": "tell me a long story about queues [emulate:anthropic:fault=cut]",
            }
        )
        await asyncio.wait_for(done.wait(), 10)
    assert r.success and r.model == "gemini" and not r.truncated
    first, second = r.attempts
    assert (first.model, first.error.code) == ("claude", "connection")
    assert second.success and second.ttft_ms is not None and second.ttft_ms >= 0
    by_attempt = {1: [c for c in chunks if c.attempt_no == 1], 2: [c for c in chunks if c.attempt_no == 2]}
    assert by_attempt[1][-1].done and by_attempt[1][-1].error.code == "connection" and by_attempt[1][-1].escalated
    assert [c.seq for c in by_attempt[2]] == list(range(len(by_attempt[2])))
    # the second attempt continues what the first streamed before the cut: together, the answer
    sent_first = "".join(c.delta for c in by_attempt[1])
    assert first.partial_content == sent_first and by_attempt[2][0].continues == len(sent_first)
    assert sent_first + "".join(c.delta for c in by_attempt[2]) == r.content


async def test_stall_is_a_timeout_that_escalates(make_settings):
    settings = make_settings(stream_stall_s=0.3, ack_wait_s=10.0)
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request(
            {"prompt": "story [emulate:openai:fault=stall]", "stream": True, "context": {"force_model": "openai"}}
        )
    assert r.success and r.attempts[0].error.code == "timeout" and "stalled" in r.attempts[0].error.message


async def test_bad_key_marks_the_provider_unavailable_and_the_router_avoids_it(settings):
    async with provider_fleet(settings, keys={"anthropic": "bad-key-0a1b2c3d4e5f"}, ledger=False) as (
        fleet,
        _,
        emulators,
    ):
        board = fleet.services["router"].board
        state = await eventually(lambda: board.get("claude").state == "down" and board.get("claude"))
        assert state.reason == "auth" and state.key_fingerprint and "bad-key" not in state.key_fingerprint
        r = await fleet.request({"prompt": "Analyze microservices", "task_type": "reasoning", "complexity": 8})
        assert r.success and r.model == "gemini" and "claude unavailable" in r.reasoning
        assert emulators["anthropic"].emulator.calls["chat"] == 0  # never called: the prober found out for free


async def test_the_prober_makes_no_completion_calls(make_settings):
    settings = make_settings(probe_interval_s=0.05)
    async with provider_fleet(settings, ledger=False) as (fleet, _, emulators):
        for provider in emulators:
            prober = fleet.services[provider].prober
            # answered probes: each one's listing call has been served (and counted) by then
            await eventually(lambda p=prober: p.probes - p.failed_probes >= 3)
        for provider, handle in emulators.items():
            calls = handle.emulator.calls
            assert calls["chat"] == 0, provider
            assert calls["models"] + calls["native_models"] >= 3, provider


async def test_context_length_escalates_only_to_a_larger_window(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request(
            {"prompt": "huge [emulate:openai:fault=context_length]", "task_type": "completion", "complexity": 5}
        )
    assert r.success and r.attempts[0].error.code == "context_length"
    assert r.model in ("claude", "gemini")  # larger than openai's 128k; never the 32k local models
    assert "128000 that overflowed" in r.reasoning


async def test_an_answer_too_large_for_the_bus_escalates(settings):
    # 400k tokens x 4 characters: a Result over NATS's 1 MiB max_payload
    async with provider_fleet(settings, ledger=False) as (fleet, _, emulators):
        r = await fleet.request(
            {"prompt": "write forever [emulate:lmstudio:fault=long_answer]", "complexity": 1, "max_tokens": 400_000}
        )
    first = r.attempts[0]
    assert first.provider == "lmstudio" and not first.success and first.error.code == "bad_response"
    assert "too large to deliver" in first.error.message and first.tokens_out == 400_000
    assert r.success and r.provider != "lmstudio" and len(r.attempts) >= 2


async def test_a_tpm_window_counts_the_tokens_the_provider_reported(make_settings, tmp_path):
    from fleet_shared.kv import open_bucket
    from fleet_shared.ratelimit import BUCKET_TTL_S, WINDOW_S, RateLimiter
    from fleet_shared.registry import DEFAULT_MODELS_FILE

    models = tmp_path / "models.toml"
    text = DEFAULT_MODELS_FILE.read_text()
    models.write_text(
        text.replace('provider_model = "claude-sonnet-4-6"\n', 'provider_model = "claude-sonnet-4-6"\ntpm = 1000000\n')
    )
    settings = make_settings(models_file=str(models))
    assert settings.registry().models["claude"].tpm == 1_000_000
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        started = time.time()
        r = await fleet.request({"prompt": "a short answer", "max_tokens": 8000, "context": {"force_model": "claude"}})
        assert r.success and r.tokens_out < 100
        limiter = RateLimiter(await open_bucket(fleet.nc.jetstream(), fleet.subjects.rates_bucket, ttl_s=BUCKET_TTL_S))

        async def tokens_counted() -> int:  # the reservation was 8000+; the worker settles after the Result
            windows = {int(started // WINDOW_S), int(time.time() // WINDOW_S)}
            return sum([(await limiter.usage("claude", now=w * WINDOW_S)).tokens for w in windows])

        await eventually(lambda: _equals(tokens_counted(), r.tokens_in + r.tokens_out))


async def _equals(value, expected) -> bool:
    return await value == expected


async def test_the_attempt_keeps_the_providers_own_time(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request({"prompt": "hi", "context": {"force_model": "openai"}})
        local = await fleet.request({"prompt": "hi", "complexity": 1})
    assert r.success and r.attempts[0].provider_ms is not None  # openai-processing-ms
    assert r.attempts[0].provider_ms <= r.attempts[0].latency_ms
    assert local.success and local.attempts[0].provider_ms is None  # LM Studio reports none


async def test_a_job_waits_while_every_model_cools_down_at_its_providers_request(settings, caplog):
    import logging

    from fleet_shared import availability as av

    caplog.set_level(logging.INFO, logger="fleet.router")
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        router = fleet.services["router"]
        models = list(router.policy.registry.models)
        for model in models:  # a 429 storm: every provider asked for a pause
            await router.board.report(model, av.cooldown("rate_limited", 1.0, ramp_s=0.0))
        await eventually(lambda: all(router.board.get(m).phase(time.time()) == "cooling" for m in models))
        r = await fleet.request({"id": "storm-1", "prompt": "hi", "complexity": 5}, timeout=30)
    assert r.success and len(r.attempts) == 1  # served once a model was back, not failed
    assert "job storm-1 waits" in caplog.text


async def test_the_router_uses_the_context_length_lm_studio_loaded(make_settings):
    settings = make_settings(probe_interval_s=0.05)
    async with provider_fleet(settings, ledger=False) as (fleet, _, emulators):
        emulators["lmstudio"].emulator.loaded["qwen/qwen3-30b-a3b-2507"] = 4096  # reloaded with a 4k context
        router = fleet.services["router"]
        await eventually(lambda: router.board.windows.get("local_mlx") == 4096)  # the prober read /api/v0/models
        r = await fleet.request({"prompt": "x" * 20_000, "task_type": "code_generation", "complexity": 2})
    assert r.success and r.model == "local_devstral" and len(r.attempts) == 1
    assert "local_mlx context window 4096 as loaded" in r.reasoning


async def test_invalid_request_fails_fast(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request({"prompt": "bad [emulate:openai:error=400]", "context": {"force_model": "openai"}})
    assert not r.success and r.error.code == "invalid_request" and len(r.attempts) == 1


async def test_truncated_answer_is_a_flagged_success(settings):
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        r = await fleet.request(
            {
                "prompt": "a long answer please, with many words in it",
                "max_tokens": 2,
                "context": {"force_model": "claude"},
            }
        )
    assert r.success and r.truncated and r.attempts[0].truncated
    assert r.attempts[0].estimated_cost_usd > 0 and r.attempts[0].cost_usd > 0


async def test_a_key_set_in_the_environment_appears_nowhere(make_settings, database_url, caplog):
    import logging

    import asyncpg

    from fleet_shared.config import provider_endpoint

    keys = {
        "OPENAI_API_KEY": "sk-proj-PLANTED0openai0KEY0a1b2c3d4e5f6",
        "ANTHROPIC_API_KEY": "sk-ant-PLANTED0anthropic0KEY0a1b2c3",
        "GEMINI_API_KEY": "AIzaPLANTED0gemini0KEY0a1b2c3d4e5f6g",
        "LMSTUDIO_API_KEY": "lms-PLANTED0lmstudio0KEY0a1b2c3",
    }
    url_vars = {
        "openai": "OPENAI_BASE_URL",
        "anthropic": "ANTHROPIC_BASE_URL",
        "gemini": "GOOGLE_GEMINI_BASE_URL",
        "lmstudio": "LMSTUDIO_BASE_URL",
    }

    def endpoint(provider, url):  # exactly as a worker reads it: the SDKs' variable names
        return provider_endpoint(provider, {**keys, url_vars[provider]: url})

    seen: list[bytes] = []
    caplog.set_level(logging.DEBUG)
    settings = make_settings(database_url=database_url, ack_wait_s=10.0, probe_interval_s=0.2, ramp_s=0.2)
    async with provider_fleet(settings, endpoints=endpoint) as (fleet, watch, _e):

        async def everything(msg):
            seen.append(msg.subject.encode() + msg.data + json.dumps(dict(msg.headers or {})).encode())

        await fleet.nc.subscribe(">", cb=everything)
        ids = []
        for i, prompt in enumerate(
            [
                "plain",
                "[emulate:*:error=401] rejected",
                "[emulate:*:error=500] broken",
                "[emulate:*:error=429] limited",
                "[emulate:*:fault=cut] cut",
            ]
        ):
            for complexity in (2, 5, 8):
                job_id = f"key-{i}-{complexity}"
                ids.append(job_id)
                await fleet.request(
                    {"id": job_id, "prompt": prompt, "complexity": complexity, "stream": True}, timeout=60
                )
        await watch.wait_for(ids)
    conn = await asyncpg.connect(database_url)
    try:
        rows = [
            json.dumps([str(v) for v in r.values()])
            for table in ("routing_decisions", "attempts")
            for r in await conn.fetch(f"SELECT * FROM {table}")
        ]
    finally:
        await conn.close()
    logs = [record.getMessage() + str(record.args) + (record.exc_text or "") for record in caplog.records]
    assert seen and rows and logs
    for key in keys.values():
        for where, texts in (("NATS", [s.decode(errors="replace") for s in seen]), ("ledger", rows), ("logs", logs)):
            assert not any(key in text for text in texts), f"{key[:8]}… found in {where}"
        assert not any(key in msgspec.json.encode(text).decode() for text in logs)
