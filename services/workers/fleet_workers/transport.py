"""An httpx transport over aiohttp: the httpx API the adapters use, aiohttp's speed.

httpx's own connection pool (httpcore) falls from ~800 to ~300 requests/s as concurrency
rises to 64 on this class of machine; aiohttp's keeps going. ``AiohttpTransport`` is the
one-method ``AsyncBaseTransport`` of httpx (see STYLE rule 4) so adapters and tests keep
``httpx.AsyncClient`` and ``httpx.MockTransport`` unchanged.

Exceptions are mapped to the httpx exception an httpcore transport would raise, most
specific first, re-raised ``from`` the original (``map_aiohttp_errors``):

    aiohttp.ConnectionTimeoutError                      -> httpx.ConnectTimeout
    aiohttp.ServerTimeoutError (socket read)            -> httpx.ReadTimeout
    asyncio.TimeoutError                                -> httpx.PoolTimeout (before a connection), ReadTimeout
    aiohttp.ClientConnectorError                        -> httpx.ConnectError
    aiohttp.ClientPayloadError                          -> httpx.RemoteProtocolError (body cut short)
    aiohttp.ServerDisconnectedError, ClientOSError      -> httpx.ReadError
    aiohttp.ClientConnectionError (any other)           -> httpx.NetworkError
    aiohttp.ClientResponseError (bad status line, ...)  -> httpx.RemoteProtocolError
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import aiohttp
import httpx
import yarl

#: Set ``extensions={STREAM: True}`` on a request whose body should be read incrementally;
#: any other response is read whole inside the transport (one await instead of many).
STREAM = "fleet.stream"

_CHUNK_BYTES = 16 * 1024


@contextmanager
def map_aiohttp_errors(request: httpx.Request, *, connecting: bool = False) -> Iterator[None]:
    """Re-raise aiohttp's failures as the httpx exception an httpcore transport would raise."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:  # sock_read: no data for the read timeout
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except TimeoutError as exc:  # a bare timeout: waiting for a pooled connection, or reading
        kind = httpx.PoolTimeout if connecting else httpx.ReadTimeout
        raise kind(str(exc) or "timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise httpx.ReadError(str(exc) or "server disconnected", request=request) from exc
    except aiohttp.ClientConnectionError as exc:
        raise httpx.NetworkError(str(exc), request=request) from exc
    except aiohttp.ClientResponseError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    """A streamed response body, read chunk by chunk as aiohttp receives it."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class _Read(httpx.AsyncByteStream):
    """A body the transport has already read whole."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body


class Whole(NamedTuple):
    """An uncompressed answer ``AiohttpTransport.post`` read whole, as aiohttp gave it."""

    status: int
    #: aiohttp's case-insensitive, read-only view (``get`` works as on ``httpx.Headers``)
    headers: Mapping[str, str]
    body: bytes
    raw_headers: tuple[tuple[bytes, bytes], ...]
    reason: str | None

    def as_response(self) -> httpx.Response:
        """The ``httpx.Response`` ``handle_async_request`` would have made of it."""
        return _read_response(self.status, self.raw_headers, self.reason, self.body)


def _read_response(status: int, raw_headers, reason: str | None, body: bytes) -> httpx.Response:
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (reason or "").encode()}
    read = httpx.Response(status, headers=raw_headers, stream=_Read(body), extensions=extensions)
    # Already whole and plain: spare httpx its decoder pipeline. No public API does this:
    # Response(content=...) adds a Content-Length header the provider did not send and
    # runs the body through read() again; setting _content is what read() ends with.
    read._content = body
    return read


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through one aiohttp ``ClientSession`` (created on first use).

    Parameters:
        limits: ``max_connections`` caps the pool (None: unbounded); keep-alive expiry is kept.
    """

    def __init__(self, *, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits()
        self._session: aiohttp.ClientSession | None = None
        # per-request conversions cached: adapters reuse one URL object and one timeout
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}
        # the last request headers and timeout ``post`` converted (adapters reuse one of each)
        self._last_headers: tuple[httpx.Headers, list[tuple[str, str]]] | None = None
        self._last_timeout: tuple[httpx.Timeout, aiohttp.ClientTimeout] | None = None

    def _url(self, url: httpx.URL) -> yarl.URL:
        # httpx.Request copies the URL object, so the cache is keyed by its text
        text = str(url)
        converted = self._urls.get(text)
        if converted is None:
            if len(self._urls) > 1024:
                self._urls.clear()
            converted = self._urls[text] = yarl.URL(text, encoded=True)
        return converted

    def _timeout(self, timeout: dict) -> aiohttp.ClientTimeout:
        key = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=key[0], sock_connect=key[1], sock_read=key[2]
            )
        return found

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 15.0,
            ttl_dns_cache=300,
        )
        # no automatic decompression, cookies or raise_for_status: httpx does all of that
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        # latin-1 is how HTTP/1.1 carries header bytes; decoding here skips httpx's
        # per-access encoding detection (the costliest part of a small request)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            response = await session.request(
                request.method,
                self._url(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                timeout=self._timeout(request.extensions.get("timeout", {})),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            with map_aiohttp_errors(request, connecting=True):  # only on the failure path
                raise exc
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()}
        if request.extensions.get(STREAM):
            stream = _Body(response, request)
            return httpx.Response(response.status, headers=response.raw_headers, stream=stream, extensions=extensions)
        try:
            body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            with map_aiohttp_errors(request):
                raise exc
        finally:
            response.release()
        if "Content-Encoding" in response.headers:  # let httpx decode it
            return httpx.Response(response.status, headers=response.raw_headers, content=body, extensions=extensions)
        return _read_response(response.status, response.raw_headers, response.reason, body)

    async def post(
        self, url: httpx.URL, headers: httpx.Headers, body: bytes, timeout: httpx.Timeout
    ) -> Whole | httpx.Response:
        """POST ``body`` and read the answer whole without building httpx objects (an
        ``httpx.Request``, its header copies, an ``httpx.Response``): a visible share of a
        worker's CPU per call. A compressed answer comes back as the ``httpx.Response``
        ``handle_async_request`` makes, read and decoded. aiohttp adds Host and
        Content-Length, as ``handle_async_request``'s callers did by hand.

        Raises:
            httpx.TransportError: as ``handle_async_request`` (``map_aiohttp_errors``).
            httpx.DecodingError: a compressed body that does not decode.
        """
        session = self._session or self._open()
        try:
            response = await session.request(
                "POST",
                self._url(url),
                headers=self._header_list(headers),
                data=body,
                allow_redirects=False,
                timeout=self._timeout_of(timeout),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            with map_aiohttp_errors(httpx.Request("POST", url), connecting=True):  # only on the failure path
                raise exc
        try:
            read = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            with map_aiohttp_errors(httpx.Request("POST", url)):
                raise exc
        finally:
            response.release()
        if "Content-Encoding" in response.headers:  # let httpx decode it
            extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()}
            decoded = httpx.Response(response.status, headers=response.raw_headers, content=read, extensions=extensions)
            await decoded.aread()
            return decoded
        return Whole(response.status, response.headers, read, response.raw_headers, response.reason)

    def _header_list(self, headers: httpx.Headers) -> list[tuple[str, str]]:
        last = self._last_headers
        if last is not None and last[0] is headers:
            return last[1]
        # latin-1 is how HTTP/1.1 carries header bytes (as in handle_async_request)
        converted = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]
        self._last_headers = (headers, converted)
        return converted

    def _timeout_of(self, timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
        last = self._last_timeout
        if last is not None and last[0] is timeout:
            return last[1]
        converted = self._timeout(timeout.as_dict())
        self._last_timeout = (timeout, converted)
        return converted

    async def aclose(self) -> None:
        self._urls.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class LeanAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose ``send`` goes straight to the transport.

    The adapters use no auth flows, redirects, cookies or event hooks, and httpx spends
    most of its per-request time on them (cookie extraction alone parses every response's
    headers into an ``email.message``). Everything else, including ``MockTransport`` in
    tests, works as with the plain client.
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs) -> None:
        super().__init__(transport=transport, **kwargs)
        self._lean_transport = transport

    @property
    def aiohttp_transport(self) -> AiohttpTransport | None:
        """The transport when it is aiohttp's: ``post`` is its lean path for whole answers."""
        transport = self._lean_transport
        return transport if isinstance(transport, AiohttpTransport) else None

    async def send(self, request: httpx.Request, *, stream: bool = False, **kwargs) -> httpx.Response:
        if kwargs.get("auth") not in (None, httpx.USE_CLIENT_DEFAULT) or kwargs.get("follow_redirects") is True:
            return await super().send(request, stream=stream, **kwargs)
        request.extensions.setdefault("timeout", self.timeout.as_dict())
        response = await self._lean_transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response
