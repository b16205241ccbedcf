"""Dead letters: a message JetStream gave up on becomes a failed Result, never a silent loss.

When a message of JOBS, DISPATCH or ESCALATE reaches max_deliver, JetStream publishes a
MAX_DELIVERIES advisory, which the ADVISORIES stream keeps until it is handled (so one
published while no router runs waits). Every router process consumes them; for each:

1. read the original message by stream sequence (gone: it was settled after all, done);
2. finish its job with a failed Result, code ``max_deliveries``, unless it has a Result;
3. return ``DeadLetterStored``: the loop copies the message to <p>.deadletter.<stream>
   with the reason, deletes it from the work queue (past max_deliver it would stay there
   for ever) and acks the advisory.

Every step is idempotent, so a crash anywhere only means the advisory is handled again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from fleet_router.intake import job_id_for, stream_key
from fleet_shared.dispatch import decode_dispatch
from fleet_shared.outcome import DONE, DeadLetter, DeadLetterStored, Drop, Outcome
from fleet_shared.publish import MSG_ID_HEADER, REPLY_TO_HEADER
from fleet_shared.schema import Dispatch, ErrorInfo
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router.deadletter")

#: Error code of the failed Result of a job whose message was given up.
MAX_DELIVERIES = "max_deliveries"


class MaxDeliveries(msgspec.Struct):
    """The part of JetStream's io.nats.jetstream.advisory.v1.max_deliver we read."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


_advisory_decoder = msgspec.json.Decoder(MaxDeliveries)


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    """What the router needs to finish a job that cannot go on."""

    job_id: str
    error: ErrorInfo
    data: bytes = b""  # the raw job, when it was never routed
    prev: Dispatch | None = None  # the routed job, with its attempts so far
    reply_to: str | None = None
    accepted_at: float = 0.0


class DeadLetters:
    """Handles max-deliveries advisories (a PullLoop handler: ``on_advisory`` -> Outcome).

    Parameters:
        js: JetStream context.
        subjects: the fleet's names.
        give_up: finishes a job with a failed Result unless it has one (the router's).
    """

    def __init__(self, js: JetStreamContext, subjects: Subjects, give_up: Callable[[GiveUp], Awaitable[None]]) -> None:
        self.js = js
        self.subjects = subjects
        self.give_up = give_up

    async def on_advisory(self, msg: Msg) -> Outcome:
        try:
            advisory = _advisory_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            return Drop(f"undecodable max-deliveries advisory: {exc}")
        try:
            original = await self.js.get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:  # acked late, or another router finished it: nothing is lost
            return DONE
        reason = f"{MAX_DELIVERIES}: delivered {advisory.deliveries} times to {advisory.consumer} without being settled"
        job = self._job_of(advisory, original, reason)
        if job is not None:
            await self.give_up(job)
        return DeadLetterStored(
            stream=advisory.stream,
            seq=advisory.stream_seq,
            subject=original.subject or "",
            data=original.data or b"",
            headers=original.headers,
            reason=reason,
        )

    def _job_of(self, advisory: MaxDeliveries, original: RawStreamMsg, reason: str) -> GiveUp | None:
        """The job to fail for ``original``; None when its message does not even decode."""
        data, headers = original.data or b"", original.headers or {}
        error = ErrorInfo(MAX_DELIVERIES, f"given up after max_deliver: {reason}")
        if advisory.stream == self.subjects.jobs_stream:
            key = stream_key(advisory.stream, advisory.stream_seq, original.time)
            job_id = job_id_for(data, headers.get(MSG_ID_HEADER), key)
            accepted_at = original.time.timestamp() if original.time else 0.0
            return GiveUp(
                job_id=job_id, error=error, data=data, reply_to=headers.get(REPLY_TO_HEADER), accepted_at=accepted_at
            )
        prev = decode_dispatch(data)
        if isinstance(prev, DeadLetter):
            log.error("%s #%d: %s: dead-lettered without a Result", advisory.stream, advisory.stream_seq, prev.reason)
            return None
        return GiveUp(job_id=prev.job_id, error=error, prev=prev, reply_to=prev.reply_to, accepted_at=prev.accepted_at)
