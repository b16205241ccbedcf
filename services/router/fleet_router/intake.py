"""Turning raw bytes from <p>.submit into a validated Job, or a clear rejection.

Pure functions: the service passes in the payload, headers and stream metadata. Hostile
input (not UTF-8, nested thousands deep, too large, wrong types) is a ``Rejection`` here,
never an exception that would crash a handler and make JetStream redeliver the message.
"""

from __future__ import annotations

import datetime
import itertools
import os
import uuid
from collections.abc import Callable, Collection, Iterable

import msgspec

from fleet_shared.schema import Job, job_decoder
from fleet_shared.subjects import is_valid_job_id

_NAMESPACE = uuid.UUID("6f1c8a52-8d0e-4c55-9a57-3f0f7c2f4b11")

#: Deepest nesting accepted inside `context` and `metadata`: deeper values could not be
#: re-encoded into a Dispatch or a Result (msgspec stops at about a thousand levels).
MAX_NESTING = 64
#: What a payload that cannot be parsed raises while being decoded.
_UNPARSEABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Rejection(Exception):
    """A job that can never be served: it gets a failed Result, never a retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _IdOnly(msgspec.Struct):
    """A JSON object's ``id`` only: decoding skips the other fields instead of building them
    (the prompt and context of every job were decoded into dicts twice just for the id)."""

    id: object = None


_id_only = msgspec.json.Decoder(_IdOnly)


def payload_job_id(data: bytes) -> str | None:
    """The payload's valid ``id``; None when it has none (or does not parse)."""
    try:
        given = _id_only.decode(data).id
    except (*_UNPARSEABLE, msgspec.ValidationError):  # not a JSON object
        return None
    return given if isinstance(given, str) and is_valid_job_id(given) else None


def job_id_for(data: bytes, msg_id: str | None, stream_key: str | Callable[[], str]) -> str:
    """The job's id: the payload's ``id``, else the Nats-Msg-Id header, else one derived from
    the stream position (stable across redeliveries; ``stream_key`` may be a function that
    makes it, called only then). Works for payloads that do not parse."""
    given = payload_job_id(data)
    if given is not None:
        return given
    if msg_id:
        return job_id_of_msg_id(msg_id)
    return uuid.uuid5(_NAMESPACE, stream_key if isinstance(stream_key, str) else stream_key()).hex


def job_id_of_msg_id(msg_id: str) -> str:
    """A Nats-Msg-Id as a job id: itself when it is a valid one, else a uuid5 of it."""
    return msg_id if is_valid_job_id(msg_id) else uuid.uuid5(_NAMESPACE, msg_id).hex


#: Set by the router's request intake to the id it made for a job that named none: no
#: earlier Result can exist for it, so its first delivery skips the look-up for one.
FRESH_ID_HEADER = "Fleet-Fresh-Id"


#: A fresh job id is this process's random prefix and a counter: unique across processes
#: and restarts (64 random bits each start) without ``uuid4``'s system call per job.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def fresh_job_id() -> str:
    """A new job id (32 hex digits, the shape of a uuid's hex) for a job that names none."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def stream_key(stream: str, seq: int, stored: datetime.datetime | None) -> str:
    """A message's stream position, the last resort for a job id. The store time (whole
    seconds: a JetStream message's metadata and a read of the stored message round it
    differently below that) tells apart two messages of a stream deleted and re-created."""
    return f"{stream}:{seq}:{int(stored.timestamp()) if stored else 0}"


def decode_job(data: bytes, *, max_bytes: int, known_models: Collection[str]) -> Job:
    """Validate once, on decode.

    Raises:
        Rejection: ``too_large``, ``invalid_json`` (not JSON, not UTF-8, nested too deeply),
            ``invalid_job`` (message carries msgspec's path, e.g. ``$.complexity``) or
            ``unknown_model``.
    """
    if len(data) > max_bytes:
        raise Rejection("too_large", f"job is {len(data)} bytes; the limit is {max_bytes}")
    try:
        job = job_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Rejection("invalid_job", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Rejection("invalid_json", f"payload is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise Rejection("invalid_json", f"payload is not valid UTF-8 ({exc.reason})") from exc
    except RecursionError as exc:
        raise Rejection("invalid_json", "payload is nested too deeply") from exc
    for field in ("context", "metadata"):
        if _deeper_than(getattr(job, field), MAX_NESTING):
            raise Rejection("invalid_json", f"payload is nested too deeply: `$.{field}` exceeds {MAX_NESTING} levels")
    forced = job.force_model
    if forced is not None and forced not in known_models:
        raise Rejection(
            "unknown_model", f"context.force_model {forced!r} is not in the registry: {sorted(known_models)}"
        )
    return job


def _deeper_than(value: object, limit: int) -> bool:
    """Whether lists/dicts in ``value`` nest more than ``limit`` levels (iterative: no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def excerpt(data: bytes, limit: int = 200) -> str:
    """A short, printable excerpt of a payload, for the ledger's objective of a rejected job."""
    return data[:limit].decode("utf-8", errors="replace")
