"""The chaos suite: each case runs 500 jobs through the real fleet (real nats-server, real
PostgreSQL, the emulators over HTTP), breaks something on purpose while they run, and then
asserts the promise (see ``load.check_invariants``): every job has exactly one final
Result and exactly one ledger row, and no Result claims success for a broken answer.

Chaos is triggered by observed progress (Results stored so far), never by timers; the
only fixed wait is the length of the PostgreSQL outage, which is part of the scenario.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet_local.embedded import PostgresServer
from tests.chaos.fleet import ChaosFleet
from tests.chaos.load import (
    JobSpec,
    Outcome,
    check_invariants,
    collect,
    make_jobs,
    send_all,
    wait_for_ledger,
    wait_for_results,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(300)]

N = 500
#: How long PostgreSQL stays down in its case (the scenario, not a synchronisation).
POSTGRES_OUTAGE_S = 20.0


def mixed(i: int, marker: str = "", **extra) -> tuple[str, dict, str]:
    """A spread of task types and complexities (so every provider works), 1 in 5 a request."""
    task = ("code_generation", "reasoning", "completion", "analysis", "creative")[i % 5]
    fields = {"task_type": task, "complexity": 1 + (i * 7) % 10, **extra}
    return marker, fields, "request" if i % 5 == 0 else "submit"


async def run_case(fleet: ChaosFleet, database_url: str, jobs: list[JobSpec], chaos) -> tuple[dict, Outcome]:
    """Send the jobs while ``chaos(fleet)`` breaks things; wait until everything settled;
    assert the invariants."""
    outcome = Outcome()
    sender = asyncio.create_task(send_all(fleet, jobs, outcome))
    try:
        await chaos(fleet)
        await sender
    finally:
        if not sender.done():
            sender.cancel()
    await wait_for_results(fleet, len(jobs))
    await wait_for_ledger(database_url, [j.job_id for j in jobs])
    await collect(fleet, database_url, jobs, outcome)
    tally = check_invariants(jobs, outcome)
    assert all(fleet.alive().values()), fleet.alive()
    return tally, outcome


async def in_flight(fleet: ChaosFleet, stream: str, durable: str, timeout_s: float = 10.0) -> int:
    """Messages the consumer has out unacked, polled until there are some (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = await fleet.js.consumer_info(stream, durable)
        if info.num_ack_pending or time.monotonic() > deadline:
            return info.num_ack_pending
        await asyncio.sleep(0.01)


async def test_sigkill_a_worker_mid_job(tmp_path, database_url, prefix):
    def shape(i):  # most jobs go to LM Studio; a third of them take a while there
        marker = "[emulate:lmstudio:latency_ms=300] " if i % 3 == 0 else ""
        return (
            marker,
            {"task_type": "code_generation", "complexity": 1 + i % 3} if i % 10 else {},
            "request" if i % 5 == 0 else "submit",
        )

    jobs = make_jobs(N, "kill-worker", shape)
    killed_mid_job = []

    async def chaos(fleet):
        for at in (100, 300):
            await wait_for_results(fleet, at)
            killed_mid_job.append(await in_flight(fleet, fleet.subjects.dispatch_stream, "worker-lmstudio"))
            fleet.kill("worker-lmstudio")
            await fleet.start("worker-lmstudio")  # what the supervisor does

    async with ChaosFleet(tmp_path, database_url, prefix=prefix, subprocesses={"worker-lmstudio"}) as fleet:
        tally, _ = await run_case(fleet, database_url, jobs, chaos)
    assert sum(killed_mid_job) > 0, "no job was in flight when the worker was killed"
    assert tally["success"] == N


async def test_sigkill_the_router(tmp_path, database_url, prefix):
    jobs = make_jobs(N, "kill-router", mixed)

    async def chaos(fleet):
        for at in (100, 300):
            await wait_for_results(fleet, at)
            await in_flight(fleet, fleet.subjects.jobs_stream, "router-jobs", timeout_s=2.0)
            fleet.kill("router")
            await fleet.start("router")

    async with ChaosFleet(tmp_path, database_url, prefix=prefix, subprocesses={"router"}) as fleet:
        tally, _ = await run_case(fleet, database_url, jobs, chaos)
    assert tally["success"] == N


async def test_restart_nats_server_mid_stream(tmp_path, database_url, prefix):
    jobs = make_jobs(N, "nats-restart", mixed)

    async def chaos(fleet):
        for at in (120, 320):
            await wait_for_results(fleet, at)
            await fleet.restart_nats()

    async with ChaosFleet(tmp_path, database_url, prefix=prefix) as fleet:
        tally, _ = await run_case(fleet, database_url, jobs, chaos)
    assert tally["success"] == N


async def test_stop_postgres_for_20_seconds(tmp_path, prefix):
    pg = PostgresServer(tmp_path / "pg", fsync=False)
    await asyncio.to_thread(pg.start)
    jobs = make_jobs(N, "pg-outage", mixed)
    held = []

    async def chaos(fleet):
        await wait_for_results(fleet, 100)
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(POSTGRES_OUTAGE_S)  # the outage itself
        info = await fleet.js.consumer_info(fleet.subjects.results_stream, "ledger-results")
        held.append(info.num_ack_pending + info.num_pending)
        await asyncio.to_thread(pg.start)

    try:
        async with ChaosFleet(tmp_path, pg.url, prefix=prefix) as fleet:
            tally, _ = await run_case(fleet, pg.url, jobs, chaos)
    finally:
        await asyncio.to_thread(pg.stop)
    assert held[0] > 0, "no Result waited in JetStream during the outage"
    assert tally["success"] == N


async def test_a_provider_that_never_answers(tmp_path, database_url, prefix):
    def shape(i):  # a third hang on both local models, then go commercial
        marker = "[emulate:lmstudio:hang] " if i % 3 == 0 else ""
        return marker, {"task_type": "code_generation", "complexity": 1 + i % 3}, "request" if i % 5 == 0 else "submit"

    jobs = make_jobs(N, "hang", shape)
    # a call outlives ack_wait: only in_progress() keeps the message from being redelivered
    # (hanging calls only wait: room for many at once keeps the case short)
    env = {"FLEET_ACK_WAIT_S": "1", "FLEET_PROVIDER_TIMEOUT_S": "2.5", "FLEET_WORKER_CONCURRENCY": "128"}

    async def chaos(fleet):
        pass

    async with ChaosFleet(tmp_path, database_url, prefix=prefix, env=env) as fleet:
        tally, outcome = await run_case(fleet, database_url, jobs, chaos)
    assert tally["success"] == N
    assert any(a.error and a.error.code == "timeout" for r in outcome.results.values() for a in r.attempts)


async def test_a_provider_flapping_between_up_and_down(tmp_path, database_url, prefix):
    jobs = make_jobs(N, "flap", mixed)

    async def chaos(fleet):
        for step, at in enumerate(range(40, N - 40, 40)):
            await wait_for_results(fleet, at)
            for provider in ("openai", "anthropic"):
                relay = fleet.relays[provider]
                await (relay.down() if step % 2 == 0 else relay.up())
        for provider in ("openai", "anthropic"):
            await fleet.relays[provider].up()

    async with ChaosFleet(tmp_path, database_url, prefix=prefix) as fleet:
        tally, outcome = await run_case(fleet, database_url, jobs, chaos)
    assert tally["success"] == N
    assert any(a.error and a.error.code == "connection" for r in outcome.results.values() for a in r.attempts)


async def test_a_429_storm_with_retry_after(tmp_path, database_url, prefix):
    def shape(i):
        if i % 10 == 0:  # every provider refuses: the job fails, with its attempts listed
            return "[emulate:*:error=429] [emulate:*:retry_after=0.5] ", {"complexity": 5}, "submit"
        marker = "[emulate:openai:error=429] [emulate:openai:retry_after=0.5] " if i % 2 else ""
        return marker, {"task_type": "completion", "complexity": 5}, "request" if i % 5 == 1 else "submit"

    jobs = make_jobs(N, "storm", shape)

    async def chaos(fleet):
        pass

    async with ChaosFleet(tmp_path, database_url, prefix=prefix) as fleet:
        tally, outcome = await run_case(fleet, database_url, jobs, chaos)
    # jobs refused everywhere fail; others may too while every model cools down at once
    assert tally["failed"] >= N // 10 and tally["success"] > 0
    limited = [a for r in outcome.results.values() for a in r.attempts if a.error and a.error.code == "rate_limited"]
    assert limited


async def test_a_stream_cut_mid_answer(tmp_path, database_url, prefix):
    def shape(i):
        if i % 4 == 0:  # the relay cuts LM Studio's answers to these in the middle
            return "[chaos:cut] ", {"task_type": "code_generation", "complexity": 2}, "submit"
        if i % 4 == 1:  # the provider's own stream breaks off mid-answer
            return "[emulate:openai:fault=cut] ", {"task_type": "completion", "complexity": 5, "stream": True}, "submit"
        return mixed(i)

    jobs = make_jobs(N, "cut", shape)

    async def chaos(fleet):
        pass

    async with ChaosFleet(tmp_path, database_url, prefix=prefix, cut={"lmstudio": b"[chaos:cut]"}) as fleet:
        tally, outcome = await run_case(fleet, database_url, jobs, chaos)
        cuts = sum(relay.cuts for relay in fleet.relays.values())
    assert cuts >= N // 4
    assert tally["success"] == N  # every cut answer was retried elsewhere, none passed off as whole


async def test_the_same_job_published_twice(tmp_path, database_url, prefix):
    jobs = make_jobs(N, "twice", mixed)
    for job in jobs:
        job.copies = 2

    async def chaos(fleet):
        pass

    async with ChaosFleet(tmp_path, database_url, prefix=prefix) as fleet:
        tally, _ = await run_case(fleet, database_url, jobs, chaos)
        stored_jobs = (await fleet.js.stream_info(fleet.subjects.jobs_stream)).state.last_seq
    assert stored_jobs == N, "a duplicate job was stored"
    assert tally["success"] == N
