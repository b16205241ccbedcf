"""The HTTP round trips every adapter makes: POST JSON and read a body, or POST JSON and
read server-sent events; either way a failure is classified and the key never leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

import httpx
import msgspec

from fleet_workers.providers.base import ProviderError, ProviderRequest
from fleet_workers.providers.errors import error_from_response, map_provider_errors
from fleet_workers.transport import STREAM, LeanAsyncClient, Whole

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def _request(
    client: httpx.AsyncClient, url: httpx.URL, payload: Any, headers: httpx.Headers, *, stream: bool
) -> httpx.Request:
    # Built directly instead of client.post(), with the Host and Content-Length headers
    # httpx would add: skips merging the client's defaults and httpx's content encoding
    # on every call, most of httpx's per-request cost.
    body = _encoder.encode(payload)
    extensions: dict[str, Any] = {"timeout": client.timeout.as_dict()}
    if stream:
        extensions[STREAM] = True
    prepared = httpx.Headers([(b"Host", url.netloc), (b"Content-Length", b"%d" % len(body)), *headers.raw])
    request = httpx.Request("POST", url, headers=prepared, stream=httpx.ByteStream(body), extensions=extensions)
    request.read()  # the body is in memory: make request.content available, as content= would
    return request


async def post_json(
    client: httpx.AsyncClient,
    url: httpx.URL,
    payload: Any,
    *,
    headers: httpx.Headers,
    decoder: msgspec.json.Decoder[T],
    provider: str,
    secret: str | None,
) -> tuple[T, Mapping[str, str]]:
    """POST ``payload`` as JSON and decode a 2xx body with ``decoder``; returns it and the
    headers (case-insensitive ``get``).

    Raises:
        ProviderError: any failure, classified (see ``fleet_workers.providers.errors``).
    """
    with map_provider_errors(provider, secret=secret):
        lean = client.aiohttp_transport if isinstance(client, LeanAsyncClient) else None
        if lean is not None:  # the worker's own client: no httpx objects per call
            answer = await lean.post(url, headers, _encoder.encode(payload), client.timeout)
            if isinstance(answer, Whole):
                if 200 <= answer.status < 300:
                    return decoder.decode(answer.body), answer.headers
                answer = answer.as_response()
            response = answer
        else:
            response = await client.send(_request(client, url, payload, headers, stream=False))
        if not response.is_success:
            raise error_from_response(provider, response, secret=secret)
        return decoder.decode(response.content), response.headers


class SSEvent(NamedTuple):
    event: str | None
    data: str


@asynccontextmanager
async def post_sse(
    client: httpx.AsyncClient,
    url: httpx.URL,
    payload: Any,
    *,
    headers: httpx.Headers,
    provider: str,
    secret: str | None,
    timeouts: ProviderRequest,
) -> AsyncIterator[tuple[AsyncIterator[SSEvent], httpx.Headers]]:
    """POST ``payload`` and yield the response's server-sent events as they arrive;
    ``timeouts`` is the request whose stall and first-token limits apply.

    Raises:
        ProviderError: a non-2xx answer, a transport failure (a cut stream is ``connection``),
            or ``timeout`` when no data came for ``stall_timeout_s`` (before the first line:
            for the longer of it and ``first_token_timeout_s``, as a model may think first).
    """
    stall_timeout_s, first_token_timeout_s = timeouts.stall_timeout_s, timeouts.first_token_timeout_s
    with map_provider_errors(provider, secret=secret):
        response = await client.send(_request(client, url, payload, headers, stream=True), stream=True)
        try:
            if not response.is_success:
                await response.aread()
                raise error_from_response(provider, response, secret=secret)
            first_s = max(first_token_timeout_s or 0.0, stall_timeout_s) if stall_timeout_s else None
            lines = _stall_guard(response.aiter_lines(), stall_timeout_s, provider, first_s)
            yield _events(lines), response.headers
        finally:
            await response.aclose()


async def _stall_guard(
    lines: AsyncIterator[str], stall_s: float | None, provider: str, first_s: float | None
) -> AsyncIterator[str]:
    iterator = aiter(lines)
    limit = first_s
    while True:
        try:
            async with asyncio.timeout(limit):
                line = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ProviderError("timeout", f"{provider}: stream stalled, no data for {limit:g}s") from None
        limit = stall_s
        yield line


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[SSEvent]:
    """Server-sent events per the WHATWG spec: ``event:``/``data:`` lines, a blank line ends one."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SSEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield SSEvent(event, "\n".join(data))


def stream_cut(provider: str, waited_for: str) -> ProviderError:
    """The stream ended cleanly but before its terminal event: the answer is incomplete."""
    return ProviderError("server_error", f"{provider}: stream ended before {waited_for}; the answer is incomplete")


def reveal(api_key: Any) -> str | None:
    """The key's plain text (``api_key`` is a ``Secret`` or None), for headers only."""
    return api_key.reveal() if api_key else None
