"""A test fleet whose emulators the test can see into (request counts, LM Studio state) and
whose workers get chosen keys; otherwise the same services as ``fleet_harness``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import nats

from fleet_emulators import emulator_server
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.subjects import PROVIDERS, Subjects
from tests.fleet_harness import Fleet, LedgerWatch, serving

TEST_KEY = "sk-fleet-test-3a4b5c6d7e8f"


async def eventually(check: Callable[[], Any], *, timeout_s: float = 15.0, every_s: float = 0.02) -> Any:
    """Wait (bounded) until ``check()`` is truthy; returns its value. Polls an observable state."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def provider_fleet(
    settings: Settings,
    *,
    keys: dict[str, str | None] | None = None,
    emulator_options: dict[str, dict] | None = None,
    endpoints: Callable[[str, str], ProviderEndpoint] | None = None,
    ledger: bool = True,
):
    """Start emulators, workers, a router (and the ledger); yield (Fleet, LedgerWatch, emulators)."""
    keys = keys or {}
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(settings.nats_url)
        stack.push_async_callback(nc.drain)
        watch = LedgerWatch()
        await nc.subscribe(Subjects(settings.subject_prefix).ledger_committed, cb=watch.on_msg)
        emulators: dict = {}
        chosen: dict[str, ProviderEndpoint] = {}
        for provider in PROVIDERS:
            options = (emulator_options or {}).get(provider, {})
            handle = await stack.enter_async_context(emulator_server(provider, **options))
            emulators[provider] = handle
            if endpoints is not None:
                chosen[provider] = endpoints(provider, handle.url)
            else:
                key = keys.get(provider, TEST_KEY)
                chosen[provider] = ProviderEndpoint(provider, handle.url, Secret(key) if key else None)
        services = await stack.enter_async_context(serving(settings, chosen, ledger=ledger))
        yield Fleet(settings, nc, services), watch, emulators
