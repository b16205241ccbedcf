"""A lean HTTP/1.1 keep-alive client for load generation (what wrk is to curl).

The load generator shares the machine with what it measures, so its own CPU per request
counts against every path's throughput. aiohttp's client costs ~0.12 ms per request at 64
in flight on this class of machine, against ~0.05 ms for nats-py's request-reply: a gateway
measured with it pays 0.07 ms of the *instrument's* CPU per request that the NATS path does
not. This client sends a prepared request over a pool of keep-alive connections and parses
only what a load generator needs (status, ``content-length`` or chunked body), in one
``asyncio.Protocol`` per connection: no streams, no header objects, no per-request task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit


def prepare(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[str, int, bytes]:
    """(host, port, the request's bytes) of a POST of ``body`` to ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its response to ``waiter``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed mid-response: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        parsed = _parse(self.buffer)
        if parsed is not None and self.waiter is not None and not self.waiter.done():
            status, body, used = parsed
            del self.buffer[:used]
            self.waiter.set_result((status, body))


def _parse(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of a complete response at the start of ``buf``, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
        if len(buf) < start + length:
            return None
        return status, bytes(buf[start : start + length]), start + length
    if b"\r\ntransfer-encoding: chunked" in head:
        body, pos = bytearray(), start
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            if len(buf) < line_end + 2 + size + 2:
                return None
            if size == 0:
                return status, bytes(body), line_end + 4
            body += buf[line_end + 2 : line_end + 2 + size]
            pos = line_end + 2 + size + 2
    return status, b"", start  # no body (e.g. 204)


class LeanClient:
    """``await client.post(prepared)`` -> (status, body), over pooled keep-alive connections."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(self, prepared: tuple[str, int, bytes], timeout_s: float = 30.0) -> tuple[int, bytes]:
        host, port, request = prepared
        idle = self._idle.setdefault((host, port), [])
        while idle and idle[-1].closed:
            idle.pop()
        if idle:
            conn = idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Connection, host, port)
        conn.waiter = asyncio.get_running_loop().create_future()
        if conn.transport is None:  # create_connection returns after connection_made
            raise ConnectionError(f"no transport to {host}:{port}")
        conn.transport.write(request)
        try:
            answer = await asyncio.wait_for(conn.waiter, timeout_s)
        except BaseException:
            conn.transport.close()  # a response half read cannot be reused
            raise
        conn.waiter = None
        idle.append(conn)
        return answer

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
