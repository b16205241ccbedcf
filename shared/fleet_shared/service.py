"""The lifecycle the router and the workers share.

``start``: connect with the fleet's credentials, make sure the streams exist, open and
follow the health board, let the subclass build its consumers and subscriptions
(``setup``), register the NATS micro service (``make status`` pings it), flush so the
server knows every subscription before ``start`` returns.

``run``: every pull loop, plus the subclass's own long-running tasks, until stopped.

``stop`` (SIGTERM, see ``fleet_shared.runner``): core subscriptions first (nothing new
arrives), then the loops stop fetching and give in-flight work ``grace_s`` to finish (the
rest is handed back with ``nak``), then background tasks are cancelled and the parts
(prober, loader, health board...) stopped in reverse order of creation, then the micro
service, then a NATS drain, then ``closed`` (e.g. the HTTP client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from nats.aio.msg import Msg

from fleet_shared import bus, health
from fleet_shared.availability import HealthBoard
from fleet_shared.config import Settings
from fleet_shared.loop import PullLoop
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    async def stop(self) -> None: ...


class FleetService:
    """Base of a fleet process. Subclasses set ``name``/``description``, implement
    ``setup`` (fill ``self.loops``, call ``subscribe``/``add_part``), and may override
    ``tasks``, ``grace_s`` and ``closed``. Use as ``async with Svc(settings) as s: await s.run()``."""

    name = "fleet-service"
    description = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.nc = None
        self.js = None
        self.board: HealthBoard | None = None
        self.loops: list[PullLoop] = []
        #: set when ``stop`` begins: long-running tasks watch it
        self.stopping = asyncio.Event()
        self._subs: list = []
        self._parts: list[Stoppable] = []
        self._background: set[asyncio.Task] = set()
        self._service = None
        self._started = False

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def grace_s(self) -> float:
        """How long in-flight messages may take to finish on stop."""
        return 10.0

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        s = self.settings
        self.nc = await bus.connect(s, name=self.name)
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, self.subjects, s)
        # fleet-wide availability (the prober and the workers write it, routers read it)
        self.board = self.add_part(await HealthBoard.open(self.js, self.subjects.health_bucket))
        await self.board.watch()
        await self.setup()
        self._service = await health.register(self.nc, self.name, description=self.description or self.name)
        await self.nc.flush()

    async def setup(self) -> None:
        raise NotImplementedError

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]], *, queue: str = "") -> Any:
        """A core subscription, unsubscribed first on stop."""
        sub = await self.nc.subscribe(subject, queue=queue, cb=cb)
        self._subs.append(sub)
        return sub

    def add_part(self, part):
        """Something with ``async stop()``, stopped (in reverse order of adding) on stop."""
        self._parts.append(part)
        return part

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        """A short-lived background task, cancelled on stop if still running."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def tasks(self) -> list[Awaitable]:
        """Long-running work besides the pull loops (they should end when ``stopping`` is set)."""
        return []

    async def run(self) -> None:
        await asyncio.gather(*(loop.run() for loop in self.loops), *self.tasks())

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.stopping.set()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await asyncio.gather(*(loop.stop(grace_s=self.grace_s) for loop in self.loops))
        for task in list(self._background):
            task.cancel()
        for part in reversed(self._parts):
            try:
                await part.stop()
            except Exception as exc:  # stopping the rest matters more
                log.info("%s: stopping %s: %s", self.name, type(part).__name__, exc)
        if self._service:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self.nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        await self.closed()

    async def closed(self) -> None:
        """After the connection is drained: release what the subclass holds."""
