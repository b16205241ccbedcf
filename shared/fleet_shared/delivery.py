"""What a JetStream delivery's ack subject says, read without nats-py's ``Msg.metadata``.

``metadata`` parses the whole subject into a datetime and three objects; a consumer that
wants one number of it (the delivery count, the backlog, the store time) pays that for every
message. The token positions are JetStream's (and nats-py's, ``nats.aio.msg``):

    $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>
    $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>[.<token>]
"""

from __future__ import annotations

import contextlib
import time

from nats.aio.msg import Msg


def num_delivered(msg: Msg) -> int:
    """How often JetStream delivered ``msg`` (1 when it cannot tell)."""
    found = ack_subject_field(msg, _V1_DELIVERED, _V2_DELIVERED)
    if found is not None:
        return found
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream message
        return 1


def stream_time(msg: Msg) -> float:
    """When the stream stored ``msg`` (unix s): the same for every reader and delivery
    (now, for a message that is no JetStream's)."""
    stored_ns = ack_subject_field(msg, V1_TIME, V2_TIME)
    if stored_ns:
        return stored_ns / 1e9
    with contextlib.suppress(Exception):
        return msg.metadata.timestamp.timestamp()
    return time.time()


#: token positions without a domain (v1) and with one (v2)
_V1_DELIVERED, _V2_DELIVERED = 4, 6
V1_TIME, V2_TIME = 7, 9  # unix nanoseconds
V1_PENDING, V2_PENDING = 8, 10


def ack_subject_field(msg: Msg, v1_index: int, v2_index: int) -> int | None:
    """One number of ``msg``'s JetStream ack subject, read without nats-py's ``metadata``
    (which builds a datetime and three objects per message: a visible share of a worker's
    CPU per job when only the delivery count is wanted); None when the subject is not one
    (the caller then asks ``metadata``, which raises for a message that is no JetStream's)."""
    reply = msg.reply
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    count = len(tokens)
    index = v1_index if count == 9 else v2_index if count >= 11 else None
    if index is None:
        return None
    try:
        return int(tokens[index])
    except ValueError:
        return None
