"""One durable pull consumer's loop: fetch a batch -> decode -> write in one transaction ->
settle (ack only after COMMIT) -> tell listeners what was committed.

Settle policy:
* a message that does not decode is logged at warning, copied to the dead-letter stream
  and terminated at once;
* PostgreSQL unavailable (a transient error, see ``errors``): the batch is kept in hand and
  written again after a capped, jittered backoff, with ``in_progress()`` so JetStream neither
  redelivers it nor counts a delivery against max_deliver. The loop waits with its batch
  until PostgreSQL returns, then the backlog drains. On stop it naks the batch instead;
* a permanent error (PostgreSQL refuses a value): the batch is written one message at a time
  to find the culprit, which is logged at warning, dead-lettered and terminated; the others
  are acked.
Rewriting a message is harmless: every write is an idempotent upsert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from fleet_ledger.errors import is_transient
from fleet_ledger.metrics import LedgerMetrics
from fleet_ledger.writer import Envelope, Rows, StorePrompt, collapse, write_rows
from fleet_shared.loop import backoff_s

log = logging.getLogger(__name__)

Pending = list[tuple[Msg, Envelope]]
OnCommit = Callable[[str, list[Rows]], Awaitable[None]]
#: Copies a message about to be terminated to the dead-letter stream, with the reason.
OnReject = Callable[[Msg, str], Awaitable[None]]

#: Pause after an unexpected loop error or a NATS failure, so a broken loop does not spin.
ERROR_PAUSE_S = 1.0


def stored_at(msg: Msg) -> float:
    """Unix time the stream stored ``msg`` (falls back to now for a non-JetStream message)."""
    try:
        return msg.metadata.timestamp.timestamp()
    except Exception:  # no JetStream reply subject to read the time from
        return time.time()


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stopping`` is set; True when stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class BatchConsumer:
    """Runs one consumer's loop until ``stopping`` is set; never raises out of ``run``.

    Parameters:
        name: label in logs and metrics ("events", "results").
        sub: the durable pull subscription.
        decoder: msgspec decoder of this consumer's messages.
        pool: asyncpg pool of the ledger database.
        batch_size: messages fetched and written per transaction at most.
        fetch_timeout_s: how long one fetch waits for a first message.
        linger_s: then how long the batch may wait to fill up (0: write what came at once).
        max_backoff_s: cap of the retry delay while PostgreSQL is away; keep it below the
            consumer's ack_wait, since ``in_progress()`` is sent once per retry.
        on_commit: awaited after the acks of each committed batch.
        on_reject: awaited for each message before it is terminated (dead-lettering it).
        store_prompt: "text", or "hash" to store a hash of each prompt instead.
    """

    def __init__(
        self,
        *,
        name: str,
        sub: JetStreamContext.PullSubscription,
        decoder: msgspec.json.Decoder,
        pool: asyncpg.Pool,
        batch_size: int,
        fetch_timeout_s: float,
        max_backoff_s: float,
        linger_s: float = 0.0,
        metrics: LedgerMetrics,
        on_commit: OnCommit,
        on_reject: OnReject | None = None,
        store_prompt: StorePrompt = "text",
    ) -> None:
        self.name = name
        self._sub = sub
        self._decoder = decoder
        self._pool = pool
        self._batch_size = batch_size
        self._fetch_timeout_s = fetch_timeout_s
        self._linger_s = linger_s
        self._max_backoff_s = max_backoff_s
        self._metrics = metrics
        self._on_commit = on_commit
        self._on_reject = on_reject
        self._store_prompt = store_prompt

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                await self._iterate(stopping)
        finally:
            await self._unsubscribe()

    async def _iterate(self, stopping: asyncio.Event) -> None:
        try:
            msgs = await self._fetch(stopping)
            if msgs:
                # a cancel must not fall between COMMIT and the acks
                await asyncio.shield(self._handle(msgs, stopping))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("%s: unexpected error in the ledger loop", self.name, exc_info=True)
            self._metrics.error(self.name, "unexpected")
            await _sleep_unless(stopping, ERROR_PAUSE_S)

    async def _unsubscribe(self) -> None:
        # Unsubscribe rather than leave it to the connection's drain: a pull subscription's
        # queue is never marked done, so draining it would wait for the whole drain timeout.
        # A message that arrived after the last fetch is redelivered after ack_wait.
        try:
            await self._sub.unsubscribe()
        except Exception as exc:
            log.info("%s: unsubscribe: %s", self.name, exc)

    async def _fetch(self, stopping: asyncio.Event) -> list[Msg]:
        try:
            msgs = await self._sub.fetch(self._batch_size, timeout=self._fetch_timeout_s)
        except TimeoutError:  # nothing to read (nats' timeouts subclass TimeoutError)
            return []
        except NatsError as exc:  # disconnected: the client reconnects on its own
            log.warning("%s: fetch failed: %s", self.name, exc)
            self._metrics.error(self.name, "fetch")
            await _sleep_unless(stopping, ERROR_PAUSE_S)
            return []
        return await self._fill(msgs, stopping)

    async def _fill(self, msgs: list[Msg], stopping: asyncio.Event) -> list[Msg]:
        """Let a short batch collect what arrives within the linger time: at a few hundred
        jobs a second this turns one transaction per message or two into one per dozens."""
        deadline = time.monotonic() + self._linger_s
        while len(msgs) < self._batch_size and not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0.001:
                break
            try:
                msgs += await self._sub.fetch(self._batch_size - len(msgs), timeout=left)
            except (TimeoutError, NatsError):  # nothing more in time, or a hiccup: write what we have
                break
        return msgs

    async def _handle(self, msgs: list[Msg], stopping: asyncio.Event) -> None:
        pending = await self._decode(msgs)
        if not pending:
            return
        outcome = await self._write_until_done(pending, stopping)
        if outcome is None:  # stopping while PostgreSQL is away: hand the batch back
            await self._settle(pending, "nak")
            return
        committed, rejected, rows = outcome
        await self._reject(rejected, "refused by PostgreSQL")
        await self._settle(committed, "ack")
        if committed:
            self._metrics.committed(self.name, messages=len(committed), rows=_row_counts(rows))
            await self._on_commit(self.name, rows)

    async def _decode(self, msgs: list[Msg]) -> Pending:
        pending: Pending = []
        for msg in msgs:
            try:
                pending.append((msg, Envelope(self._decoder.decode(msg.data), stored_at(msg))))
            except msgspec.DecodeError as exc:  # ValidationError included: retrying cannot help
                log.warning("%s: terminating undecodable message on %s: %s", self.name, msg.subject, exc)
                self._metrics.error(self.name, "decode")
                await self._reject([(msg, None)], f"undecodable: {exc}")
        return pending

    async def _write_until_done(
        self, pending: Pending, stopping: asyncio.Event
    ) -> tuple[Pending, Pending, list[Rows]] | None:
        """Write the batch, retrying transient failures until it succeeds or we stop."""
        retry = 0
        while True:
            try:
                return await self._write(pending)
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
                await self._settle(pending, "in_progress")
                if stopping.is_set() or await _sleep_unless(stopping, delay):
                    return None

    async def _write(self, pending: Pending) -> tuple[Pending, Pending, list[Rows]]:
        """(committed, rejected, rows): the whole batch, or one by one after a permanent error."""
        try:
            return pending, [], [await self._commit([env for _, env in pending])]
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("%s: batch of %d refused (%r); writing one at a time", self.name, len(pending), exc)
        committed: Pending = []
        rejected: Pending = []
        rows: list[Rows] = []
        for item in pending:
            try:
                rows.append(await self._commit([item[1]]))
                committed.append(item)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the whole batch is retried; rewriting the committed ones is harmless
                log.warning("%s: terminating message PostgreSQL refuses (%s): %r", self.name, item[0].subject, exc)
                self._metrics.error(self.name, "permanent")
                rejected.append(item)
        return committed, rejected, rows

    async def _commit(self, batch: list[Envelope]) -> Rows:
        rows = collapse(batch, store_prompt=self._store_prompt)
        async with self._pool.acquire() as conn:
            await write_rows(conn, rows)
        return rows

    async def _reject(self, items: Pending | list[tuple[Msg, None]], reason: str) -> None:
        """Dead-letter, then terminate: a message the ledger cannot store is kept, not lost."""
        for msg, _ in items:
            if self._on_reject is not None:
                try:
                    await self._on_reject(msg, reason)
                except Exception as exc:  # not stored: leave it to be redelivered
                    log.warning("%s: could not dead-letter %s: %s", self.name, msg.subject, exc)
                    continue
            await self._settle([(msg, None)], "term")

    async def _settle(self, items: Pending | list[tuple[Msg, None]], how: str) -> None:
        """ack / nak / term / in_progress each message; a failure only means a redelivery."""
        for msg, _ in items:
            try:
                await getattr(msg, how)()
            except Exception as exc:
                log.warning("%s: %s failed on %s: %s", self.name, how, msg.subject, exc)


def _row_counts(rows: list[Rows]) -> dict[str, int]:
    return {
        "routing_decisions": sum(len(r.decisions) + len(r.results) for r in rows),
        "attempts": sum(len(r.attempt_records) + len(r.result_attempts) for r in rows),
    }
