"""The one message loop every fleet consumer runs: fetch -> bounded tasks -> handle -> settle.

A handler returns an ``Outcome`` (``fleet_shared.outcome``) and the ``Settler`` applies it:
this module is the only place a fleet message is acked, nak'ed, terminated or
dead-lettered. Anything a handler raises is our own transient fault (NATS, a bug): it is
logged with its traceback and the message is nak'ed with capped, jittered backoff, so
JetStream redelivers it and the loop goes on. A message that keeps failing reaches
max_deliver and is dead-lettered by the router (see ``fleet_router.deadletter``).

``stop`` is the graceful half of SIGTERM: no new fetches, in-flight handlers get
``grace_s`` to finish (and be settled), the rest are cancelled and their messages handed
back with ``nak()`` so another process takes them at once instead of after ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, assert_never

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from fleet_shared.delivery import num_delivered
from fleet_shared.metrics import FleetMetrics
from fleet_shared.outcome import (
    HAND_BACK,
    MIN_WAIT_S,
    DeadLetter,
    DeadLetterStored,
    Done,
    Drop,
    Outcome,
    Requeue,
    Retry,
    Wait,
)
from fleet_shared.publish import dead_letter, js_publish
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[Outcome]]

#: Messages asked for in one fetch at most.
MAX_BATCH = 256


class Source(Protocol):
    """What a loop pulls from: a ``fleet_shared.pull.PullSource`` or a nats-py pull subscription."""

    async def fetch(self, batch: int, timeout: float) -> list[Msg]: ...

    async def unsubscribe(self) -> None: ...


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Exponential backoff with full jitter, capped (attempt counts from 1)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


class keep_alive:  # a function to its callers: ``async with keep_alive(msg, every_s):``
    """Send in_progress() while a long step runs, so ack_wait does not redeliver it.

    A timer, not a task: most steps end long before the first beat, and a timer handle
    costs a fraction of a task created and cancelled per message (measured in the worker's
    profile at thousands of jobs a second). A class rather than a generator-based context
    manager for the same reason (a generator, its frame and a closure per message).
    """

    __slots__ = ("_beats", "_every_s", "_handle", "_loop", "_msg")

    def __init__(self, msg: Msg, every_s: float, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the running loop when the caller holds it (on Python 3.11 each
        ``asyncio.get_running_loop()`` is a ``getpid`` system call)."""
        self._msg = msg
        self._every_s = every_s
        self._loop = loop
        self._beats: set[asyncio.Task[None]] | None = None
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._handle = loop.call_later(self._every_s, self._beat)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
        for task in list(self._beats or ()):
            task.cancel()

    def _beat(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        if self._beats is None:
            self._beats = set()
        task = loop.create_task(_in_progress(self._msg))
        self._beats.add(task)
        task.add_done_callback(self._beats.discard)
        self._handle = loop.call_later(self._every_s, self._beat)


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()


class Settler:
    """Applies an ``Outcome`` to its message: ack, nak (delay), term, dead letter, copy.

    Parameters:
        js: where dead letters and fresh copies go; None for a loop whose handler never
            returns ``DeadLetter``, ``DeadLetterStored`` or ``Requeue`` (they then fail:
            the message is redelivered).
        subjects: the fleet's names (the dead-letter subjects).
        name: for logs.
    """

    def __init__(self, js: JetStreamContext | None, subjects: Subjects | None, *, name: str) -> None:
        self.js = js
        self.subjects = subjects
        self.name = name

    async def settle(self, msg: Msg, outcome: Outcome) -> None:
        """Log what the outcome means (retry info, giving up warning), then apply it."""
        match outcome:
            case Retry(why=why):
                log.info("%s: %s #%d retried (%s)", self.name, msg.subject, _seq(msg), why or "no reason given")
            case DeadLetter(reason=reason):
                log.warning("%s: %s #%d dead-lettered: %s", self.name, msg.subject, _seq(msg), reason)
            case DeadLetterStored(stream=stream, seq=seq, reason=reason):
                log.warning("%s: %s #%d given up and dead-lettered: %s", self.name, stream, seq, reason)
            case Drop(reason=reason):
                log.warning("%s: %s #%d terminated: %s", self.name, msg.subject, _seq(msg), reason)
        await self.apply(msg, outcome)

    async def apply(self, msg: Msg, outcome: Outcome) -> None:
        """Apply ``outcome`` without logging it. Never raises: a message that could not be
        settled is nak'ed with backoff (if even that fails, JetStream redelivers it after
        ack_wait)."""
        try:
            await self._apply(msg, outcome)
        except Exception as exc:
            delay = backoff_s(num_delivered(msg))
            log.warning(
                "%s: could not settle %s (%s): %s; redelivered in %.1fs",
                self.name,
                msg.subject,
                type(outcome).__name__,
                exc,
                delay,
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)

    async def _apply(self, msg: Msg, outcome: Outcome) -> None:
        match outcome:
            case Done():
                await msg.ack()
            case Wait(delay_s=delay_s):
                await msg.nak(delay=max(MIN_WAIT_S, delay_s))
            case Retry(delay_s=delay_s):
                await msg.nak(delay=backoff_s(num_delivered(msg)) if delay_s is None else delay_s)
            case Requeue(msg_id=msg_id):
                await js_publish(self._js(), msg.subject, msg.data, msg_id=msg_id)
                await msg.ack()
            case DeadLetter(reason=reason):
                await self.dead_letter(msg, reason)
                await msg.term()
            case DeadLetterStored():
                await self._bury(outcome)
                await msg.ack()
            case Drop():
                await msg.term()
            case _:
                assert_never(outcome)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Copy ``msg`` to <p>.deadletter.<its stream>, with ``reason``."""
        meta = msg.metadata
        await dead_letter(
            self._js(),
            self._subjects(),
            stream=meta.stream,
            seq=meta.sequence.stream,
            subject=msg.subject,
            data=msg.data,
            headers=msg.headers,
            reason=reason,
        )

    async def _bury(self, stored: DeadLetterStored) -> None:
        js = self._js()
        await dead_letter(
            js,
            self._subjects(),
            stream=stored.stream,
            seq=stored.seq,
            subject=stored.subject,
            data=stored.data,
            headers=stored.headers,
            reason=stored.reason,
        )
        # past max_deliver it would stay in its work queue for ever
        with contextlib.suppress(NotFoundError):  # another router deleted it first
            await js.delete_msg(stored.stream, stored.seq)

    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise RuntimeError(f"{self.name}: no JetStream to publish dead letters or copies on")
        return self.js

    def _subjects(self) -> Subjects:
        if self.subjects is None:
            raise RuntimeError(f"{self.name}: no subjects to name the dead letters with")
        return self.subjects


def _seq(msg: Msg) -> int:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # not a JetStream message
        return 0


class PullLoop:
    """Fetch from one pull subscription, run ``handler`` on up to ``concurrency`` messages,
    settle each with its outcome.

    Parameters:
        sub: a ``fleet_shared.pull.PullSource`` (or anything with ``fetch(batch, timeout)``
            and ``unsubscribe()``, e.g. a nats-py pull subscription).
        handler: returns the outcome of each message it is given; never settles it.
        name: for logs.
        concurrency: handlers running at once; only that many messages are fetched.
        fetch_timeout_s: longest wait of one fetch; also how late ``stop`` is noticed.
        settler: applies the outcomes (default: one that cannot dead-letter).
        metrics: counts in-flight messages and redeliveries under ``name`` (None: not counted).
    """

    def __init__(
        self,
        sub: Source,
        handler: Handler,
        *,
        name: str,
        concurrency: int,
        fetch_timeout_s: float = 1.0,
        settler: Settler | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.sub = sub
        self.handler = handler
        self.name = name
        self.fetch_timeout_s = fetch_timeout_s
        self.settler = settler or Settler(None, None, name=name)
        self._slots = asyncio.Semaphore(concurrency)
        self._free = concurrency  # the semaphore's count, kept by us: asyncio has no public getter
        self._tasks: dict[asyncio.Task[None], int] = {}  # running tasks, each with its message's id()
        #: id() of the messages past their handler, being settled (their tasks are not cancelled)
        self._settling: set[int] = set()
        self._stopping = asyncio.Event()
        self._no_fetch = asyncio.Event()  # clear while a fetch (a pull request) is open
        self._no_fetch.set()
        self._errors = 0
        self.metrics = metrics
        if metrics is not None:
            metrics.set_concurrency(name, concurrency)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()  # once: on Python 3.11 each look-up is a getpid call
        while not self._stopping.is_set():
            free = await self._wait_for_slots()
            if self._stopping.is_set():
                break
            msgs = await self._fetch(min(free, MAX_BATCH))
            if self._stopping.is_set():
                for msg in msgs:  # fetched while stopping: hand them back
                    await self.settler.apply(msg, HAND_BACK)
                break
            for msg in msgs:
                await self._take_slot()
                task = loop.create_task(self._handle(msg))
                self._tasks[task] = id(msg)
                task.add_done_callback(self._forget)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop fetching; give in-flight messages ``grace_s`` to finish, hand back the rest."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        late = list(self._tasks)
        if late:
            # Let the last fetch end first: a message handed back while its pull request is
            # still open would be redelivered straight into it, then wait out ack_wait in an
            # abandoned inbox. (With nothing to hand back, a message that request still
            # catches is only late: it is redelivered after ack_wait.)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._no_fetch.wait(), self.fetch_timeout_s + 5.0)
        # a task already settling is let finish (as a shielded settle would), within grace_s
        cancelled = [task for task in late if self._tasks.get(task) not in self._settling]
        for task in cancelled:
            task.cancel()
        if cancelled:
            log.info("%s: handing back %d unfinished messages", self.name, len(cancelled))
        if late:
            await asyncio.wait(late, timeout=grace_s)
        # A pull subscription is never "done", so a connection drain would wait its full
        # timeout for it: unsubscribe instead (what was delivered but not fetched comes back).
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()

    async def _wait_for_slots(self) -> int:
        # Fetch only what we can start now: what we fetch but cannot run would sit unacked.
        await self._slots.acquire()
        self._slots.release()
        return max(1, self._free)

    async def _take_slot(self) -> None:
        await self._slots.acquire()
        self._free -= 1

    def _free_slot(self) -> None:
        self._free += 1
        self._slots.release()

    async def _fetch(self, batch: int) -> list[Msg]:
        try:
            return await self._fetch_once(batch)
        except Exception as exc:  # connection loss, consumer deleted: keep the loop alive
            if self._stopping.is_set():
                return []
            self._errors += 1
            log.warning("%s: fetch failed (%d in a row): %s", self.name, self._errors, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff_s(self._errors, cap_s=5.0))
            return []

    async def _fetch_once(self, batch: int) -> list[Msg]:
        self._no_fetch.clear()
        try:
            msgs = await self.sub.fetch(batch, timeout=self.fetch_timeout_s)
        except (TimeoutError, NatsTimeoutError):
            return []
        finally:
            self._no_fetch.set()
        self._errors = 0
        return msgs

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _handle(self, msg: Msg) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.record_delivery(self.name, num_delivered(msg))
            metrics.handling(self.name)
        try:
            outcome = await self._outcome_of(msg)
            if outcome is not None:
                # A cancel (stop) must not fall between a publish and its ack: ``stop``
                # never cancels the task of a message in this set. (Cheaper than
                # asyncio.shield, which costs a task per message; keyed by the message, known
                # here, rather than by asyncio.current_task(), a getpid call on Python 3.11.)
                settling = id(msg)
                self._settling.add(settling)
                try:
                    await self.settler.settle(msg, outcome)
                finally:
                    self._settling.discard(settling)
        finally:
            self._free_slot()
            if metrics is not None:
                metrics.handled(self.name)

    async def _outcome_of(self, msg: Msg) -> Outcome | None:
        """The handler's outcome; None when the message was already settled here."""
        try:
            return await self.handler(msg)
        except asyncio.CancelledError:
            await asyncio.shield(self.settler.apply(msg, HAND_BACK))  # stopping: someone else takes it now
            raise
        except Exception as exc:
            delivered = num_delivered(msg)
            log.exception("%s: handler failed (delivery %d); will redeliver", self.name, delivered)
            await asyncio.shield(self.settler.apply(msg, Retry(backoff_s(delivered), why=repr(exc))))
            return None
