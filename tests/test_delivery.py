"""Delivery guarantees, piece by piece, over a real nats-server: redelivery backoff, dead
letters, the pull-subscription watchdog, graceful stop, and jobs whose provider has no
live worker. (The chaos suite in tests/chaos proves the whole under load.)"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fleet_router.intake import job_id_for, stream_key
from fleet_router.service import Router
from fleet_shared import bus
from fleet_shared.loop import PullLoop, keep_alive
from fleet_shared.outcome import DONE
from fleet_shared.publish import publish_result
from fleet_shared.schema import Attempt, Dispatch, ErrorInfo, Job, Result, TaskType, encode, result_decoder
from tests.chaos.fleet import ChaosFleet

pytestmark = pytest.mark.anyio
WAIT_S = 20.0


async def eventually(check, timeout_s: float = WAIT_S, every_s: float = 0.02):
    """Poll an observable condition until it holds (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)
    return value


async def stored(js, subjects, job_id: str) -> Result | None:
    try:
        msg = await js.get_last_msg(subjects.results_stream, subjects.result(job_id), direct=True)
    except Exception:
        return None
    return result_decoder.decode(msg.data)


async def crash_on_every_message(sub, until) -> list:
    """Play a worker that crashes on every message (nak, never ack), pulling on until
    ``until()`` holds: a pull request is what makes the server notice an exhausted message."""
    seen = []
    deadline = time.monotonic() + WAIT_S
    while not (seen and await until()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {len(seen)} deliveries")
        try:
            msgs = await sub.fetch(1, timeout=0.3)
        except Exception:  # nothing delivered (timeout)
            msgs = []
        for msg in msgs:
            seen.append(msg)
            await msg.nak()
    return seen


@pytest.fixture
async def router(make_settings):
    settings = make_settings(ack_wait_s=1.0, max_deliver=2)
    async with Router(settings) as r:
        task = asyncio.create_task(r.run())
        yield r
        await r.stop()
        await asyncio.gather(task, return_exceptions=True)


def test_redeliveries_back_off_from_ack_wait():
    assert bus.redelivery_backoff_s(2.0, 5) == [2.0, 4.0, 8.0, 16.0]
    assert bus.redelivery_backoff_s(30.0, -1) is None  # unlimited: nats-server 2.9 refuses a list
    assert bus.redelivery_backoff_s(2.0, 1) is None  # one delivery: nothing to back off


async def test_consumers_are_created_with_backoff_and_the_dead_letter_streams_exist(router):
    js, subjects = router.js, router.subjects
    info = await js.consumer_info(subjects.jobs_stream, "router-jobs")
    assert info.config.backoff == [1.0] and info.config.max_deliver == 2
    assert info.config.ack_policy == "explicit"
    advisories = await js.stream_info(subjects.advisories_stream)
    assert f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{subjects.dispatch_stream}.*" in advisories.config.subjects
    assert (await js.stream_info(subjects.deadletter_stream)).config.subjects == [subjects.deadletter_all]


async def test_a_dispatch_past_max_deliver_becomes_a_failed_result_and_a_dead_letter(router):
    js, subjects, nc = router.js, router.subjects, router.nc
    replies = asyncio.Queue()
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=replies.put)
    earlier = Attempt(model="local_mlx", provider="lmstudio", success=False, error=ErrorInfo("timeout", "slow"))
    dispatch = Dispatch(
        job_id="dead-1",
        job=Job(prompt="hello", metadata={"k": 1}),
        task_type=TaskType.COMPLETION,
        complexity=5,
        model="openai",
        provider="openai",
        provider_model="gpt-4o",
        reasoning="because",
        attempts=[earlier],
        reply_to=inbox,
    )
    worker_nc = await bus.connect(router.settings, name="crashing-worker")
    try:
        crashing = await bus.ensure_pull_consumer(
            worker_nc.jetstream(),
            stream=subjects.dispatch_stream,
            durable="worker-openai",
            filter_subject=subjects.dispatch("openai"),
            ack_wait_s=1.0,
            max_deliver=2,
            max_ack_pending=8,
        )
        await js.publish(subjects.dispatch("openai"), encode(dispatch))
        seen = await crash_on_every_message(crashing, lambda: stored(js, subjects, "dead-1"))
    finally:
        await worker_nc.close()
    assert len(seen) == 2
    result = await stored(js, subjects, "dead-1")
    assert not result.success and result.error.code == "max_deliveries"
    assert "delivered 2 times to worker-openai" in result.error.message
    assert result.attempts == [earlier] and result.metadata == {"k": 1}
    assert result_decoder.decode((await asyncio.wait_for(replies.get(), WAIT_S)).data) == result
    dead = await js.get_last_msg(subjects.deadletter_stream, subjects.deadletter(subjects.dispatch_stream))
    assert dead.data == encode(dispatch) and dead.headers["Fleet-Dead-Reason"].startswith("max_deliveries")
    assert await eventually(lambda: _empty(js, subjects.dispatch_stream))  # deleted from the work queue
    assert await eventually(lambda: _empty(js, subjects.advisories_stream))  # the advisory was handled


async def _empty(js, stream: str) -> bool:
    return (await js.stream_info(stream)).state.messages == 0


async def test_an_advisory_waits_for_a_router_and_a_job_without_id_keeps_its_id(make_settings):
    settings = make_settings(ack_wait_s=1.0, max_deliver=2)
    async with Router(settings) as r:  # creates the streams and the router's consumers
        js, subjects = r.js, r.subjects
    nc = await bus.connect(settings, name="test")
    js = nc.jetstream()
    try:
        await js.publish(subjects.submit, b'{"prompt": "no id anywhere", "metadata": {"m": 2}}')
        crashing = await js.pull_subscribe_bind("router-jobs", subjects.jobs_stream)
        # no router runs: the advisory is kept in its stream until one does
        seen = await crash_on_every_message(crashing, lambda: _count(js, subjects.advisories_stream, 1))
        meta = seen[-1].metadata
        expected = job_id_for(seen[-1].data, None, stream_key(meta.stream, meta.sequence.stream, meta.timestamp))
        async with Router(settings) as r:
            task = asyncio.create_task(r.run())
            result = await eventually(lambda: stored(js, subjects, expected))
            await r.stop()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await nc.close()
    assert result.error.code == "max_deliveries" and result.metadata == {"m": 2}


async def _count(js, stream: str, n: int) -> bool:
    try:
        return (await js.stream_info(stream)).state.messages >= n
    except Exception:
        return False


async def test_an_undecodable_internal_message_is_dead_lettered_not_dropped(router):
    js, subjects = router.js, router.subjects
    await js.publish(subjects.escalate("openai"), b"\x00 not a dispatch")
    dead = await eventually(
        lambda: _last(js, subjects.deadletter_stream, subjects.deadletter(subjects.escalate_stream))
    )
    assert dead.data == b"\x00 not a dispatch" and dead.headers["Fleet-Dead-Reason"].startswith("undecodable")
    assert await eventually(lambda: _empty(js, subjects.escalate_stream))


async def _last(js, stream: str, subject: str):
    try:
        return await js.get_last_msg(stream, subject)
    except Exception:  # not there yet
        return None


async def test_a_redelivered_job_that_already_has_a_result_is_only_acked(router):
    js, subjects = router.js, router.subjects
    done = Result(job_id="done-1", success=True, content="earlier answer", model="openai")
    await publish_result(router.nc, js, subjects, done, None)
    await js.publish(subjects.submit, json.dumps({"id": "done-1", "prompt": "again"}).encode())
    await eventually(lambda: _consumer_idle(js, subjects.jobs_stream, "router-jobs"))
    assert (await js.stream_info(subjects.dispatch_stream)).state.messages == 0
    assert (await js.stream_info(subjects.results_stream)).state.last_seq == 1
    assert (await stored(js, subjects, "done-1")) == done


async def _consumer_idle(js, stream: str, durable: str) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


async def test_the_pull_watchdog_recreates_a_deleted_consumer(make_settings, subjects):
    settings = make_settings()
    nc = await bus.connect(settings, name="test")
    js = nc.jetstream()
    await bus.ensure_streams(js, subjects, settings)
    source = await bus.ensure_pull_consumer(
        js,
        stream=subjects.escalate_stream,
        durable="watched",
        filter_subject=subjects.escalate_all,
        ack_wait_s=5.0,
        max_deliver=3,
        max_ack_pending=10,
        stall_check_s=0.2,
    )
    handled = asyncio.Queue()

    async def handler(msg):
        await handled.put(msg.data)
        return DONE  # the loop acks it

    loop = PullLoop(source, handler, name="watched", concurrency=4, fetch_timeout_s=0.2)
    task = asyncio.create_task(loop.run())
    try:
        await js.publish(subjects.escalate("openai"), b"before")
        assert await asyncio.wait_for(handled.get(), WAIT_S) == b"before"
        await eventually(lambda: _consumer_idle(js, subjects.escalate_stream, "watched"))  # acked before the deletion
        await js.delete_consumer(subjects.escalate_stream, "watched")  # an operator's mistake
        await js.publish(subjects.escalate("openai"), b"after")
        assert await asyncio.wait_for(handled.get(), WAIT_S) == b"after"
        assert source.resets >= 1
    finally:
        await loop.stop(grace_s=1.0)
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()


async def test_stop_hands_unfinished_messages_back_at_once(make_settings, subjects):
    settings = make_settings()
    nc = await bus.connect(settings, name="test")
    js = nc.jetstream()
    await bus.ensure_streams(js, subjects, settings)
    config = dict(
        stream=subjects.escalate_stream,
        filter_subject=subjects.escalate_all,
        ack_wait_s=60.0,
        max_deliver=5,
        max_ack_pending=10,
    )
    started = asyncio.Event()

    async def stuck(msg):
        started.set()
        await asyncio.Event().wait()  # a call that does not finish within the grace time

    loop = PullLoop(
        await bus.ensure_pull_consumer(js, durable="handback", **config),
        stuck,
        name="handback",
        concurrency=2,
        fetch_timeout_s=0.2,
    )
    task = asyncio.create_task(loop.run())
    try:
        await js.publish(subjects.escalate("openai"), b"long job")
        await asyncio.wait_for(started.wait(), WAIT_S)
        await loop.stop(grace_s=0.1)
        await asyncio.gather(task, return_exceptions=True)
        again = await bus.ensure_pull_consumer(js, durable="handback", **config)
        msgs = await again.fetch(1, timeout=5.0)  # long before the 60 s ack_wait
        assert msgs and msgs[0].metadata.num_delivered == 2
    finally:
        await nc.close()


async def test_jobs_of_a_provider_without_live_workers_go_elsewhere(tmp_path, database_url, prefix):
    env = {"FLEET_NO_WORKER_ESCALATE_S": "0.5"}
    async with ChaosFleet(tmp_path, database_url, prefix=prefix, env=env, without={"worker-anthropic"}) as fleet:
        orphans = fleet.services["router"].orphans
        payload = {"prompt": "Analyze microservices", "task_type": "reasoning", "complexity": 8}
        first = await _request(fleet, {**payload, "id": "orphan-1"})
        assert first.success and first.model == "gemini"
        assert [(a.model, a.error.code if a.error else None) for a in first.attempts] == [
            ("claude", "no_worker"),
            ("gemini", None),
        ]
        assert orphans.escalated == 1
        second = await _request(fleet, {**payload, "id": "orphan-2"})
        assert second.model == "gemini" and "claude unavailable" in second.reasoning  # not waited for again
        await fleet.start("worker-anthropic")
        await eventually(_async(lambda: not orphans.workerless))
        # claude is chosen again (a model back from an outage may first ramp up its share)
        served = []
        await eventually(lambda: _served_by(fleet, {**payload, "id": f"orphan-back-{len(served)}"}, served))
        assert served[-1].model == "claude" and len(served[-1].attempts) == 1 and orphans.escalated == 1


async def _served_by(fleet, payload: dict, served: list) -> bool:
    served.append(await _request(fleet, payload))
    return served[-1].model == "claude"


def _async(check):
    async def wrapped():
        return check()

    return wrapped


async def _request(fleet, payload: dict) -> Result:
    msg = await fleet.nc.request(fleet.subjects.request, json.dumps(payload).encode(), timeout=WAIT_S)
    return result_decoder.decode(msg.data)


async def test_sigterm_lets_a_worker_finish_its_calls_and_exit_0(tmp_path, database_url, prefix):
    async with ChaosFleet(tmp_path, database_url, prefix=prefix, subprocesses={"worker-lmstudio"}) as fleet:
        ids = [f"term-{i}" for i in range(6)]
        for job_id in ids:
            payload = {"id": job_id, "prompt": "[emulate:lmstudio:latency_ms=1000] slow", "complexity": 1}
            await fleet.js.publish(fleet.subjects.submit, json.dumps(payload).encode())
        consumer = (fleet.subjects.dispatch_stream, "worker-lmstudio")
        await eventually(lambda: _in_flight(fleet.js, *consumer, len(ids)))
        proc = fleet.procs["worker-lmstudio"]
        await fleet.stop("worker-lmstudio")  # SIGTERM, then wait for the exit
        assert proc.returncode == 0, fleet.log_text()[-2000:]
        # no worker runs now: whatever was in flight was finished, not dropped
        results = [await stored(fleet.js, fleet.subjects, j) for j in ids]
    assert all(r is not None and r.success and len(r.attempts) == 1 for r in results), results


async def _in_flight(js, stream: str, durable: str, n: int) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.num_ack_pending >= n


class _BeatingMsg:
    """A message whose in_progress() calls are counted; the first one fails."""

    def __init__(self) -> None:
        self.beats = 0
        self.third = asyncio.Event()

    async def in_progress(self) -> None:
        self.beats += 1
        if self.beats == 3:
            self.third.set()
        if self.beats == 1:
            raise ConnectionError("a failed beat must not end the keep-alive")


async def test_keep_alive_beats_while_the_step_runs():
    msg = _BeatingMsg()
    async with keep_alive(msg, every_s=0.001):
        await asyncio.wait_for(msg.third.wait(), timeout=WAIT_S)
    assert msg.beats >= 3
