"""The Dispatch between the router and the workers: read one, or hand a failed attempt back.

Three consumers read Dispatch messages (the workers, the router's escalations, the router's
sweep of jobs whose provider has no worker) and only the fleet itself writes them, so one
that does not decode is a bug: it is dead-lettered for an operator, never retried.

Two of them end an attempt that failed the same way: an ``AttemptRecord`` (the ledger and
every router learn of it at once) and the Dispatch, with the attempt appended, on
<p>.escalate.<provider> for the router to route again.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.js import JetStreamContext

from fleet_shared.outcome import DeadLetter
from fleet_shared.publish import js_publish
from fleet_shared.schema import Attempt, AttemptRecord, Dispatch, dispatch_decoder, encode
from fleet_shared.subjects import Subjects


def decode_dispatch(data: bytes) -> Dispatch | DeadLetter:
    """The Dispatch in ``data``, or the outcome for a message that is none."""
    try:
        return dispatch_decoder.decode(data)
    except msgspec.MsgspecError as exc:
        return DeadLetter(f"undecodable: {exc}")


async def escalate(js: JetStreamContext, subjects: Subjects, d: Dispatch, failed: Attempt, *, provider: str) -> None:
    """Record ``failed`` (the attempt of ``d`` that just failed) and send ``d`` back to the
    router with it appended. Both are stored before this returns (so before the caller's
    ack); neither waits for the other. Idempotent: their ids are the job's and the attempt's.

    Raises:
        nats.errors.Error: a publish still failing after its retries.
    """
    attempts = [*d.attempts, failed]
    n = len(attempts)
    record = AttemptRecord(job_id=d.job_id, attempt_no=n, attempt=failed, at=time.time(), decision=d.decision)
    escalation = msgspec.structs.replace(d, attempts=attempts, decision=None)  # the record took it
    await asyncio.gather(
        js_publish(js, subjects.attempt_event, encode(record), msg_id=f"attempt:{d.job_id}:{n}"),
        js_publish(js, subjects.escalate(provider), encode(escalation), msg_id=f"escalate:{d.job_id}:{n}"),
    )
