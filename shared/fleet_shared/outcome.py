"""What should happen to a JetStream message once its handler is done with it.

A handler returns one of these and never settles the message itself; the consumer loop
alone applies it (``fleet_shared.loop.Settler``), so a handler is tested with a message
stub in and an outcome out, no server needed.

    Done()                     ack: handled (a duplicate, or a job with a Result already, too)
    Wait(delay_s, why)         nak(delay): stay in the queue, e.g. a model cooling down after
                               a 429, or the router's ``wait`` decision (at least MIN_WAIT_S)
    Retry(delay_s, why)        nak(delay): our own transient fault (NATS, PostgreSQL); logged
                               at info. No delay: jittered, capped backoff on the delivery count
    Requeue(msg_id, why)       publish a fresh copy (its delivery count starts again), then ack
    DeadLetter(reason)         copy to <p>.deadletter.<stream> with the reason, then term
    DeadLetterStored(...)      copy a stored message JetStream gave up on (named by a
                               max-deliveries advisory) to the dead letters, delete it from its
                               stream, then ack this message (the advisory)
    Drop(reason)               term, with no copy kept (nothing worth keeping: a bad advisory)

An exception out of a handler is also our own transient fault: the loop logs it with its
traceback and naks with backoff, like ``Retry()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: a wait shorter than this is not worth a round trip through the queue (seconds)
MIN_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class Done:
    """Handled: ack."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Leave the message in the queue for ``delay_s`` (not a fault: nak with the delay)."""

    delay_s: float
    why: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """Our own transient fault: redeliver after ``delay_s`` (None: backoff on the delivery
    count; 0: at once, e.g. handed back on stop)."""

    delay_s: float | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class Requeue:
    """Publish the message again as a fresh one (de-duplicated on ``msg_id``), then ack it:
    a message that waited often would otherwise reach max_deliver for waiting."""

    msg_id: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give the message up: copy it to the dead-letter stream with ``reason``, then term."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeadLetterStored:
    """Give up the stored message ``stream`` #``seq`` (read by the handler): copy it to the
    dead letters, delete it from its stream, then ack the message handled (its advisory)."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] | None = field(default=None)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Drop:
    """Terminate without keeping a copy (nothing in it is worth keeping)."""

    reason: str


Outcome = Done | Wait | Retry | Requeue | DeadLetter | DeadLetterStored | Drop

DONE = Done()
#: what a stopping loop does with a message it cannot finish: someone else takes it now
HAND_BACK = Retry(delay_s=0.0, why="handed back on stop")
