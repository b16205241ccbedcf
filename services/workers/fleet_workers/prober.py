"""The health prober: free model-list calls only, one prober per provider fleet-wide.

Every worker process of a provider is a candidate; the one holding the NATS KV lease
``prober.<provider>`` probes (the others stand by and take over when its lease goes
stale). Probing lives with the workers because a provider's key and base URL belong to
its workers (they may run on other machines, LM Studio's next to LM Studio), so a probe
sees exactly what the calls see. Outcomes, per model of the provider:

    key rejected (auth)              down until the key changes or a probe is accepted
    server unreachable / 5xx / 429   cooling; the cooldown doubles with each failed probe
                                     (``cooldown_s`` .. ``MAX_PROBE_COOLDOWN_S``)
    listed (LM Studio: loaded, or    up; from down or a failed probe it ramps back over
      JIT / autoload allowed)        ``ramp_s``
    not listed / not loaded          down (``missing`` / ``not_loaded``)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from fleet_shared import availability as av
from fleet_shared.availability import Availability, HealthBoard
from fleet_shared.config import ProviderEndpoint, Settings
from fleet_shared.kv import Lease
from fleet_shared.registry import ModelSpec, Registry
from fleet_workers.listing import ListedModel, list_models
from fleet_workers.providers.base import ProviderError

log = logging.getLogger("fleet.prober")

MAX_PROBE_COOLDOWN_S = 300.0


class Prober:
    """Probe one provider every ``probe_interval_s`` while holding the lease."""

    def __init__(
        self,
        provider: str,
        endpoint: ProviderEndpoint,
        client: httpx.AsyncClient,
        board: HealthBoard,
        lease: Lease,
        registry: Registry,
        settings: Settings,
    ) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.client = client
        self.board = board
        self.lease = lease
        self.settings = settings
        self.models = [m for m in registry.models.values() if m.provider == provider]
        self.probes = 0  # finished by this process, answered or not
        self.failed_probes = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"prober-{self.provider}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.lease.release()
        await self.client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                if await self.lease.acquire():
                    await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS away, a bug: the next round tries again
                log.exception("%s: probe round failed", self.provider)
            await asyncio.sleep(self.settings.probe_interval_s)

    async def probe_once(self) -> None:
        """List the provider's models once and report every model's availability."""
        try:
            listing = await list_models(self.provider, self.endpoint, self.client)
        except ProviderError as exc:
            self.probes += 1
            self.failed_probes += 1
            log.warning("%s: probe failed: %s", self.provider, exc.message)
            for spec in self.models:
                await self.board.report(spec.id, self._failed(spec, exc))
            return
        self.probes += 1
        for spec in self.models:
            found = listing.find(spec.provider_model)
            await self.board.report(spec.id, self._listed(spec, found))
            if found is not None and found.context_length:  # e.g. LM Studio's loaded context length
                await self.board.report_window(spec.id, found.context_length)

    def _failed(self, spec: ModelSpec, exc: ProviderError) -> Availability:
        if exc.code == "auth":
            fingerprint = self.endpoint.api_key.fingerprint() if self.endpoint.api_key else ""
            return av.down("auth", key_fingerprint=fingerprint)
        if exc.code == "rate_limited" and exc.retry_after_s is not None:
            return av.cooldown("rate_limited", exc.retry_after_s, ramp_s=self.settings.ramp_s)
        current = self.board.get(spec.id)
        failures = current.failures + 1 if current.phase(time.time()) != "up" else 1
        wait = min(MAX_PROBE_COOLDOWN_S, self.settings.cooldown_s * 2 ** (failures - 1))
        return av.cooldown("probe_failed", wait, ramp_s=self.settings.ramp_s, failures=failures)

    def _listed(self, spec: ModelSpec, found: ListedModel | None) -> Availability:
        """Availability of ``spec`` from its entry in the provider's list (None: not listed)."""
        if found is None:
            return av.down("missing")
        if not found.loaded and not (self.settings.lmstudio_jit or self.settings.lmstudio_autoload):
            return av.down("not_loaded")
        if self.board.get(spec.id).phase(time.time()) == "up":
            return av.UP
        return av.recovering(ramp_s=self.settings.ramp_s)
