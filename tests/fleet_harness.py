"""An in-process fleet for integration tests: emulators, router, one worker per provider
and the ledger, each the same class its ``python -m`` entry point runs, on a private
nats-server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import msgspec
import nats

from fleet_emulators import running_emulator
from fleet_ledger import Ledger
from fleet_router.service import Router
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.schema import Result, result_decoder
from fleet_shared.subjects import PROVIDERS, Subjects
from fleet_workers.service import Worker


class Fleet:
    """Handles for a running test fleet plus a raw NATS client that knows only the contract."""

    def __init__(self, settings: Settings, nc, services: dict) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.nc = nc
        self.js = nc.jetstream()
        self.services = services

    async def request(self, payload: dict | bytes, *, timeout: float = 30.0, headers: dict | None = None) -> Result:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        msg = await self.nc.request(self.subjects.request, data, timeout=timeout, headers=headers)
        return result_decoder.decode(msg.data)

    async def submit(self, payload: dict | bytes, *, msg_id: str | None = None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        return await self.js.publish(self.subjects.submit, data, headers=headers)

    async def result(self, job_id: str, *, timeout: float = 30.0) -> Result:
        """Wait for (or read back) the Result of job_id from the RESULTS stream."""
        sub = await self.js.subscribe(self.subjects.result(job_id), ordered_consumer=True)
        try:
            msg = await sub.next_msg(timeout=timeout)
        finally:
            await sub.unsubscribe()
        return result_decoder.decode(msg.data)


class LedgerWatch:
    """Collects the ledger's commit notices, so tests wait on them instead of sleeping.

    With ``decisions=True`` (the notices on ledger_committed_events are subscribed too) a
    job counts once both its Result and its decision are committed: the ledger's two
    consumers commit those independently, in either order.
    """

    def __init__(self, *, decisions: bool = False) -> None:
        self.committed: set[str] = set()
        self.decided: set[str] = set()
        self.decisions = decisions
        self._changed = asyncio.Condition()

    async def on_msg(self, msg) -> None:
        body = msgspec.json.decode(msg.data)
        async with self._changed:
            self.committed.update(body.get("job_ids", []))
            self.decided.update(body.get("decision_job_ids", []))
            self._changed.notify_all()

    async def wait_for(self, job_ids, timeout: float = 30.0) -> None:
        wanted = set(job_ids)

        async def done() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: wanted <= self.committed and (not self.decisions or wanted <= self.decided)
                )

        await asyncio.wait_for(done(), timeout)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, endpoints: dict[str, ProviderEndpoint], *, ledger: bool = True
) -> AsyncIterator[dict]:
    """A worker per endpoint, a router (and the ledger), running; yields them by name
    (provider, "router", "ledger"); stops them all."""
    async with contextlib.AsyncExitStack() as stack:
        services: dict = {}
        for provider, endpoint in endpoints.items():
            services[provider] = await stack.enter_async_context(Worker(settings, provider, endpoint=endpoint))
        services["router"] = await stack.enter_async_context(Router(settings))
        if ledger:
            services["ledger"] = await stack.enter_async_context(Ledger(settings))
        tasks = [asyncio.create_task(service.run()) for service in services.values()]
        try:
            yield services
        finally:
            for service in services.values():
                await service.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_fleet(settings: Settings, *, emulator_latency_ms: float = 0.0):
    """Start everything; yield (Fleet, LedgerWatch); stop everything."""
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(settings.nats_url)
        stack.push_async_callback(nc.drain)
        watch = LedgerWatch(decisions=True)
        subjects = Subjects(settings.subject_prefix)
        await nc.subscribe(subjects.ledger_committed, cb=watch.on_msg)
        await nc.subscribe(subjects.ledger_committed_events, cb=watch.on_msg)
        endpoints = {}
        for provider in PROVIDERS:
            base_url = await stack.enter_async_context(running_emulator(provider, latency_ms=emulator_latency_ms))
            endpoints[provider] = ProviderEndpoint(provider, base_url, Secret("test-key"))
        services = await stack.enter_async_context(serving(settings, endpoints))
        yield Fleet(settings, nc, services), watch
