"""Request-reply that sends at once and is awaited later (fleet_shared.requests), and the
publishes built on it (fleet_shared.publish), over a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from fleet_shared import bus, requests
from fleet_shared.publish import js_publish, js_publish_sent, publish_result, stored_result, stored_result_sent
from fleet_shared.schema import Result, encode, result_decoder

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_request_is_sent_before_its_reply_is_awaited(nats_url, prefix):
    nc = await nats.connect(nats_url)
    try:
        seen: list[bytes] = []

        async def echo(msg) -> None:
            seen.append(msg.data)
            await msg.respond(b"re:" + msg.data)

        await nc.subscribe(f"{prefix}.echo", cb=echo)
        replies = requests.for_connection(nc)
        assert requests.for_connection(nc) is replies  # one per connection
        first = await replies.send(f"{prefix}.echo", b"1", timeout=5)
        second = await replies.send(f"{prefix}.echo", b"2", timeout=5)
        assert [(await second).data, (await first).data] == [b"re:2", b"re:1"]
        assert seen == [b"1", b"2"]  # in the order sent
        assert replies._waiting == {}
    finally:
        await nc.close()


async def test_no_responders_and_a_timeout_fail_the_reply_and_are_forgotten(nats_url, prefix):
    nc = await nats.connect(nats_url)
    try:
        await nc.subscribe(f"{prefix}.silent")  # never answers
        replies = requests.for_connection(nc)
        with pytest.raises(NoRespondersError):
            await (await replies.send(f"{prefix}.nobody", b"", timeout=5))
        with pytest.raises(NatsTimeoutError):
            await (await replies.send(f"{prefix}.silent", b"", timeout=0.05))
        assert replies._waiting == {}
    finally:
        await nc.close()


async def test_replies_reach_their_requests_in_any_order(nats_url, prefix):
    nc = await nats.connect(nats_url)
    held: list[Msg] = []
    all_in = asyncio.Event()

    async def answer_in_reverse(msg: Msg) -> None:
        held.append(msg)
        if len(held) == 20:
            all_in.set()

    try:
        await nc.subscribe(f"{prefix}.echo", cb=answer_in_reverse)
        replies = requests.for_connection(nc)
        asks = [asyncio.ensure_future(replies.request(f"{prefix}.echo", b"%d" % i, timeout=10)) for i in range(20)]
        await all_in.wait()
        for msg in reversed(held):
            await nc.publish(msg.reply, b"re:" + msg.data)
        assert [m.data for m in await asyncio.gather(*asks)] == [b"re:%d" % i for i in range(20)]
        assert replies.waiting == 0
    finally:
        await nc.close()


async def test_a_timeout_or_a_cancel_leaves_nothing_waiting_and_a_late_reply_is_dropped(nats_url, prefix):
    nc = await nats.connect(nats_url)
    received: list[Msg] = []
    arrived = asyncio.Event()

    async def never_answer(msg: Msg) -> None:
        received.append(msg)
        arrived.set()

    async def echo(msg: Msg) -> None:
        await nc.publish(msg.reply, b"re:" + msg.data)

    try:
        await nc.subscribe(f"{prefix}.silent", cb=never_answer)
        await nc.subscribe(f"{prefix}.echo", cb=echo)
        replies = requests.for_connection(nc)
        with pytest.raises(TimeoutError):
            await replies.request(f"{prefix}.silent", b"x", timeout=0.05)
        assert replies.waiting == 0
        arrived.clear()
        cancelled = asyncio.ensure_future(replies.request(f"{prefix}.silent", b"y", timeout=10))
        await arrived.wait()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert replies.waiting == 0
        for msg in received:  # the answers come after all: nobody waits for them any more
            await nc.publish(msg.reply, b"late")
        # replies on one connection arrive in order: the late ones first, and they go nowhere
        assert (await replies.request(f"{prefix}.echo", b"z", timeout=10)).data == b"re:z"
        assert replies.waiting == 0
    finally:
        await nc.close()


async def test_no_responder_is_an_error_not_a_timeout(nats_url, prefix):
    nc = await nats.connect(nats_url)
    try:
        replies = requests.for_connection(nc)
        with pytest.raises(NoRespondersError):
            await replies.request(f"{prefix}.nobody", b"x", timeout=10)
        assert replies.waiting == 0
    finally:
        await nc.close()


async def test_stored_publishes_and_the_result_look_up(make_settings, subjects):
    settings = make_settings()
    nc = await bus.connect(settings, name="test")
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects, settings)
        assert await stored_result(js, subjects, "r1") is None
        pending = await stored_result_sent(js, subjects, "r1")  # sent, not read yet
        assert await pending is None
        acked = await js_publish_sent(js, subjects.result("r1"), b'{"job_id":"r1"}', msg_id="result:r1")
        assert not (await acked).duplicate
        again = await js_publish(js, subjects.result("r1"), b'{"job_id":"r1"}', msg_id="result:r1")
        assert again.duplicate
        assert await stored_result(js, subjects, "r1") == b'{"job_id":"r1"}'
    finally:
        await nc.close()


async def test_a_result_is_stored_and_its_requester_answered_with_it(make_settings, subjects):
    settings = make_settings()
    nc = await bus.connect(settings, name="test")
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, subjects, settings)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        result = Result(job_id="r2", success=True, content="answer")
        assert await publish_result(nc, js, subjects, result, inbox)
        assert (await sub.next_msg(timeout=5)).data == encode(result)
        # the ack was awaited before publish_result returned: the Result is there
        assert result_decoder.decode(await stored_result(js, subjects, "r2")) == result
    finally:
        await nc.close()
