"""The one message loop every fleet consumer runs: fetch -> bounded tasks -> settle.

The handler owns settling (ack / term) of the message it is given. Anything it raises is
our own transient fault (NATS, a bug): the message is nak'ed with capped, jittered backoff
so JetStream redelivers it, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Exponential backoff with full jitter, capped (attempt counts from 1)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


@contextlib.asynccontextmanager
async def keep_alive(msg: Msg, every_s: float):
    """Send in_progress() while a long step runs, so ack_wait does not redeliver it."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PullLoop:
    """Fetch from one pull subscription and run ``handler`` on up to ``concurrency`` messages."""

    def __init__(self, sub, handler: Handler, *, name: str, concurrency: int, fetch_timeout_s: float = 1.0) -> None:
        self.sub = sub
        self.handler = handler
        self.name = name
        self.fetch_timeout_s = fetch_timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            free = await self._wait_for_slots()
            msgs = await self._fetch(min(free, 256))
            for msg in msgs:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop fetching; give in-flight messages ``grace_s`` to finish (the rest are redelivered)."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()

    async def _wait_for_slots(self) -> int:
        # Fetch only what we can start now: what we fetch but cannot run would sit unacked.
        await self._slots.acquire()
        self._slots.release()
        return max(1, self._slots._value)  # noqa: SLF001 (asyncio exposes no public count)

    async def _fetch(self, batch: int) -> list[Msg]:
        try:
            return await self.sub.fetch(batch, timeout=self.fetch_timeout_s)
        except (NatsTimeoutError, asyncio.TimeoutError):
            return []
        except Exception as exc:  # connection loss, consumer deleted: keep the loop alive
            if self._stopping.is_set():
                return []
            log.warning("%s: fetch failed: %s", self.name, exc)
            await asyncio.sleep(backoff_s(1))
            return []

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.handler(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            delivered = _num_delivered(msg)
            log.exception("%s: handler failed (delivery %d); will redeliver", self.name, delivered)
            with contextlib.suppress(Exception):
                await msg.nak(delay=backoff_s(delivered))
        finally:
            self._slots.release()


def _num_delivered(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered
    except Exception:
        return 1
