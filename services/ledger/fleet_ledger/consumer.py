"""One durable pull consumer's batch loop: fetch a batch -> decode -> write in one
transaction -> settle each message with its outcome (ack only after COMMIT) -> tell
listeners what was committed.

The handler (``handler.BatchHandler``) says what happens to each message; the shared
``Settler`` applies it, as for every fleet consumer: a message that does not decode, or
that PostgreSQL refuses, is copied to the dead-letter stream and terminated; a committed
one is acked.

What only a batch writer does, and so lives here: PostgreSQL unavailable (a transient
error, see ``errors``) keeps the batch in hand; it is written again after a capped,
jittered backoff, with ``in_progress()`` so JetStream neither redelivers it nor counts a
delivery against max_deliver. The loop waits with its batch until PostgreSQL returns, then
the backlog drains. On stop it hands the batch back (``nak``) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from fleet_ledger.errors import is_transient
from fleet_ledger.handler import BatchHandler, Pending, Written
from fleet_ledger.metrics import LedgerMetrics
from fleet_ledger.writer import Rows
from fleet_shared.delivery import num_delivered
from fleet_shared.loop import Settler, Source, backoff_s
from fleet_shared.outcome import HAND_BACK
from fleet_shared.pull import num_pending

log = logging.getLogger(__name__)

OnCommit = Callable[[str, list[Rows]], Awaitable[None]]

#: Pause after an unexpected loop error or a NATS failure, so a broken loop does not spin.
ERROR_PAUSE_S = 1.0
#: How long the fetch at the end of the linger time waits for a first message (what came
#: meanwhile is there at once; an empty one only costs this).
LAST_FETCH_S = 0.005


class BatchConsumer:
    """Runs one consumer's loop until ``stop``; never raises out of ``run``.

    Parameters:
        sub: the durable pull subscription.
        handler: decodes and writes a batch, says what happens to each message.
        settler: applies those outcomes.
        batch_size: messages fetched and written per transaction at most.
        fetch_timeout_s: how long one fetch waits for a first message.
        linger_s: then how long the batch may wait to fill up (0: write what came at once).
        max_backoff_s: cap of the retry delay while PostgreSQL is away; keep it below the
            consumer's ack_wait, since ``in_progress()`` is sent once per retry.
        metrics: counts batches, rows and failures.
        on_commit: awaited after the acks of each committed batch.
    """

    def __init__(
        self,
        *,
        sub: Source,
        handler: BatchHandler,
        settler: Settler,
        batch_size: int,
        fetch_timeout_s: float,
        max_backoff_s: float,
        linger_s: float = 0.0,
        metrics: LedgerMetrics,
        on_commit: OnCommit,
    ) -> None:
        self.name = handler.name
        self._sub = sub
        self._handler = handler
        self._settler = settler
        self._batch_size = batch_size
        self._fetch_timeout_s = fetch_timeout_s
        self._linger_s = linger_s
        self._max_backoff_s = max_backoff_s
        self._metrics = metrics
        self._on_commit = on_commit
        self._stopping = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._write_s: float | None = None  # the last successful write's time (commit latency)

    async def run(self) -> None:
        self._running = asyncio.current_task()
        try:
            while not self._stopping.is_set():
                await self._iterate()
        finally:
            await self._unsubscribe()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop fetching; let the batch in hand finish within ``grace_s``, else cancel."""
        self._stopping.set()
        running = self._running
        if running is None or running is asyncio.current_task():
            return
        done, _ = await asyncio.wait({running}, timeout=grace_s)
        if not done:
            log.warning("ledger-%s did not finish within %.1fs; cancelling", self.name, grace_s)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    async def _iterate(self) -> None:
        try:
            msgs = await self._fetch()
            if msgs:
                # a cancel must not fall between COMMIT and the acks
                await asyncio.shield(self._process(msgs))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("%s: unexpected error in the ledger loop", self.name, exc_info=True)
            self._metrics.error(self.name, "unexpected")
            await self._pause(ERROR_PAUSE_S)

    async def _unsubscribe(self) -> None:
        # Unsubscribe rather than leave it to the connection's drain: a pull subscription's
        # queue is never marked done, so draining it would wait for the whole drain timeout.
        # A message that arrived after the last fetch is redelivered after ack_wait.
        try:
            await self._sub.unsubscribe()
        except Exception as exc:
            log.info("%s: unsubscribe: %s", self.name, exc)

    async def _fetch(self) -> list[Msg]:
        try:
            msgs = await self._sub.fetch(self._batch_size, timeout=self._fetch_timeout_s)
        except TimeoutError:  # nothing to read (nats' timeouts subclass TimeoutError)
            return []
        except NatsError as exc:  # disconnected: the client reconnects on its own
            log.warning("%s: fetch failed: %s", self.name, exc)
            self._metrics.error(self.name, "fetch")
            await self._pause(ERROR_PAUSE_S)
            return []
        return await self._fill(msgs)

    async def _fill(self, msgs: list[Msg]) -> list[Msg]:
        """Let a short batch collect what arrives within the linger time: at a few hundred
        jobs a second this turns one transaction per message or two into one per dozens.

        The batch collects on the server and is fetched once the linger time is over, rather
        than fetched as it arrives: a fetch that waits returns with the first message, so
        fetching meanwhile cost about one pull request (a publish, a wait and the server's
        work) per message. A backlog that already fills the batch is fetched at once."""
        deadline = time.monotonic() + self._linger_s
        while len(msgs) < self._batch_size and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0.001:
                break
            wanted = self._batch_size - len(msgs)
            if num_pending(msgs[-1]) < wanted and await self._pause(left):
                break  # stopping: write what we have
            try:
                msgs += await self._sub.fetch(wanted, timeout=LAST_FETCH_S)
            except (TimeoutError, NatsError):  # nothing more, or a hiccup: write what we have
                break
        return msgs

    async def _process(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            self._metrics.fleet.record_delivery(f"ledger-{self.name}", num_delivered(msg))
        pending, settled = self._handler.decode(msgs)
        written = await self._write_until_done(pending) if pending else Written()
        if written is None:  # stopping while PostgreSQL is away: hand the batch back
            log.info("%s: stopping while PostgreSQL is away: %d messages handed back", self.name, len(pending))
            for msg, _ in pending:
                await self._settler.apply(msg, HAND_BACK)
            written = Written()
        for msg, outcome in [*settled, *written.outcomes]:
            await self._settler.settle(msg, outcome)
        if written.committed:
            self._metrics.committed(
                self.name, messages=written.committed, rows=_row_counts(written.rows), seconds=self._write_s
            )
            await self._on_commit(self.name, written.rows)

    async def _write_until_done(self, pending: Pending) -> Written | None:
        """Write the batch, retrying transient failures until it succeeds or we stop (None)."""
        retry = 0
        while True:
            try:
                started = time.perf_counter()
                written = await self._handler.write(pending)
                self._write_s = time.perf_counter() - started
                return written
            except Exception as exc:
                if not is_transient(exc):
                    raise
                retry += 1
                delay = backoff_s(retry, cap_s=self._max_backoff_s)
                log.warning(
                    "%s: PostgreSQL unavailable (%r); retry %d of %d messages in %.1fs",
                    self.name,
                    exc,
                    retry,
                    len(pending),
                    delay,
                )
                self._metrics.error(self.name, "transient")
                await self._hold(pending)
                if self._stopping.is_set() or await self._pause(delay):
                    return None

    async def _hold(self, pending: Pending) -> None:
        """Tell JetStream the batch is still being worked on (not settling it)."""
        for msg, _ in pending:
            try:
                await msg.in_progress()
            except Exception as exc:
                log.warning("%s: in_progress failed on %s: %s", self.name, msg.subject, exc)

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until stopping; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return True
        return False


def _row_counts(rows: list[Rows]) -> dict[str, int]:
    return {
        "routing_decisions": sum(len(r.decisions) + len(r.results) for r in rows),
        "attempts": sum(len(r.attempt_records) + len(r.result_attempts) for r in rows),
        "feedback": sum(len(r.feedback) for r in rows),
    }
