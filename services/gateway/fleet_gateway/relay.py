"""Streaming that never lies: the fleet's StreamChunks relayed to one HTTP stream.

The rules (README, "Streaming failure semantics"):

* Nothing is sent before the first piece of text of an attempt: an attempt that fails
  before then is invisible (the router escalates, the next attempt's text is relayed),
  and a job that fails before any text gets an ordinary HTTP error response.
* Once text was sent, the answer must come from that same attempt. If it fails (a cut, a
  stall, an error event: the worker's ``done`` chunk with an error), or another attempt
  starts, or the final Result does not continue what was sent, the stream ends with the
  API's own error event and without its end marker (``[DONE]`` / ``message_stop``).
* The final Result is the truth: text the stream lost (core NATS does not redeliver) is
  sent from it before the end marker, so a completed stream always carries the whole answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from fleet_gateway.errors import ApiError, error_for_result
from fleet_shared.schema import ErrorInfo, Result, StreamChunk

log = logging.getLogger("fleet.gateway")


class Sink(Protocol):
    """One API's streaming wire format."""

    async def start(self, model_id: str) -> None:
        """Send the response head (status, headers, the API's opening events)."""

    async def delta(self, text: str) -> None: ...

    async def finish(self, result: Result) -> None:
        """The closing events, ending with the API's end marker."""

    async def fail(self, error: ApiError) -> None:
        """The API's error event; no end marker follows."""


class MidStreamFailure(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _interrupted(info: ErrorInfo | None, why: str) -> ApiError:
    detail = f" ({info.code}: {info.message})" if info else ""
    return ApiError(
        "unavailable",
        f"the answer was interrupted after it had started: {why}{detail}. The text received is "
        "incomplete; send the request again",
        code="stream_interrupted",
    )


async def relay(
    events: AsyncIterator[StreamChunk | Result], sink: Sink, *, retry_after_s: float | None, now: float
) -> Result | None:
    """Relay ``events`` (``FleetLink.stream``) to ``sink``; returns the Result when the
    stream completed.

    Raises:
        ApiError: the job failed before anything was sent (answer it as a plain error).
    """
    sent: list[str] = []
    attempt: int | None = None  # the attempt whose text was sent
    try:
        async for event in events:
            if isinstance(event, Result):
                return await _finish(event, sink, "".join(sent), attempt, retry_after_s=retry_after_s, now=now)
            if attempt is not None and event.attempt_no != attempt:
                raise MidStreamFailure(_interrupted(None, f"attempt {attempt} stopped and another began"))
            if event.done:
                if event.error is not None and attempt is not None:
                    raise MidStreamFailure(_interrupted(event.error, f"{event.model} failed"))
                continue  # failed before any text: the next attempt takes over invisibly
            if event.delta:
                if attempt is None:
                    attempt = event.attempt_no
                    await sink.start(event.model)
                await sink.delta(event.delta)
                sent.append(event.delta)
    except MidStreamFailure as failure:
        log.info("stream interrupted: %s", failure.error.message)
        await sink.fail(failure.error)
        return None
    except ApiError as error:  # the job's timeout, no router
        if attempt is None:
            raise
        await sink.fail(error)
        return None
    return None


async def _finish(
    result: Result, sink: Sink, sent: str, attempt: int | None, *, retry_after_s: float | None, now: float
) -> Result | None:
    if not result.success:
        error = error_for_result(result, retry_after_s=retry_after_s, now=now)
        if attempt is None:
            raise error
        await sink.fail(error)
        return None
    content = result.content or ""
    if attempt is not None and (len(result.attempts) != attempt or not content.startswith(sent)):
        await sink.fail(_interrupted(None, "the final answer came from another attempt"))
        return None
    if attempt is None:
        await sink.start(result.model or "")
    rest = content[len(sent) :]
    if rest:
        await sink.delta(rest)
    await sink.finish(result)
    return result
