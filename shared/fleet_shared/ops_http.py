"""The operations endpoint of a fleet process: ``/metrics``, ``/healthz``, ``/readyz``.

    GET /metrics   Prometheus text exposition of the process's ``FleetMetrics`` (its
                   scrape-time sources are refreshed first)
    GET /healthz   200 while the process's event loop answers (liveness: restart me if not)
    GET /readyz    200 when every readiness check passes, else 503 naming the failed ones
                   (readiness: send me work / count me in the rollout)

Why a small asyncio server of our own rather than ``aioprometheus.service.Service``: that
Service is built on aiohttp, which aioprometheus does not install (it is the ``aiohttp``
extra) and which the router and the ledger do not otherwise need; shared would pull it
into every service for three GET routes, and Service serves /metrics only, so /healthz
and /readyz would need aiohttp routes added to its private application anyway. What the
three routes need is one request per connection, no body, no keep-alive: ~100 lines on
``asyncio.start_server``, bounded in header size and time, with aioprometheus's own
renderer for the exposition format.

``python -m fleet_shared.ops_http /readyz`` probes a running process's endpoint on
FLEET_METRICS_PORT (exit 0 when it answers 200): the health check of the container images,
which ship no curl.

Readiness is a mapping of named checks, each an async callable returning True when ready
(``nats_connected``, ``postgres_answers``); a check that raises or exceeds its timeout
counts as not ready. Only the exception's type is shown (a driver's message may carry a
host name or a user), never its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fleet_shared.metrics import FleetMetrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]

#: A request's line and headers at most (a scraper sends a few hundred bytes).
MAX_HEAD_BYTES = 8192
#: Time a client has to send its request.
READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


class OpsServer:
    """Serve the three routes on ``host:port`` (port 0: any free port, see ``port``).

    Parameters:
        metrics: the process's metrics.
        checks: readiness checks by name (none: ready as soon as it serves).
        host: interface to bind ("" or "0.0.0.0": every interface, as in a container).
        check_timeout_s: a readiness check slower than this fails.
    """

    def __init__(
        self,
        metrics: FleetMetrics,
        *,
        checks: Mapping[str, Check] | None = None,
        host: str = "",
        port: int = 0,
        check_timeout_s: float = 2.0,
    ) -> None:
        self.metrics = metrics
        self.checks = dict(checks or {})
        self.host = host
        self.requested_port = port
        self.check_timeout_s = check_timeout_s
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (the one chosen by the OS when asked for 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the ops server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host or None, self.requested_port, limit=MAX_HEAD_BYTES
        )
        log.info("ops endpoint on port %d: /metrics /healthz /readyz", self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    # -- one connection, one request --------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, headers, body = await self._respond(reader)
            head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            headers = {**headers, "Content-Length": str(len(body)), "Connection": "close"}
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception:
            log.exception("ops endpoint: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            return 400, _TEXT, b"bad request\n"
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return 400, _TEXT, b"bad request\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, {**_TEXT, "Allow": "GET, HEAD"}, b"method not allowed\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            await self.metrics.refresh()
            body, headers = self.metrics.render(_accept(header_lines))
            return 200, headers, body
        if path == "/healthz":
            return 200, _TEXT, b"ok\n"
        if path == "/readyz":
            ready, report = await self.readiness()
            return (200 if ready else 503), _TEXT, report.encode()
        return 404, _TEXT, b"not found: try /metrics, /healthz or /readyz\n"

    async def readiness(self) -> tuple[bool, str]:
        """(every check passed, a line per check)."""
        names = list(self.checks)
        outcomes = await asyncio.gather(*(self._check(self.checks[n]) for n in names))
        ready = all(ok for ok, _ in outcomes)
        lines = [f"{name}: {detail}" for name, (_, detail) in zip(names, outcomes)]
        return ready, "\n".join(["ready" if ready else "not ready", *lines]) + "\n"

    async def _check(self, check: Check) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self.check_timeout_s):
                ok = await check()
        except TimeoutError:
            return False, f"no answer within {self.check_timeout_s:g}s"
        except Exception as exc:
            return False, f"failed ({type(exc).__name__})"
        return bool(ok), "ok" if ok else "not ready"


def _accept(header_lines: list[str]) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in header_lines if line.lower().startswith("accept:")]


def nats_connected(nc: Any) -> Check:
    """Ready while the NATS client is connected (not reconnecting, not closed)."""

    async def check() -> bool:
        return bool(nc.is_connected)

    return check


def postgres_answers(pool: Any) -> Check:
    """Ready while the pool can run ``SELECT 1`` (an asyncpg ``Pool``; typed loosely so that
    shared does not depend on asyncpg)."""

    async def check() -> bool:
        return bool(await pool.fetchval("SELECT 1") == 1)

    return check


def probe(path: str = "/healthz", *, port: int | None = None, host: str = "127.0.0.1", timeout_s: float = 2.0) -> int:
    """0 when ``http://host:port<path>`` answers 200, else 1 (``port``: FLEET_METRICS_PORT)."""
    port = port if port is not None else int(os.environ.get("FLEET_METRICS_PORT") or 0)
    if not port:
        print("FLEET_METRICS_PORT is not set: no ops endpoint to probe", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout_s) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(probe(sys.argv[1] if len(sys.argv) > 1 else "/healthz"))
