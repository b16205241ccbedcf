"""The HTTP plumbing every handler shares: the context, bounded body reads, strict JSON
decoding into typed requests, JSON and server-sent-event writing."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from fleet_gateway.access import KeyRing
from fleet_gateway.errors import ApiError, error_for_result
from fleet_gateway.fleet import FleetLink
from fleet_gateway.jobs import Catalog, router_headers
from fleet_gateway.settings import GatewaySettings
from fleet_shared.schema import Job, Result

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_PATH = re.compile(r"at `\$\.?([^`]*)`")


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at start-up."""

    settings: GatewaySettings
    fleet: FleetLink
    keys: KeyRing
    catalog: Catalog


CONTEXT = web.AppKey("context", Context)
#: request -> the job id, so an error response carries ``x-request-id`` too
JOB_ID = web.RequestKey("fleet_job_id", str)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """The body, decoded and validated once into the handler's request type.

    Raises:
        ApiError: 408 for a client too slow to send it, 413 above the size limit, 400 for
            anything that is not the expected JSON (the message names the field).
    """
    settings = context(request).settings
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise _too_large(settings.max_body_bytes)
    try:
        if request.content.is_eof():  # the body came with the headers (the usual case): no timer
            body = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await request.read()
    except TimeoutError:
        raise ApiError(
            "request_timeout", f"the request body did not arrive within {settings.body_timeout_s:g}s"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(settings.max_body_bytes) from None
    return decode(body, decoder)


def decode(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    if not body:
        raise ApiError("invalid_request", "the request body is empty; send a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        found = _PATH.search(str(exc))
        raise ApiError("invalid_request", str(exc), param=found.group(1) if found else None) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError("invalid_request", "the request body is not valid JSON") from None


def _too_large(limit: int) -> ApiError:
    return ApiError("too_large", f"the request body exceeds this gateway's limit of {limit} bytes")


def json_response(body: Any, *, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(
        body=_encoder.encode(body),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + _encoder.encode(data) + b"\n\n"


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
            **headers,
        }
    )
    await response.prepare(request)
    return response


async def run_job(request: web.Request, job: Job) -> Result:
    """The job's successful Result (non-streamed).

    Raises:
        ApiError: the job failed (translated for HTTP), no router, or the timeout.
    """
    ctx = context(request)
    request[JOB_ID] = job.id or ""
    result = await ctx.fleet.answer(job, timeout_s=ctx.settings.request_timeout_s)
    if not result.success:
        raise error_for_result(result, retry_after_s=ctx.fleet.retry_after_s(), now=time.time())
    return result


def result_headers(result: Result) -> dict[str, str]:
    return router_headers(result.job_id, result)


def stream_headers(request: web.Request, job: Job, model_id: str) -> dict[str, str]:
    spec = context(request).catalog.spec(model_id)
    return router_headers(job.id or "", model=model_id, provider=spec.provider if spec else "")
