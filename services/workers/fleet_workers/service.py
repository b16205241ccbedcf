"""A provider worker process: consumes <p>.dispatch.<provider> and calls the model.

The messages are handled in ``fleet_workers.handler`` (one Dispatch in, an outcome out;
the shared loop settles). This module is the process: its consumer, the fleet state the
handler needs (rate limiter, health reporter), the prober and the LM Studio loader.
"""

from __future__ import annotations

import logging

import httpx

from fleet_shared.budget import BudgetBook, BudgetConfig
from fleet_shared.config import ProviderEndpoint, Settings, provider_endpoint
from fleet_shared.kv import Lease, open_bucket
from fleet_shared.ratelimit import BUCKET_TTL_S, RateLimiter
from fleet_shared.registry import Registry
from fleet_shared.service import FleetService
from fleet_workers.gate import Gate
from fleet_workers.handler import DispatchHandler
from fleet_workers.lmstudio import LMStudioLoader
from fleet_workers.prober import Prober
from fleet_workers.providers import make_adapter
from fleet_workers.providers.base import ProviderAdapter
from fleet_workers.reporting import HealthReporter
from fleet_workers.transport import AiohttpTransport, LeanAsyncClient

log = logging.getLogger("fleet.worker")

#: GC-tracked objects one provider call keeps alive while it waits (its task and coroutine
#: frames, the aiohttp request and response, timers, the decoded Dispatch): ~150 measured
LIVE_OBJECTS_PER_CALL = 200
#: ... but no higher: what reference cycles a failing provider's calls may leave behind
#: waits for a collection at most this many allocations (the timed ones come sooner)
MAX_GEN0_THRESHOLD = 1_000_000


def gen0_threshold(settings: Settings) -> int:
    """The generation-0 threshold for a worker process: above what its calls in flight hold
    together (see ``fleet_shared.runtime``); the fleet's default for a few dozen."""
    return min(MAX_GEN0_THRESHOLD, settings.worker_concurrency * LIVE_OBJECTS_PER_CALL)


def http_client(settings: Settings, *, timeout_s: float | None = None) -> httpx.AsyncClient:
    """The worker's HTTP client: the httpx API over aiohttp's connection pool (see ``transport``)."""
    n = settings.worker_concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    timeout = httpx.Timeout(timeout_s or settings.provider_timeout_s, connect=5.0)
    return LeanAsyncClient(transport=AiohttpTransport(limits=limits), timeout=timeout)


class Worker(FleetService):
    """One worker process for one provider (its micro service: ``fleet-worker-<provider>``)."""

    def __init__(
        self,
        settings: Settings,
        provider: str,
        *,
        endpoint: ProviderEndpoint | None = None,
        adapter: ProviderAdapter | None = None,
        registry: Registry | None = None,
    ) -> None:
        registry = registry or settings.registry()
        if provider not in registry.providers:
            raise ValueError(f"unknown provider {provider!r}; one of {sorted(registry.providers)}")
        endpoint = endpoint or provider_endpoint(provider, registry=registry)
        key_fingerprint = endpoint.api_key.fingerprint() if endpoint.api_key else ""
        super().__init__(settings, registry=registry, key_fingerprint=key_fingerprint)
        self.name = f"fleet-worker-{provider}"
        self.description = f"{provider} worker"
        self.provider = provider
        self.endpoint = endpoint
        self.registry = registry
        self.adapter = adapter
        self.key_fingerprint = key_fingerprint
        self.gate = Gate(None, None, key_fingerprint=self.key_fingerprint)
        self.reporter: HealthReporter | None = None
        self.prober: Prober | None = None
        self.loader: LMStudioLoader | None = None
        self.handler: DispatchHandler | None = None

    @property
    def grace_s(self) -> float:
        return self.settings.ack_wait_s  # a provider call in flight may take that long

    async def setup(self) -> None:
        s, subj = self.settings, self.subjects
        if self.adapter is None:
            protocol = self.registry.providers[self.provider].protocol
            self.adapter = make_adapter(self.provider, self.endpoint, http_client(s), protocol=protocol)
        adapter = self.adapter
        await self._start_fleet_state()
        sub = await self.pull_consumer(
            stream=subj.dispatch_stream,
            durable=f"worker-{self.provider}",
            filter_subject=subj.dispatch(self.provider),
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            # shared by every process of this provider: room for several at full concurrency
            max_ack_pending=s.worker_concurrency * 8,
        )
        budgets = BudgetBook(await open_bucket(self.js, subj.budgets_bucket), BudgetConfig())
        self.handler = DispatchHandler(
            budgets=budgets,
            nc=self.nc,
            js=self.js,
            subjects=subj,
            settings=s,
            provider=self.provider,
            registry=self.registry,
            adapter=adapter,
            gate=self.gate,
            reporter=self.reporter,
            loader=self.loader,
            metrics=self.metrics,
        )
        name = f"worker-{self.provider}"
        self.loops = [self.pull_loop(sub, self.handler.handle, name=name, concurrency=s.worker_concurrency)]

    async def _start_fleet_state(self) -> None:
        """The rate limiter, the prober candidate and the LM Studio loader (the health board
        is the base's)."""
        s, subj = self.settings, self.subjects
        limiter = RateLimiter(await open_bucket(self.js, subj.rates_bucket, ttl_s=BUCKET_TTL_S))
        self.gate = Gate(self.board, limiter, key_fingerprint=self.key_fingerprint)
        self.reporter = HealthReporter(
            self.board, self.registry, s, provider=self.provider, key_fingerprint=self.key_fingerprint
        )
        await self.reporter.key_changed()
        leases = await open_bucket(self.js, subj.leases_bucket)
        lease = Lease(leases, f"prober.{self.provider}", ttl_s=3 * s.probe_interval_s)
        probe_client = http_client(s, timeout_s=min(10.0, s.provider_timeout_s))
        self.prober = self.add_part(
            Prober(self.provider, self.endpoint, probe_client, self.board, lease, self.registry, s)
        )
        self.prober.start()
        if self.provider == "lmstudio" and s.lmstudio_autoload:
            self.loader = self.add_part(LMStudioLoader(self.endpoint, http_client(s), s))
            self.loader.start()

    async def closed(self) -> None:
        if self.adapter:
            await self.adapter.aclose()
