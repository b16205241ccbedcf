"""What answers already: short probes of NATS, PostgreSQL, LM Studio and the fleet's services.

``make up`` uses them to decide what to start (a server that answers is used, not
replaced) and ``make status`` / readiness to tell which processes are healthy. Every probe
is bounded in time and uses the fleet's NATS credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats

from fleet_local.embedded import postgres_answers
from fleet_local.procs import RunDir, read_pids
from fleet_shared import bus
from fleet_shared.config import Settings

#: The database `up` creates (and uses) on a PostgreSQL it finds.
DATABASE_NAME = "llm_router"
#: How long one `$SRV.PING` round collects replies (also the readiness poll interval).
PING_WINDOW_S = 0.5


async def _no_error(_: Exception) -> None:
    pass  # probing a closed port is expected to fail; nats-py would log it as an error


async def nats_connect(url: str, timeout_s: float = 5.0) -> nats.NATS:
    """A short-lived probing connection, with the credentials the fleet uses (NATS_USER,
    NATS_TOKEN, NATS_CREDS, TLS …). (nats-py treats max_reconnect_attempts=0 as "retry
    forever" during the first connect, hence 1 and an outer deadline.)"""
    return await asyncio.wait_for(
        nats.connect(
            servers=url.split(","), connect_timeout=2, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=_no_error,
            **bus.credentials(Settings.from_env()),
        ),
        timeout_s,
    )  # fmt: skip


#: What a probe of an absent or JetStream-less server raises.
_NATS_DOWN = (OSError, asyncio.TimeoutError, nats.errors.Error)


async def nats_has_jetstream(url: str) -> bool:
    try:
        nc = await nats_connect(url)
    except _NATS_DOWN:
        return False
    try:
        await nc.jetstream(timeout=2).account_info()  # fails when JetStream is off
        return True
    except _NATS_DOWN:
        return False
    finally:
        await nc.close()


async def ensure_database(dsn: str) -> str:
    """Create ``llm_router`` when ``dsn`` names the admin database; its DSN, else ``dsn``."""
    parts = urlsplit(dsn)
    if parts.path.strip("/") not in ("", "postgres"):
        return dsn  # the user chose a database: respect it
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME):
            await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    except (asyncpg.DuplicateDatabaseError, asyncpg.InsufficientPrivilegeError):
        pass  # created concurrently, or not allowed: fall through and check
    finally:
        await conn.close()
    candidate = urlunsplit(parts._replace(path=f"/{DATABASE_NAME}"))
    return candidate if await postgres_answers(candidate) else dsn


def lmstudio_answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url.rstrip('/')}/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def port_open(port: int | None) -> bool:
    if not port:
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def redact(url: str) -> str:
    """The URL without its password (DATABASE_URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':')[0]}:***@{hostport}"))


# -- the fleet's services ---------------------------------------------------------------


async def ping_services(nc: nats.NATS, window_s: float = PING_WINDOW_S) -> dict[str, set[str]]:
    """Every micro service answering ``$SRV.PING`` within ``window_s``: name -> the pids
    that answered (a provider's N workers share one service name)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    answered: dict[str, set[str]] = {}
    try:
        await nc.publish("$SRV.PING", b"", reply=inbox)
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                body = json.loads(msg.data)
                answered.setdefault(body["name"], set()).add(str((body.get("metadata") or {}).get("pid")))
    finally:
        await sub.unsubscribe()
    return answered


async def health(run: RunDir, nats_url: str | None) -> dict[str, bool | None]:
    """Per pid file: services answered a ping (from that very pid), emulators and servers
    listen (None: n/a)."""
    infos = read_pids(run)
    answered: dict[str, set[str]] = {}
    if nats_url and any("service" in i for i in infos.values()):
        with contextlib.suppress(*_NATS_DOWN):
            nc = await nats_connect(nats_url)
            try:
                answered = await ping_services(nc)
            finally:
                await nc.close()
    result: dict[str, bool | None] = {}
    for name, info in infos.items():
        if "service" in info:
            result[name] = str(info["pid"]) in answered.get(info["service"], set())
        else:
            result[name] = port_open(info["port"]) if "port" in info else None
    return result


def ops_url(info: dict) -> str | None:
    """The ops endpoint of a process started with FLEET_METRICS_PORT (None: it has none)."""
    port = info.get("metrics_port")
    return f"http://127.0.0.1:{port}" if port else None


async def ops_health(run: RunDir, timeout_s: float = 2.0) -> dict[str, tuple[bool, bool]]:
    """Per process with an ops endpoint: (``/healthz`` answers 200, ``/readyz`` answers 200)."""
    urls = {name: url for name, info in read_pids(run).items() if (url := ops_url(info))}

    async def ok(http: httpx.AsyncClient, url: str) -> bool:
        try:
            return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def one(http: httpx.AsyncClient, base: str) -> tuple[bool, bool]:
        live, ready = await asyncio.gather(ok(http, base + "/healthz"), ok(http, base + "/readyz"))
        return live, ready

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        answers = await asyncio.gather(*(one(http, url) for url in urls.values()))
    return dict(zip(urls, answers))


async def serves_dashboard(gateway: str, timeout_s: float = 2.0) -> bool:
    """Whether the gateway at ``gateway`` serves ``/dashboard`` (200)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            return (await http.get(gateway + "/dashboard")).status_code == 200
    except httpx.HTTPError:
        return False
