"""A durable pull subscription that repairs itself: the pull-consumer watchdog.

A pull subscription can stop delivering without an error: nats-py has an open issue where
one goes silent after a server restart (nats-io/nats.py#504), a pull request the server
held is not re-sent after a reconnect, and a consumer can vanish (deleted by an operator,
a server that lost its store). ``PullSource`` wraps one durable consumer and re-creates
the consumer (same config) and a fresh subscription when

* ``ERRORS_BEFORE_RESET`` fetches in a row failed (a deleted consumer answers 503), or
* no message came for ``stall_check_s`` and the server says one should have: messages
  are waiting (``num_pending``) while ack-pending is below ``max_ack_pending``, twice in
  a row; or the consumer is gone.

``fetch`` returns as soon as one message is there, plus the backlog the server already
holds, rather than waiting out the timeout for a full batch (what nats-py's
``fetch(n)`` does once the queue is empty), so a lone job is never held back by batching.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from fleet_shared.delivery import V1_PENDING, V2_PENDING, ack_subject_field

log = logging.getLogger(__name__)

#: Failed fetches in a row before the subscription is re-created.
ERRORS_BEFORE_RESET = 3
#: Longest wait for the backlog a first message announced (it is normally there at once).
FOLLOW_UP_TIMEOUT_S = 0.2
#: Stall checks in a row that must find deliverable messages before a reset.
STALLS_BEFORE_RESET = 2


class PullSource:
    """One durable pull consumer, created (or updated) from ``config`` and kept working.

    Parameters:
        js: the JetStream context.
        stream: the consumer's stream.
        config: the consumer's config (``durable_name`` is required).
        stall_check_s: idle time after which the server is asked whether we are stuck.
    """

    def __init__(
        self, js: JetStreamContext, *, stream: str, config: api.ConsumerConfig, stall_check_s: float = 10.0
    ) -> None:
        if not config.durable_name:
            raise ValueError("PullSource needs a durable consumer")
        self.js = js
        self.stream = stream
        self.config = config
        self.durable = config.durable_name
        self.stall_check_s = stall_check_s
        #: how often the subscription was re-created (for logs, metrics and tests)
        self.resets = 0
        self._sub: JetStreamContext.PullSubscription | None = None
        self._errors = 0
        self._stalls = 0
        self._quiet_since = time.monotonic()

    async def open(self) -> PullSource:
        """Create or update the consumer and subscribe. Raises what JetStream raises."""
        await self._subscribe()
        return self

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages; [] when none came within ``timeout``.

        Raises:
            nats.errors.Error, nats.js.errors.Error: the fetch failed (the caller backs off;
                the subscription is re-created after repeated failures).
        """
        sub = self._sub
        if sub is None:
            sub = await self._reset("no subscription")
        try:
            msgs = await sub.fetch(1, timeout=timeout)
        except (TimeoutError, NatsTimeoutError):
            await self._idle()
            return []
        except Exception as exc:
            await self._failed(exc)
            raise
        self._errors = self._stalls = 0
        self._quiet_since = time.monotonic()
        backlog = num_pending(msgs[-1])
        if batch > 1 and backlog > 0:
            msgs += await self._more(sub, min(batch - 1, backlog))
        return msgs

    async def consumer_info(self) -> api.ConsumerInfo:
        info: api.ConsumerInfo = await self.js.consumer_info(self.stream, self.durable)  # unannotated in nats-py
        return info

    async def unsubscribe(self) -> None:
        """Drop the subscription, handing back (nak) what was delivered but never fetched."""
        sub, self._sub = self._sub, None
        if sub is None:
            return
        # nats-py internals, read defensively (None when they move): a PullSubscription has no
        # public way to take out what it buffered without sending a new pull request (fetch),
        # and its public pending_msgs only counts them.
        queue = getattr(getattr(sub, "_sub", None), "_pending_queue", None)
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and msg.reply.startswith("$JS.ACK."):  # not a status message
                with contextlib.suppress(Exception):
                    await msg.nak()
        await sub.unsubscribe()

    # -- the watchdog ---------------------------------------------------------------

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        await self.js.add_consumer(self.stream, config=self.config)
        sub = self._sub = await self.js.pull_subscribe_bind(self.durable, self.stream)
        _take_queued_at_once(sub)
        self._errors = self._stalls = 0
        self._quiet_since = time.monotonic()
        return sub

    async def _more(self, sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
        try:
            return await sub.fetch(batch, timeout=FOLLOW_UP_TIMEOUT_S)
        except (TimeoutError, NatsTimeoutError):
            return []  # another process took them first

    async def _failed(self, exc: Exception) -> None:
        self._errors += 1
        if self._errors >= ERRORS_BEFORE_RESET:
            await self._reset(f"{self._errors} failed fetches, the last: {exc!r}")

    async def _idle(self) -> None:
        if time.monotonic() - self._quiet_since < self.stall_check_s:
            return
        self._quiet_since = time.monotonic()
        try:
            info = await self.consumer_info()
        except NotFoundError:
            await self._reset("the consumer is gone")
            return
        except Exception as exc:  # NATS down: the fetch errors will tell
            log.info("%s: stall check failed: %s", self.durable, exc)
            return
        limit = info.config.max_ack_pending or 0
        deliverable = (info.num_pending or 0) > 0 and (limit <= 0 or (info.num_ack_pending or 0) < limit)
        self._stalls = self._stalls + 1 if deliverable else 0
        if self._stalls >= STALLS_BEFORE_RESET:
            await self._reset(f"{info.num_pending} messages wait but none is delivered")

    async def _reset(self, why: str) -> JetStreamContext.PullSubscription:
        self.resets += 1
        log.warning("%s: re-creating the pull subscription (%s)", self.durable, why)
        with contextlib.suppress(Exception):
            await self.unsubscribe()
        try:
            return await self._subscribe()
        except Exception:
            self._errors = 0  # count afresh; the next fetch tries again
            raise


def _take_queued_at_once(sub: JetStreamContext.PullSubscription) -> None:
    """Let the subscription hand over a message it already holds without nats-py's
    per-call machinery (a uuid4, a task and a wait_for for every message a fetch reads,
    even when the message is waiting in the queue): a visible share of each consumer's
    CPU per message. A call that must wait goes to nats-py's own ``next_msg`` unchanged.

    nats-py internals, read defensively like ``unsubscribe`` does: when they move, nothing
    is replaced.
    """
    inner: Any = getattr(sub, "_sub", None)
    queue = getattr(inner, "_pending_queue", None)
    original = getattr(inner, "next_msg", None)
    conn = getattr(inner, "_conn", None)
    if queue is None or original is None or conn is None or not hasattr(inner, "_pending_size"):
        return

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if queue.empty() or conn.is_closed:
            waited: Msg = await original(timeout)
            return waited
        msg: Msg = queue.get_nowait()
        inner._pending_size -= len(msg.data)  # what nats-py's next_msg does with a message
        queue.task_done()
        return msg

    with contextlib.suppress(AttributeError):  # a class with __slots__ would refuse it
        inner.next_msg = next_msg


def num_pending(msg: Msg) -> int:
    """Messages the server still holds for this consumer after ``msg`` (0 when unknown)."""
    found = ack_subject_field(msg, V1_PENDING, V2_PENDING)
    if found is not None:
        return found
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:  # not a JetStream message
        return 0
