"""The one settle policy (fleet_shared.loop), without a server: each outcome becomes the
right ack / nak(delay) / term / dead-letter call on a message stub, and the PullLoop
settles what its handler returns, naks what it raises and hands back what it cancels."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError

from fleet_shared.loop import PullLoop, Settler
from fleet_shared.outcome import (
    DONE,
    HAND_BACK,
    MIN_WAIT_S,
    DeadLetter,
    DeadLetterStored,
    Drop,
    Requeue,
    Retry,
    Wait,
)
from fleet_shared.publish import DEAD_REASON_HEADER, DEAD_SEQ_HEADER, DEAD_SUBJECT_HEADER, MSG_ID_HEADER
from fleet_shared.subjects import Subjects
from tests.stubs import FakeJetStream, StubMsg

pytestmark = pytest.mark.anyio
SUBJECTS = Subjects("t")
WAIT_S = 10.0


def settler(js: FakeJetStream | None = None) -> Settler:
    return Settler(js or FakeJetStream(), SUBJECTS, name="test")


async def test_done_acks():
    msg = StubMsg(b"x")
    await settler().settle(msg, DONE)
    assert msg.settled == [("ack",)]


async def test_wait_naks_with_its_delay_and_never_less_than_the_minimum():
    long_wait, short_wait = StubMsg(b"x"), StubMsg(b"y")
    await settler().settle(long_wait, Wait(2.5, why="cooling"))
    await settler().settle(short_wait, Wait(0.001))
    assert long_wait.settled == [("nak", 2.5)]
    assert short_wait.settled == [("nak", MIN_WAIT_S)]


async def test_retry_naks_with_its_delay_or_a_backoff_that_grows_with_the_deliveries():
    given, first, fifth = StubMsg(b"x"), StubMsg(b"y", num_delivered=1), StubMsg(b"z", num_delivered=5)
    await settler().settle(given, Retry(3.0, why="NATS away"))
    await settler().settle(first, Retry())
    await settler().settle(fifth, Retry())
    assert given.settled == [("nak", 3.0)]
    assert first.settled[0][0] == "nak" and 0 <= first.settled[0][1] <= 0.5  # base 0.5 s, full jitter
    assert fifth.settled[0][0] == "nak" and 0 <= fifth.settled[0][1] <= 8.0  # 0.5 * 2**4


async def test_hand_back_naks_at_once():
    msg = StubMsg(b"x")
    await settler().settle(msg, HAND_BACK)
    assert msg.settled == [("nak", 0.0)]


async def test_requeue_publishes_a_fresh_copy_then_acks():
    js = FakeJetStream()
    msg = StubMsg(b"the job", subject="t.dispatch.openai", num_delivered=4)
    await settler(js).settle(msg, Requeue("wait:j:1:7"))
    assert [(p.subject, p.data, p.headers) for p in js.published] == [
        ("t.dispatch.openai", b"the job", {MSG_ID_HEADER: "wait:j:1:7"})
    ]
    assert msg.settled == [("ack",)]


async def test_dead_letter_copies_the_message_with_why_and_where_then_terms():
    js = FakeJetStream()
    msg = StubMsg(
        b"junk", subject="t.escalate.openai", stream="ESCALATE", seq=42, headers={"k": "v", MSG_ID_HEADER: "x"}
    )
    await settler(js).settle(msg, DeadLetter("undecodable: bad"))
    (copy,) = js.published
    assert copy.subject == SUBJECTS.deadletter("ESCALATE") and copy.data == b"junk"
    assert copy.headers == {
        "k": "v",  # the original's own headers are kept, its Nats-* ones are not
        DEAD_REASON_HEADER: "undecodable: bad",
        DEAD_SUBJECT_HEADER: "t.escalate.openai",
        DEAD_SEQ_HEADER: "42",
        MSG_ID_HEADER: "dead:ESCALATE:42",
    }
    assert msg.settled == [("term",)]


async def test_dead_letter_stored_copies_and_deletes_the_original_then_acks_the_advisory():
    js = FakeJetStream()
    js.stored[("JOBS", 7)] = object()  # what delete_msg removes
    advisory = StubMsg(b"{advisory}", subject="$JS.EVENT.ADVISORY", stream="ADVISORIES")
    given_up = DeadLetterStored(stream="JOBS", seq=7, subject="t.submit", data=b"job", headers=None, reason="max")
    await settler(js).settle(advisory, given_up)
    (copy,) = js.published
    assert copy.subject == SUBJECTS.deadletter("JOBS") and copy.data == b"job"
    assert copy.headers[DEAD_REASON_HEADER] == "max" and copy.headers[DEAD_SEQ_HEADER] == "7"
    assert js.deleted == [("JOBS", 7)]
    assert advisory.settled == [("ack",)]


async def test_dead_letter_stored_already_deleted_by_another_router_still_acks():
    js = FakeJetStream()  # nothing stored: delete_msg answers not found
    advisory = StubMsg(b"{advisory}")
    await settler(js).settle(advisory, DeadLetterStored(stream="JOBS", seq=7, subject="s", data=b"", reason="max"))
    assert len(js.published) == 1 and advisory.settled == [("ack",)]


async def test_drop_terms_without_a_copy():
    js = FakeJetStream()
    msg = StubMsg(b"not an advisory")
    await settler(js).settle(msg, Drop("undecodable advisory"))
    assert msg.settled == [("term",)] and js.published == []


async def test_a_dead_letter_that_cannot_be_stored_is_redelivered_not_terminated():
    js = FakeJetStream(fail_on={SUBJECTS.deadletter("JOBS"): ConnectionClosedError()})
    msg = StubMsg(b"junk", num_delivered=2)
    await Settler(js, SUBJECTS, name="test").settle(msg, DeadLetter("bad"))
    assert msg.settled[0][0] == "nak" and msg.settled[0][1] <= 1.0  # backoff of delivery 2


async def test_a_settler_without_jetstream_redelivers_what_it_cannot_dead_letter():
    msg = StubMsg(b"junk")
    await Settler(None, None, name="test").settle(msg, DeadLetter("bad"))
    assert msg.settled[0][0] == "nak"


# -- the loop ---------------------------------------------------------------------------


class ListSource:
    """A pull source that hands out the given messages once, then waits and times out."""

    def __init__(self, msgs: list[StubMsg]) -> None:
        self.msgs = list(msgs)
        self.unsubscribed = False
        self.batches: list[int] = []

    async def fetch(self, batch: int, timeout: float):
        self.batches.append(batch)
        if not self.msgs:  # like a server with nothing to deliver: wait out the timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), timeout)
            raise NatsTimeoutError
        taken, self.msgs = self.msgs[:batch], self.msgs[batch:]
        return taken

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


async def test_the_loop_settles_each_outcome_and_naks_what_the_handler_raises():
    done, wait, broken, dead = (
        StubMsg(name.encode(), seq=i) for i, name in enumerate(["done", "wait", "broken", "dead"])
    )
    outcomes = {b"done": DONE, b"wait": Wait(1.0), b"dead": DeadLetter("bad")}

    async def handler(msg):
        if msg.data == b"broken":
            raise RuntimeError("a bug")
        return outcomes[msg.data]

    js = FakeJetStream()
    source = ListSource([done, wait, broken, dead])
    loop = PullLoop(source, handler, name="test", concurrency=2, fetch_timeout_s=0.01, settler=settler(js))
    task = asyncio.create_task(loop.run())
    try:
        for msg in (done, wait, broken, dead):
            await asyncio.wait_for(msg.done.wait(), WAIT_S)
    finally:
        await loop.stop(grace_s=1.0)
        await task
    assert done.settled == [("ack",)] and wait.settled == [("nak", 1.0)] and dead.settled == [("term",)]
    assert broken.settled[0][0] == "nak" and 0 <= broken.settled[0][1] <= 0.5  # backoff of delivery 1
    assert len(js.on(SUBJECTS.deadletter("JOBS"))) == 1
    assert source.unsubscribed
    assert max(source.batches) <= 2  # never fetches more than it can start


async def test_stop_hands_back_what_the_handler_did_not_finish():
    stuck = StubMsg(b"slow")
    started = asyncio.Event()

    async def handler(msg):
        started.set()
        await asyncio.Event().wait()  # never finishes within the grace time

    loop = PullLoop(ListSource([stuck]), handler, name="test", concurrency=1, fetch_timeout_s=0.01)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(started.wait(), WAIT_S)
    await loop.stop(grace_s=0.01)
    await task
    assert stuck.settled == [("nak", 0.0)]  # handed back at once, not after ack_wait


@pytest.mark.parametrize(
    ("reply", "delivered", "pending"),
    [
        ("$JS.ACK.JOBS.router.3.41.40.1733500000123456789.7", 3, 7),  # no domain (v1)
        ("$JS.ACK.hub.ACCHASH.JOBS.router.2.41.40.1733500000123456789.5", 2, 5),  # a domain (v2)
        ("$JS.ACK.hub.ACCHASH.JOBS.router.4.41.40.1733500000123456789.0.rAnd0m", 4, 0),  # v2 with its token
    ],
)
def test_the_delivery_count_and_backlog_are_read_from_the_ack_subject_as_nats_py_reads_them(reply, delivered, pending):
    from nats.aio.msg import Msg

    from fleet_shared.delivery import num_delivered, stream_time
    from fleet_shared.pull import num_pending

    msg = Msg(_client=None, subject="t.submit", reply=reply, data=b"")  # type: ignore[arg-type]
    assert (num_delivered(msg), num_pending(msg)) == (delivered, pending)
    fresh = Msg(_client=None, subject="t.submit", reply=reply, data=b"")  # type: ignore[arg-type]
    assert (fresh.metadata.num_delivered, fresh.metadata.num_pending) == (delivered, pending)
    # the router's stream time of a Result: the same instant (nats-py's datetime keeps microseconds)
    assert stream_time(msg) == pytest.approx(fresh.metadata.timestamp.timestamp(), abs=1e-6)


def test_a_message_that_is_no_jetstream_delivery_counts_as_delivered_once():
    from nats.aio.msg import Msg

    from fleet_shared.delivery import num_delivered
    from fleet_shared.pull import num_pending

    for reply in ("", "_INBOX.abc", "$JS.ACK.too.short", "$JS.ACK.JOBS.router.x.41.40.0.y"):
        msg = Msg(_client=None, subject="t.submit", reply=reply, data=b"")  # type: ignore[arg-type]
        assert (num_delivered(msg), num_pending(msg)) == (1, 0)
