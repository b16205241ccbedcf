"""The lifecycle every fleet process shares (router, workers, ledger).

``start``: connect with the fleet's credentials, make sure the streams exist, open and
follow the health board (unless the service has no use for it), let the subclass build
its consumers and subscriptions (``setup``), register the NATS micro service (``make
status`` pings it) and let the subclass add its endpoints (``registered``), flush so the
server knows every subscription before ``start`` returns. A start that fails stops what
it had started.

Operations: every process holds one ``FleetMetrics`` (``self.metrics``) and, when
FLEET_METRICS_PORT is set, serves it with ``/healthz`` and ``/readyz`` (``fleet_shared.ops_http``)
from the first moment of ``start``: alive while starting, ready once started and connected
to NATS (plus the subclass's ``readiness_checks``). The JetStream lag of every consumer made
with ``pull_consumer`` and the health board are read at scrape time.

``run``: every consumer loop, plus the subclass's own long-running tasks, until stopped.

``stop`` (SIGTERM, see ``fleet_shared.runner``): core subscriptions first (nothing new
arrives), then the loops stop fetching and give in-flight work ``grace_s`` to finish (the
rest is handed back with ``nak``), then background tasks are cancelled and the parts
(prober, loader, health board, pools...) stopped in reverse order of adding, then the
micro service, then a NATS drain, then ``closed`` (e.g. the HTTP client). Idempotent, and
a stop once begun runs to its end even if its caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, Self, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.micro.service import Service

from fleet_shared import bus, health
from fleet_shared.availability import HealthBoard
from fleet_shared.config import Settings
from fleet_shared.loop import Handler, PullLoop, Settler, Source
from fleet_shared.metrics import FleetMetrics
from fleet_shared.metrics_sources import health_source, jetstream_source
from fleet_shared.ops_http import Check, OpsServer, nats_connected
from fleet_shared.pull import PullSource
from fleet_shared.registry import Registry
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    async def stop(self) -> None: ...


class Loop(Protocol):
    """A consumer loop: ``fleet_shared.loop.PullLoop``, or the ledger's batch loop."""

    async def run(self) -> None: ...

    async def stop(self, grace_s: float = ...) -> None: ...


P = TypeVar("P", bound=Stoppable)


class FleetService:
    """Base of a fleet process. Subclasses set ``name``/``description``, implement
    ``setup`` (fill ``self.loops``, call ``subscribe``/``add_part``), and may override
    ``tasks``, ``registered``, ``grace_s`` and ``closed``.
    Use as ``async with Svc(settings) as s: await s.run()``."""

    name = "fleet-service"
    description = ""
    #: whether ``start`` opens and follows the fleet's health board (``self.board``)
    uses_health_board = True

    def __init__(self, settings: Settings, *, registry: Registry | None = None, key_fingerprint: str = "") -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.registry_for_metrics = registry if registry is not None else _registry_or_none(settings)
        #: the process's metrics (one registry per service object: tests run several per process)
        self.metrics = FleetMetrics(self.registry_for_metrics, subjects=self.subjects, key_fingerprint=key_fingerprint)
        #: the ops endpoint (None: FLEET_METRICS_PORT is 0)
        self.ops: OpsServer | None = None
        #: (stream, durable) of each consumer made with ``pull_consumer``: their lag is scraped
        self.consumers: list[tuple[str, str]] = []
        #: streams whose message count is scraped (the router: the dead letters)
        self.watched_streams: list[str] = []
        self.loops: list[Loop] = []
        #: set when ``stop`` begins: long-running tasks watch it
        self.stopping = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._board: HealthBoard | None = None
        self._subs: list[Subscription] = []
        self._at_stop: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._service: Service | None = None
        self._started = False
        self._ready = False
        self._stop_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def nc(self) -> NATS:
        """The NATS connection (from ``start`` on)."""
        if self._nc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (from ``start`` on)."""
        if self._js is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._js

    @property
    def board(self) -> HealthBoard:
        """The fleet's health board (from ``start`` on, when ``uses_health_board``)."""
        if self._board is None:
            raise RuntimeError(f"{self.name} has no health board (not started, or it uses none)")
        return self._board

    @property
    def grace_s(self) -> float:
        """How long in-flight messages may take to finish on stop."""
        return 10.0

    async def start(self) -> None:
        """Connect and start consuming; a no-op when already started.

        Raises:
            Whatever connecting, creating the streams or ``setup`` raised (after stopping
            what had started).
        """
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        await self._serve_ops()
        self._nc = await bus.connect(s, name=self.name)
        self._js = self._nc.jetstream()
        await bus.ensure_streams(self._js, self.subjects, s)
        if self.uses_health_board:
            # fleet-wide availability (the prober and the workers write it, routers read it)
            self._board = self.add_part(await HealthBoard.open(self._js, self.subjects.health_bucket))
            await self._board.watch()
        await self.setup()
        self._service = await health.register(self._nc, self.name, description=self.description or self.name)
        await self.registered(self._service)
        await self._nc.flush()
        self._watch_metrics()
        self._ready = True

    async def _serve_ops(self) -> None:
        """The ops endpoint, from the start: /healthz answers while the rest starts."""
        if self.settings.metrics_port <= 0 or self.ops is not None:
            return
        checks: dict[str, Check] = {"started": self._is_started, "nats": self._nats_connected}
        checks.update(self.readiness_checks())
        self.ops = OpsServer(self.metrics, checks=checks, port=self.settings.metrics_port)
        await self.ops.start()
        self.at_stop(self._stop_ops)

    async def _stop_ops(self) -> None:
        ops, self.ops = self.ops, None
        if ops is not None:
            await ops.stop()

    async def _is_started(self) -> bool:
        return self._ready

    async def _nats_connected(self) -> bool:
        return self._nc is not None and await nats_connected(self._nc)()

    def readiness_checks(self) -> dict[str, Check]:
        """Checks besides NATS that /readyz runs (the ledger: PostgreSQL answers)."""
        return {}

    def _watch_metrics(self) -> None:
        """Scrape-time sources: the consumers' lag and the health board."""
        if self.consumers or self.watched_streams:
            source = jetstream_source(self.metrics, self.js, consumers=self.consumers, streams=self.watched_streams)
            self.metrics.add_source("jetstream", source)
        if self._board is not None and self.registry_for_metrics is not None:
            models = list(self.registry_for_metrics.models)
            self.metrics.add_source("health_board", health_source(self.metrics, self._board, models))

    async def pull_consumer(self, *, stream: str, durable: str, **options: Any) -> PullSource:
        """``bus.ensure_pull_consumer``, remembering the consumer for the lag metrics."""
        sub = await bus.ensure_pull_consumer(self.js, stream=stream, durable=durable, **options)
        self.consumers.append((stream, durable))
        return sub

    async def setup(self) -> None:
        raise NotImplementedError

    async def registered(self, service: Service) -> None:
        """After the micro service is registered: add endpoints to it (none by default)."""

    def pull_loop(self, sub: Source, handler: Handler, *, name: str, concurrency: int) -> PullLoop:
        """A ``PullLoop`` whose outcomes are settled with this service's JetStream (dead letters)."""
        return PullLoop(
            sub, handler, name=name, concurrency=concurrency, settler=self.settler(name), metrics=self.metrics
        )

    def settler(self, name: str) -> Settler:
        """Applies outcomes of messages handled by ``name`` (for logs)."""
        return Settler(self.js, self.subjects, name=name)

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]], *, queue: str = "") -> Subscription:
        """A core subscription, unsubscribed first on stop."""
        sub = await self.nc.subscribe(subject, queue=queue, cb=cb)
        self._subs.append(sub)
        return sub

    def add_part(self, part: P) -> P:
        """Something with ``async stop()``, stopped (in reverse order of adding) on stop."""
        self._at_stop.append(part.stop)
        return part

    def at_stop(self, release: Callable[[], Awaitable[None]]) -> None:
        """Await ``release()`` on stop, in reverse order of adding (with the parts)."""
        self._at_stop.append(release)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A short-lived background task, cancelled on stop if still running."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def tasks(self) -> list[Awaitable[None]]:
        """Long-running work besides the loops (they should end when ``stopping`` is set)."""
        return []

    async def run(self) -> None:
        await asyncio.gather(*(loop.run() for loop in self.loops), *self.tasks())

    async def stop(self) -> None:
        if not self._started:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._shutdown())
        await asyncio.shield(self._stop_task)

    async def _shutdown(self) -> None:
        self.stopping.set()
        self._ready = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await asyncio.gather(*(loop.stop(grace_s=self.grace_s) for loop in self.loops))
        for task in list(self._background):
            task.cancel()
        for release in reversed(self._at_stop):
            try:
                await release()
            except Exception as exc:  # stopping the rest matters more
                log.info("%s: stopping %s: %s", self.name, getattr(release, "__qualname__", release), exc)
        if self._service:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self._nc and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception as exc:  # already closing, or the server went away
                log.info("%s: nats drain: %s", self.name, exc)
                with contextlib.suppress(Exception):
                    await self._nc.close()
        await self.closed()
        self._started = False

    async def closed(self) -> None:
        """After the connection is drained: release what the subclass holds."""


def _registry_or_none(settings: Settings) -> Registry | None:
    """The model registry for the metrics' label sets (None: it does not load; every model
    label is then ``_OTHER``, and the process still runs)."""
    try:
        return settings.registry()
    except Exception as exc:
        log.warning("metrics: no model registry (%s); model labels are _OTHER", exc)
        return None
