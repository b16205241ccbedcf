"""The one message loop every fleet consumer runs: fetch -> bounded tasks -> settle.

The handler owns settling (ack / term) of the message it is given. Anything it raises is
our own transient fault (NATS, a bug): the message is nak'ed with capped, jittered backoff
so JetStream redelivers it, and the loop goes on. A message that keeps failing reaches
max_deliver and is dead-lettered by the router (see ``fleet_router.deadletter``).

``stop`` is the graceful half of SIGTERM: no new fetches, in-flight handlers get
``grace_s`` to finish (and ack), the rest are cancelled and their messages handed back
with ``nak()`` so another process takes them at once instead of after ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]

#: Messages asked for in one fetch at most.
MAX_BATCH = 256


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Exponential backoff with full jitter, capped (attempt counts from 1)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


@contextlib.asynccontextmanager
async def keep_alive(msg: Msg, every_s: float):
    """Send in_progress() while a long step runs, so ack_wait does not redeliver it.

    A timer, not a task: most steps end long before the first beat, and a timer handle
    costs a fraction of a task created and cancelled per message (measured in the worker's
    profile at thousands of jobs a second).
    """
    loop = asyncio.get_running_loop()
    beats: set[asyncio.Task] = set()

    def beat() -> None:
        nonlocal handle
        task = loop.create_task(_in_progress(msg))
        beats.add(task)
        task.add_done_callback(beats.discard)
        handle = loop.call_later(every_s, beat)

    handle = loop.call_later(every_s, beat)
    try:
        yield
    finally:
        handle.cancel()
        for task in list(beats):
            task.cancel()


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()


class PullLoop:
    """Fetch from one pull subscription and run ``handler`` on up to ``concurrency`` messages.

    Parameters:
        sub: a ``fleet_shared.pull.PullSource`` (or anything with ``fetch(batch, timeout)``
            and ``unsubscribe()``, e.g. a nats-py pull subscription).
        handler: settles each message it is given.
        name: for logs.
        concurrency: handlers running at once; only that many messages are fetched.
        fetch_timeout_s: longest wait of one fetch; also how late ``stop`` is noticed.
    """

    def __init__(self, sub, handler: Handler, *, name: str, concurrency: int, fetch_timeout_s: float = 1.0) -> None:
        self.sub = sub
        self.handler = handler
        self.name = name
        self.fetch_timeout_s = fetch_timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._run_done = asyncio.Event()  # clear while run() may be inside a fetch
        self._run_done.set()
        self._errors = 0

    async def run(self) -> None:
        self._run_done.clear()
        try:
            while not self._stopping.is_set():
                free = await self._wait_for_slots()
                msgs = await self._fetch(min(free, MAX_BATCH))
                if self._stopping.is_set():
                    await _settle_all(msgs, "nak")  # fetched while stopping: hand them back
                    break
                for msg in msgs:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            self._run_done.set()

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
                await asyncio.wait_for(self._run_done.wait(), self.fetch_timeout_s + 5.0)
        for task in late:
            task.cancel()
        if late:
            log.info("%s: handing back %d unfinished messages", self.name, len(late))
            await asyncio.gather(*late, return_exceptions=True)
        # A pull subscription is never "done", so a connection drain would wait its full
        # timeout for it: unsubscribe instead (what was delivered but not fetched comes back).
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()

    async def _wait_for_slots(self) -> int:
        # Fetch only what we can start now: what we fetch but cannot run would sit unacked.
        await self._slots.acquire()
        self._slots.release()
        return max(1, self._slots._value)

    async def _fetch(self, batch: int) -> list[Msg]:
        try:
            msgs = await self.sub.fetch(batch, timeout=self.fetch_timeout_s)
        except (TimeoutError, NatsTimeoutError):
            return []
        except Exception as exc:  # connection loss, consumer deleted: keep the loop alive
            if self._stopping.is_set():
                return []
            self._errors += 1
            log.warning("%s: fetch failed (%d in a row): %s", self.name, self._errors, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff_s(self._errors, cap_s=5.0))
            return []
        self._errors = 0
        return msgs

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())  # stopping: someone else takes it now
            raise
        except Exception:
            delivered = num_delivered(msg)
            log.exception("%s: handler failed (delivery %d); will redeliver", self.name, delivered)
            with contextlib.suppress(Exception):
                await msg.nak(delay=backoff_s(delivered))
        finally:
            self._slots.release()


async def _settle_all(msgs: list[Msg], how: str) -> None:
    for msg in msgs:
        with contextlib.suppress(Exception):
            await getattr(msg, how)()


def num_delivered(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered
    except Exception:
        return 1
