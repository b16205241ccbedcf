"""The gateway's request-reply (``fleet_gateway.replies``) on a real nats-server: each reply
reaches its own request whatever the order, a timeout or a cancelled request leaves nothing
behind, a late reply is dropped, no responder is an error; and ``FleetLink.answer`` turns
"no router" into the 503 a client retries."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from fleet_gateway.errors import ApiError
from fleet_gateway.fleet import FleetLink
from fleet_gateway.replies import Replies
from fleet_shared.schema import Job

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


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
        replies = Replies(nc)
        await replies.start()
        asks = [asyncio.ensure_future(replies.request(f"{prefix}.echo", b"%d" % i, 10)) for i in range(20)]
        await all_in.wait()
        for msg in reversed(held):
            await nc.publish(msg.reply, b"re:" + msg.data)
        assert await asyncio.gather(*asks) == [b"re:%d" % i for i in range(20)]
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
        replies = Replies(nc)
        await replies.start()
        with pytest.raises(TimeoutError):
            await replies.request(f"{prefix}.silent", b"x", 0.05)
        assert replies.waiting == 0
        arrived.clear()
        cancelled = asyncio.ensure_future(replies.request(f"{prefix}.silent", b"y", 10))
        await arrived.wait()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert replies.waiting == 0
        for msg in received:  # the answers come after all: nobody waits for them any more
            await nc.publish(msg.reply, b"late")
        # replies on one connection arrive in order: the late ones first, and they go nowhere
        assert await replies.request(f"{prefix}.echo", b"z", 10) == b"re:z"
        assert replies.waiting == 0
    finally:
        await nc.close()


async def test_no_responder_is_an_error_not_a_timeout(nats_url, prefix):
    nc = await nats.connect(nats_url)
    try:
        replies = Replies(nc)
        await replies.start()
        with pytest.raises(NoRespondersError):
            await replies.request(f"{prefix}.nobody", b"x", 10)
        assert replies.waiting == 0
    finally:
        await nc.close()


async def test_no_router_is_a_503_the_client_may_retry(make_settings):
    async with FleetLink(make_settings()) as fleet:
        with pytest.raises(ApiError) as raised:
            await fleet.answer(Job(prompt="hi", id="a" * 32), timeout_s=10)
    assert raised.value.status == 503 and raised.value.code == "no_router"
