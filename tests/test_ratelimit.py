"""Fleet-wide rpm/tpm limits in NATS KV, and the worker's gate that leaves work queued."""

from __future__ import annotations

import nats
import pytest

from fleet_shared.kv import open_bucket
from fleet_shared.ratelimit import BUCKET_TTL_S, WINDOW_S, RateLimiter, Usage, fits
from fleet_shared.registry import load_registry
from fleet_shared.schema import Dispatch, Job, TaskType
from fleet_workers.gate import Gate

T0 = 1_700_000_040.0  # a window boundary (a multiple of 60)


def test_fits_counts_requests_and_tokens():
    assert fits(None, 10, rpm=1, tpm=None)
    assert not fits(Usage(1, 10), 10, rpm=1, tpm=None)
    assert fits(Usage(1, 10), 10, rpm=None, tpm=20) and not fits(Usage(1, 10), 11, rpm=None, tpm=20)
    assert fits(None, 10_000, rpm=None, tpm=100)  # a job bigger than the budget still runs, alone


@pytest.fixture
async def limiters(nats_url, subjects):
    """Two limiters on one bucket, as two worker processes would have."""
    clients = [await nats.connect(nats_url) for _ in range(2)]
    made = [RateLimiter(await open_bucket(nc.jetstream(), subjects.rates_bucket, ttl_s=BUCKET_TTL_S)) for nc in clients]
    yield made
    for nc in clients:
        await nc.drain()


@pytest.mark.anyio
async def test_requests_per_minute_are_shared_by_the_fleet(limiters):
    a, b = limiters
    waits = [await limiter.acquire("openai", 10, rpm=3, tpm=None, now=T0 + 1) for limiter in (a, b, a)]
    assert waits == [0.0, 0.0, 0.0]
    assert await b.acquire("openai", 10, rpm=3, tpm=None, now=T0 + 15) == pytest.approx(WINDOW_S - 15)
    assert await a.acquire("openai", 10, rpm=3, tpm=None, now=T0 + WINDOW_S) == 0.0  # the next window
    assert (await b.usage("openai", now=T0 + 1)) == Usage(3, 30)


@pytest.mark.anyio
async def test_tokens_per_minute(limiters):
    a, b = limiters
    assert await a.acquire("claude", 600, rpm=None, tpm=1000, now=T0) == 0.0
    assert await b.acquire("claude", 600, rpm=None, tpm=1000, now=T0 + 30) == pytest.approx(30.0)
    assert await b.acquire("claude", 400, rpm=None, tpm=1000, now=T0 + 30) == 0.0
    assert await a.acquire("gemini", 600, rpm=None, tpm=1000, now=T0) == 0.0  # per model


@pytest.mark.anyio
async def test_concurrent_acquires_never_overshoot(limiters):
    import asyncio

    a, b = limiters
    waits = await asyncio.gather(*(lim.acquire("m", 1, rpm=10, tpm=None, now=T0) for lim in [a, b] * 10))
    assert sum(1 for w in waits if w == 0.0) == 10


@pytest.mark.anyio
async def test_gate_holds_back_a_job_over_the_model_limit(limiters):
    registry = load_registry()
    spec = msgspec_replace(registry.models["openai"], rpm=1)
    d = Dispatch(
        job_id="j",
        job=Job(prompt="hi"),
        task_type=TaskType.COMPLETION,
        complexity=5,
        model="openai",
        provider="openai",
        provider_model="gpt-4o",
        reasoning="test",
    )
    gate = Gate(None, limiters[0], key_fingerprint="")
    first = await gate.check(d, spec)
    assert first.wait_s == 0 and first.error is None  # go
    verdict = await gate.check(d, spec)
    assert verdict.error is None and 0 < verdict.wait_s <= WINDOW_S


@pytest.mark.anyio
async def test_settle_replaces_the_reservation_by_the_tokens_used(limiters):
    a, b = limiters
    assert await a.acquire("claude", 900, rpm=None, tpm=1000, now=T0 + 1) == 0.0  # input + max_tokens
    assert await b.acquire("claude", 500, rpm=None, tpm=1000, now=T0 + 2) > 0  # the window looks full
    await a.settle("claude", 900, 120, acquired_at=T0 + 1)  # the answer was short
    assert await a.usage("claude", now=T0 + 3) == Usage(1, 120)
    assert await b.acquire("claude", 500, rpm=None, tpm=1000, now=T0 + 3) == 0.0  # now it fits
    await a.settle("claude", 500, 2_000, acquired_at=T0 + 3)  # a longer one counts in full
    assert await a.usage("claude", now=T0 + 4) == Usage(2, 2_120)
    await a.settle("claude", 10, 0, acquired_at=T0 - WINDOW_S)  # a window that never existed: no-op
    assert await a.usage("claude", now=T0 - WINDOW_S) == Usage()


@pytest.mark.anyio
async def test_gate_reserves_tokens_and_settles_them(limiters):
    spec = msgspec_replace(load_registry().models["claude"], tpm=10_000)
    d = Dispatch(
        job_id="j",
        job=Job(prompt="hi"),
        task_type=TaskType.COMPLETION,
        complexity=5,
        model="claude",
        provider="anthropic",
        provider_model="claude-sonnet-4-6",
        reasoning="test",
        max_tokens=1000,
    )
    gate = Gate(None, limiters[0], key_fingerprint="")
    verdict = await gate.check(d, spec)
    assert verdict.wait_s == 0 and verdict.error is None  # go
    assert verdict.reservation is not None and verdict.reservation.tokens > 1000
    await gate.settle(verdict.reservation, 42)
    used = await limiters[0].usage("claude", now=verdict.reservation.at)
    assert used == Usage(1, 42)


def msgspec_replace(spec, **changes):
    import msgspec

    return msgspec.structs.replace(spec, **changes)
