"""Build, run and stop an emulator: ``create_app``, ``running_emulator`` and ``serve``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fleet_emulators.anthropic import AnthropicEmulator
from fleet_emulators.base import Emulator
from fleet_emulators.gemini import GeminiEmulator
from fleet_emulators.lmstudio import LMStudioEmulator
from fleet_emulators.openai import OpenAIEmulator

#: provider name -> its emulator
EMULATORS: dict[str, type[Emulator]] = {
    "lmstudio": LMStudioEmulator,
    "openai": OpenAIEmulator,
    "anthropic": AnthropicEmulator,
    "gemini": GeminiEmulator,
}

#: What the SDKs (and our adapters) append to host:port to get their base URL.
BASE_PATH = {"lmstudio": "/v1", "openai": "/v1", "anthropic": "", "gemini": ""}

#: The largest request body accepted (Anthropic's limit; aiohttp's default is 1 MiB).
MAX_REQUEST_BYTES = 32 * 1024 * 1024

#: Where an app keeps its emulator.
EMULATOR_KEY = web.AppKey("emulator", Emulator)

#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn). aiohttp's
#: default, 128, overflowed when a worker opened a few thousand connections within a second
#: (a slow provider, every call holding one): the dropped SYNs were retried a second later,
#: a second added to those calls. A provider's server takes them at once.
LISTEN_BACKLOG = 4096

#: Graceful-shutdown wait for requests still in flight (hanging ones are cancelled first).
SHUTDOWN_TIMEOUT_S = 5.0


def create_app(provider: str, *, latency_ms: float = 0.0, **options: Any) -> web.Application:
    """An aiohttp app speaking ``provider``'s HTTP API (the emulator is ``app[EMULATOR_KEY]``).

    Parameters:
        provider: lmstudio, openai, anthropic or gemini.
        latency_ms: added before every chat answer (on top of any marker's latency).
        options: provider-specific emulator settings (LM Studio: ``loaded``, ``jit``, ``load_ms``).

    Raises:
        ValueError: unknown provider.
    """
    if provider not in EMULATORS:
        raise ValueError(f"no emulator for provider {provider!r}; known: {sorted(EMULATORS)}")
    emulator = EMULATORS[provider](latency_ms=latency_ms, **options)
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.add_routes(emulator.routes())
    app.add_routes([web.get("/_emulator/calls", emulator.served)])
    app.on_shutdown.append(emulator.on_shutdown)
    app[EMULATOR_KEY] = emulator
    return app


def base_url(provider: str, host: str, port: int) -> str:
    return f"http://{host}:{port}{BASE_PATH[provider]}"


@dataclass(frozen=True, slots=True)
class EmulatorHandle:
    url: str  # the base URL, as the SDKs take it
    emulator: Emulator  # live state: ``calls``, and LM Studio's ``loaded`` / ``jit``


@asynccontextmanager
async def emulator_server(
    provider: str, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0, **options: Any
) -> AsyncIterator[EmulatorHandle]:
    """Serve ``provider``'s emulator while the block runs; yields its URL and the emulator.

    ``port=0`` lets the OS pick a free port.
    """
    app = create_app(provider, latency_ms=latency_ms, **options)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that gives up cancels its request's handler
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
        bound_port = runner.addresses[0][1]
        yield EmulatorHandle(base_url(provider, host, bound_port), app[EMULATOR_KEY])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_emulator(provider: str, **kwargs: Any) -> AsyncIterator[str]:
    """Serve ``provider``'s emulator while the block runs; yields its base URL."""
    async with emulator_server(provider, **kwargs) as handle:
        yield handle.url


async def serve(provider: str, *, host: str, port: int, latency_ms: float = 0.0, **options: Any) -> None:
    """Run one emulator until SIGTERM or SIGINT, announcing its base URL on stdout."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_emulator(provider, host=host, port=port, latency_ms=latency_ms, **options) as url:
        print(f"emulator {provider} listening on {url}", flush=True)
        await stop.wait()
