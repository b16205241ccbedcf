"""What the three chat APIs (Chat Completions, Responses, Messages) share once a request is
decoded: the routing part of its Job, and the Job's answer as one JSON body or as a stream
through the API's own ``Sink`` (``relay``). Each API module keeps only its wire shapes.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from aiohttp import web

from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import job_id_for, routing_hints
from fleet_gateway.relay import relay
from fleet_gateway.web_io import JOB_ID, context, json_response, open_stream, result_headers, run_job, stream_headers
from fleet_shared.schema import Job, Result

#: the API's decoded request type
R = TypeVar("R")


def routing(request: web.Request, model: str, hint_metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``build_job``'s ``job_id``, ``force_model`` and ``hints`` for this request.

    Raises:
        ApiError: 404 for an unknown model, 400 for a bad routing hint (in that order).
    """
    return {
        "job_id": job_id_for(request.headers.get("idempotency-key")),
        "force_model": context(request).catalog.resolve(model),
        "hints": routing_hints(request.headers, hint_metadata),
    }


class SinkBase(abc.ABC, Generic[R]):
    """A ``relay.Sink`` with the state every API's keeps: the request, its decoded body, the
    job and the response once ``open`` started it (writes before then go nowhere)."""

    def __init__(self, request: web.Request, req: R, job: Job) -> None:
        self.request = request
        self.req = req
        self.job = job
        self.response: web.StreamResponse | None = None

    def public_name(self, model_id: str | None, requested: str) -> str:
        return context(self.request).catalog.public_name(model_id, requested)

    async def open(self, model_id: str) -> web.StreamResponse:
        """Send the status and headers (``x-router-model`` names ``model_id``)."""
        self.response = await open_stream(self.request, stream_headers(self.request, self.job, model_id))
        return self.response

    async def _write(self, data: bytes) -> None:
        if self.response is not None:
            await self.response.write(data)

    @abc.abstractmethod
    async def start(self, model_id: str) -> None: ...

    @abc.abstractmethod
    async def delta(self, text: str) -> None: ...

    @abc.abstractmethod
    async def finish(self, result: Result) -> None: ...

    @abc.abstractmethod
    async def fail(self, error: ApiError) -> None: ...


async def answer(
    request: web.Request, job: Job, *, sink: Callable[[], SinkBase[Any]], body: Callable[[Result], Any]
) -> web.StreamResponse:
    """The job's answer: streamed through ``sink()`` when ``job.stream``, else ``body(result)``
    as JSON with the ``x-router-*`` headers.

    Raises:
        ApiError: the job failed (before anything was streamed), no router, or the timeout.
    """
    request[JOB_ID] = job.id or ""
    if job.stream:
        return await _stream(request, job, sink())
    result = await run_job(request, job)
    return json_response(body(result), headers=result_headers(result))


async def _stream(request: web.Request, job: Job, sink: SinkBase[Any]) -> web.StreamResponse:
    ctx = context(request)
    events = ctx.fleet.stream(job, timeout_s=ctx.settings.request_timeout_s)
    await relay(events, sink, retry_after_s=ctx.fleet.retry_after_s(), now=time.time())
    if sink.response is None:  # relay raises before it starts a response; never reached
        raise ApiError("internal", "the stream ended before it began")
    await sink.response.write_eof()
    return sink.response
