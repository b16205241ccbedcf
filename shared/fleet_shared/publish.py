"""Publishing helpers shared by the router, the workers and the ledger.

Every stored publish carries a ``Nats-Msg-Id`` derived from what it means (``result:<job>``,
``dispatch:<job>:<n>``...), so a retry, a redelivered message handled twice, or two
processes racing publish it once within the streams' de-duplication window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from fleet_shared import requests
from fleet_shared.schema import Result, encode
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

#: Header carrying the core-NATS inbox of an ``llm.request`` caller through the fleet.
REPLY_TO_HEADER = "Fleet-Reply-To"
MSG_ID_HEADER = "Nats-Msg-Id"
#: Headers of a dead-lettered copy: why, and where the original was.
DEAD_REASON_HEADER = "Fleet-Dead-Reason"
DEAD_SUBJECT_HEADER = "Fleet-Dead-Subject"
DEAD_SEQ_HEADER = "Fleet-Dead-Seq"

#: Publish tries on no-responders / timeouts (a leader election, a restarting server).
PUBLISH_ATTEMPTS = 8
#: Errors worth retrying with the same message id.
#: (js.publish turns no-responders into NoStreamResponseError: no stream leader answers yet)
_RETRYABLE = (NoRespondersError, NoStreamResponseError, ServiceUnavailableError, NatsTimeoutError, asyncio.TimeoutError)


async def js_publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: Mapping[str, str] | None = None,
    attempts: int = PUBLISH_ATTEMPTS,
) -> api.PubAck:
    """Publish to a stream with de-duplication; retry no-responders (leader elections,
    a restarting server) with the same id, so a retry never stores a second copy.

    Raises:
        nats.errors.Error: still failing after ``attempts`` tries, or a permanent refusal.
        ValueError: ``attempts`` is below 1.
    """
    acked = await js_publish_sent(js, subject, payload, msg_id=msg_id, headers=headers, attempts=attempts)
    return await acked


async def js_publish_sent(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: Mapping[str, str] | None = None,
    attempts: int = PUBLISH_ATTEMPTS,
) -> Coroutine[Any, Any, api.PubAck]:
    """``js_publish`` in two steps: the publish is sent when this returns; awaiting what it
    returns waits for the ack (retrying as ``js_publish`` does). What it returns must be
    awaited, also when the caller fails meanwhile.

    Raises:
        nats.errors.Error: the publish could not be sent (too large, connection closed).
        ValueError: ``attempts`` is below 1.
    """
    if attempts < 1:  # nothing is sent: say so rather than drop the message
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    all_headers = _stored_headers(js, payload, headers, msg_id)
    first = await _send(js, subject, payload, all_headers)
    return _acked(js, subject, payload, all_headers, first, attempts)


async def js_publish_attempt(
    js: JetStreamContext, subject: str, payload: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
) -> asyncio.Future[Any]:
    """One try of ``js_publish``, sent when this returns; ``pub_ack`` reads the future's
    answer. No retry: a caller whose try failed goes on with ``js_publish`` (same id).

    Raises:
        nats.errors.Error: the publish could not be sent (too large, connection closed).
    """
    return await _send(js, subject, payload, _stored_headers(js, payload, headers, msg_id))


def _stored_headers(
    js: JetStreamContext, payload: bytes, headers: Mapping[str, str] | None, msg_id: str
) -> dict[str, str]:
    """A stored publish's headers (with its de-duplication id), its size checked."""
    all_headers = {**(headers or {}), MSG_ID_HEADER: msg_id}
    check_size(js, payload, all_headers)
    return all_headers


async def _acked(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    first: asyncio.Future[Any],
    attempts: int,
) -> api.PubAck:
    sent = first
    for attempt in range(1, attempts + 1):
        try:
            try:
                return pub_ack(await sent)
            except NoRespondersError:  # as js.publish says it: no stream (leader) answers yet
                raise NoStreamResponseError from None
        except _RETRYABLE as exc:
            if attempt == attempts:
                raise
            log.info("publish to %s failed (%r); retry %d", subject, exc, attempt)
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
            sent = await _send(js, subject, payload, headers)
    raise AssertionError("unreachable: the last attempt returns or raises")


class _Ack(msgspec.Struct):
    """JetStream's answer to a stored publish (what ``api.PubAck`` is read from)."""

    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


_ack_decoder = msgspec.json.Decoder(_Ack)


async def _send(js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[Any]:
    """Send one stored publish; the future gets its answer (a ``Msg``, or a ``PubAck`` from a
    stand-in context, which publishes and answers in one call). The answer is read by
    msgspec: nats-py parses every PubAck with the stdlib json and a generic dataclass
    converter, a visible share of the router's and the workers' CPU per job."""
    nc = getattr(js, "_nc", None)
    if not isinstance(nc, NATS):
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            answered.set_result(await js.publish(subject, payload, headers=headers))
        except Exception as exc:
            answered.set_exception(exc)
        return answered
    return await requests.for_connection(nc).send(subject, payload, timeout=js._timeout, headers=headers)


def pub_ack(answer: Msg | api.PubAck) -> api.PubAck:
    """The PubAck of an answer ``_send`` got; its error raised."""
    if isinstance(answer, api.PubAck):
        return answer
    ack = _ack_decoder.decode(answer.data)
    if ack.error is not None:
        APIError.from_error(ack.error)  # raises
    return api.PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)


def check_size(js: JetStreamContext, payload: bytes, headers: Mapping[str, str]) -> None:
    """Refuse a message the server would refuse. nats-py checks only the payload against
    max_payload, but the server counts the headers too, and answers an oversized message
    by closing the whole connection: every in-flight ack and publish of the process lost.

    Raises:
        nats.errors.MaxPayloadError: payload and headers exceed the server's max_payload.
    """
    # JetStreamContext does not expose its Client (whose max_payload is public), and passing the
    # client next to ``js`` through every js_publish caller only for this is not worth it: read
    # the private attribute defensively (no limit known when it moves, as before connecting).
    limit = getattr(getattr(js, "_nc", None), "max_payload", 0) or 0
    header_bytes = len("NATS/1.0\r\n\r\n") + sum(map(len, headers)) + sum(map(len, headers.values())) + 4 * len(headers)
    if limit and len(payload) + header_bytes > limit:
        raise MaxPayloadError(f"{len(payload)} bytes plus {header_bytes} of headers exceed max_payload {limit}")


async def stored_result(js: JetStreamContext, subjects: Subjects, job_id: str) -> bytes | None:
    """The stored Result of ``job_id`` (its JSON), None when there is none yet."""
    found = await stored_result_sent(js, subjects, job_id)
    return await found


async def stored_result_sent(
    js: JetStreamContext, subjects: Subjects, job_id: str
) -> Coroutine[Any, Any, bytes | None]:
    """``stored_result`` in two steps: the look-up (a JetStream direct get) is sent when this
    returns; awaiting what it returns reads the answer. What it returns must be awaited."""
    nc = getattr(js, "_nc", None)
    if not isinstance(nc, NATS):  # a stand-in context: nats-py's own call
        return _last_msg(js, subjects.results_stream, subjects.result(job_id))
    prefix = getattr(js, "_prefix", None) or api.DEFAULT_PREFIX
    subject = f"{prefix}.DIRECT.GET.{subjects.results_stream}.{subjects.result(job_id)}"
    answer = await requests.for_connection(nc).send(subject, b"", timeout=js._timeout)
    return _direct_get(answer)


async def _last_msg(js: JetStreamContext, stream: str, subject: str) -> bytes | None:
    try:
        msg = await js.get_last_msg(stream, subject, direct=True)
    except NotFoundError:
        return None
    return msg.data


async def _direct_get(answer: asyncio.Future[Msg]) -> bytes | None:
    """A direct get's answer: the message, or a status (404: none) in headers only. The
    parts of nats-py's reading of it that nobody here uses (timestamps) are skipped."""
    msg = await answer
    if msg.data:
        return msg.data
    status = (msg.headers or {}).get("Status")
    if status == "404":
        return None
    if status:
        raise APIError.from_msg(msg)
    return msg.data  # an empty message stored on that subject


async def publish_result(
    nc: NATS,
    js: JetStreamContext,
    subjects: Subjects,
    result: Result,
    reply_to: str | None,
    *,
    if_absent: bool = False,
) -> bool:
    """Store the final Result (kept by job id) and answer a waiting requester if any; the
    answer is sent right after the stored publish, without waiting for its ack.

    Parameters:
        if_absent: first look for a stored Result of this job and, when there is one,
            answer the requester with it instead of storing a second one (for paths that
            may run after the job finished: redeliveries, dead letters, watchdogs).

    Returns:
        False when an existing Result was kept.
    """
    existing = await stored_result(js, subjects, result.job_id) if if_absent else None
    if existing is not None:
        if reply_to:
            await nc.publish(reply_to, existing)
        return False
    payload = encode(result)
    subject, msg_id = subjects.result(result.job_id), f"result:{result.job_id}"
    if not reply_to:
        await js_publish(js, subject, payload, msg_id=msg_id)
        return True
    # The requester's answer does not wait for the store's ack (one round trip less per job):
    # it is sent right after the stored publish, so the server reads that first. The caller's
    # message is still settled only after the ack; a store that fails leaves it unsettled,
    # and its redelivery is served again (a requester already answered ignores a second answer).
    acked = await js_publish_sent(js, subject, payload, msg_id=msg_id)
    try:
        await nc.publish(reply_to, payload)
    finally:
        await acked  # the ack is waited for even when the reply could not be sent
    return True


async def dead_letter(
    js: JetStreamContext,
    subjects: Subjects,
    *,
    stream: str,
    seq: int,
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None,
    reason: str,
) -> None:
    """Copy a message given up on ``stream`` to <p>.deadletter.<stream>, with why and where
    it was (idempotent: the copy's id is the original's stream position)."""
    kept = {k: v for k, v in (headers or {}).items() if not k.startswith("Nats-")}
    kept.update({DEAD_REASON_HEADER: reason, DEAD_SUBJECT_HEADER: subject, DEAD_SEQ_HEADER: str(seq)})
    await js_publish(js, subjects.deadletter(stream), data, msg_id=f"dead:{stream}:{seq}", headers=kept)
