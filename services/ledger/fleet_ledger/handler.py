"""The ledger's message handling: a batch of messages in, one outcome per message out.

``decode`` splits a fetched batch into what can be written and what cannot (a message
that does not decode: ``DeadLetter``, retrying cannot help). ``write`` stores the decoded
ones in one transaction: each committed message is ``Done``; after a permanent error (a
value PostgreSQL refuses) the batch is written again one message at a time, so only the
culprit is dead-lettered. A transient error (PostgreSQL away, see ``errors``) is raised:
the batch loop (``consumer``) holds the batch and writes it again later. Nothing here
settles a message; the loop acks only after COMMIT.
Rewriting a message is harmless: every write is an idempotent upsert.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from nats.aio.msg import Msg

from fleet_ledger.errors import is_transient
from fleet_ledger.metrics import LedgerMetrics
from fleet_ledger.writer import Envelope, Rows, StorePrompt, collapse, write_rows
from fleet_shared.outcome import DONE, DeadLetter, Done, Outcome

log = logging.getLogger(__name__)

#: decoded messages of a batch, each with its envelope
Pending = list[tuple[Msg, Envelope]]
#: messages with what should happen to them
Settled = list[tuple[Msg, Outcome]]

#: reason of a message PostgreSQL will not store
REFUSED = "refused by PostgreSQL"


@dataclass
class Written:
    """What ``write`` did: each message's outcome, and the rows committed."""

    outcomes: Settled = field(default_factory=list)
    rows: list[Rows] = field(default_factory=list)

    @property
    def committed(self) -> int:
        return sum(1 for _, outcome in self.outcomes if isinstance(outcome, Done))


def stored_at(msg: Msg) -> float:
    """Unix time the stream stored ``msg`` (falls back to now for a non-JetStream message)."""
    try:
        return msg.metadata.timestamp.timestamp()
    except Exception:  # no JetStream reply subject to read the time from
        return time.time()


def message_id(msg: Msg) -> str:
    """The publisher's Nats-Msg-Id, else ``<stream>:<sequence>``: the same for every delivery."""
    given = (msg.headers or {}).get("Nats-Msg-Id")
    if given:
        return given
    try:
        return f"{msg.metadata.stream}:{msg.metadata.sequence.stream}"
    except Exception:  # not a JetStream message (handler tests)
        return ""


class BatchHandler:
    """Decodes and writes the batches of one consumer.

    Parameters:
        name: label in logs and metrics ("events", "results").
        decoder: msgspec decoder of this consumer's messages.
        pool: asyncpg pool of the ledger database.
        metrics: counts decode and permanent errors.
        store_prompt: "text", or "hash" to store a hash of each prompt instead.
    """

    def __init__(
        self,
        *,
        name: str,
        decoder: msgspec.json.Decoder[Any],
        pool: asyncpg.Pool,
        metrics: LedgerMetrics,
        store_prompt: StorePrompt = "text",
    ) -> None:
        self.name = name
        self._decoder = decoder
        self._pool = pool
        self._metrics = metrics
        self._store_prompt = store_prompt

    def decode(self, msgs: list[Msg]) -> tuple[Pending, Settled]:
        """(what can be written, the outcomes of what cannot)."""
        pending: Pending = []
        undecodable: Settled = []
        for msg in msgs:
            try:
                pending.append((msg, Envelope(self._decoder.decode(msg.data), stored_at(msg), message_id(msg))))
            except msgspec.DecodeError as exc:  # ValidationError included: retrying cannot help
                self._metrics.error(self.name, "decode")
                undecodable.append((msg, DeadLetter(f"undecodable: {exc}")))
        return pending, undecodable

    async def write(self, pending: Pending) -> Written:
        """Write the batch: in one transaction, or one message at a time after a permanent error.

        Raises:
            Exception: a transient one (``errors.is_transient``): nothing can be written now.
        """
        try:
            return Written([(msg, DONE) for msg, _ in pending], [await self._commit([env for _, env in pending])])
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("%s: batch of %d refused (%r); writing one at a time", self.name, len(pending), exc)
        written = Written()
        for msg, env in pending:
            try:
                written.rows.append(await self._commit([env]))
                written.outcomes.append((msg, DONE))
            except Exception as exc:
                if is_transient(exc):
                    raise  # the whole batch is retried; rewriting the committed ones is harmless
                log.warning("%s: PostgreSQL refuses the message on %s: %r", self.name, msg.subject, exc)
                self._metrics.error(self.name, "permanent")
                written.outcomes.append((msg, DeadLetter(REFUSED)))
        return written

    async def _commit(self, batch: list[Envelope]) -> Rows:
        rows = collapse(batch, store_prompt=self._store_prompt)
        async with self._pool.acquire() as conn:
            await write_rows(conn, rows)
        return rows
