"""Jobs queued for a provider with no live worker are escalated to another model.

A supervisor (or Kubernetes) restarts a worker that dies, but a provider whose workers are
all gone (a crash loop, scaled to zero, a lost node) would leave its jobs waiting for ever.
The router watches every provider:

* alive: some process answers ``$SRV.PING.fleet-worker-<provider>`` (each worker
  registers that NATS micro service);
* after no live worker for ``no_worker_escalate_s`` the provider is *workerless*: the
  policy stops choosing its models (``workerless_models``), and its queued jobs are pulled
  from the workers' own durable consumer (``worker-<provider>``: any client may pull from
  a durable pull consumer) and escalated exactly as a worker escalates a failed attempt
  (``fleet_shared.dispatch.escalate``), with the attempt error ``no_worker``, so the
  router routes each elsewhere. ``handle`` returns each message's outcome; the drain
  settles it through the shared ``Settler``, like every consumer loop.

A worker answering again ends it; a job it had in flight when it died comes back after
ack_wait and is escalated (or served by the new worker) like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from fleet_shared import bus
from fleet_shared.config import Settings
from fleet_shared.dispatch import decode_dispatch, escalate
from fleet_shared.loop import Settler
from fleet_shared.outcome import DONE, DeadLetter, Outcome
from fleet_shared.registry import Registry
from fleet_shared.schema import Attempt, ErrorInfo
from fleet_shared.subjects import PROVIDERS, Subjects

log = logging.getLogger("fleet.router.orphans")

#: Attempt error code of a job escalated because its provider had no live worker.
NO_WORKER = "no_worker"
#: How long a ping waits for a worker's answer; a silent (not absent) worker counts as alive.
PING_TIMEOUT_S = 1.0
#: Jobs pulled per fetch while draining a workerless provider.
DRAIN_BATCH = 64


class OrphanWatch:
    """Tracks which providers have live workers and escalates the jobs of those without.

    Parameters:
        nc, js: the router's connection.
        subjects, settings: names, ``no_worker_escalate_s`` and the workers' consumer settings.
        registry: which models each provider serves.
    """

    def __init__(
        self, nc: NATS, js: JetStreamContext, subjects: Subjects, settings: Settings, registry: Registry
    ) -> None:
        self.nc, self.js, self.subjects, self.settings = nc, js, subjects, settings
        self.after_s = settings.no_worker_escalate_s
        providers = [*PROVIDERS, *sorted({m.provider for m in registry.models.values()} - set(PROVIDERS))]
        self._models = {p: {m.id for m in registry.models.values() if m.provider == p} for p in providers}
        self._absent_since: dict[str, float] = {}
        self._subs: dict[str, JetStreamContext.PullSubscription] = {}
        self._settler = Settler(js, subjects, name="router-orphans")
        #: providers without a live worker for longer than ``after_s``
        self.workerless: set[str] = set()
        #: jobs escalated for lack of a worker (for logs and tests)
        self.escalated = 0

    @property
    def interval_s(self) -> float:
        return min(5.0, max(0.1, self.after_s / 4))

    def workerless_models(self) -> frozenset[str]:
        return frozenset(m for p in self.workerless for m in self._models[p])

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.check()
            except Exception as exc:  # NATS away: try again next round
                log.info("worker check failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_s)
        for provider in list(self._subs):
            await self._release(provider)

    async def check(self) -> None:
        """One round: ping every provider's workers, escalate what a workerless one holds."""
        now = time.monotonic()
        for provider in self._models:
            alive = await self._alive(provider)
            if alive is None:
                continue
            if alive:
                self._absent_since.pop(provider, None)
                if provider in self.workerless:
                    log.info("%s has a live worker again", provider)
                    self.workerless.discard(provider)
                    await self._release(provider)
                continue
            since = self._absent_since.setdefault(provider, now)
            if now - since >= self.after_s:
                if provider not in self.workerless:
                    log.warning("no live %s worker for %.0fs: escalating its jobs elsewhere", provider, now - since)
                self.workerless.add(provider)
                await self._drain(provider)

    async def _alive(self, provider: str) -> bool | None:
        """True / False, or None when NATS itself did not answer."""
        try:
            await self.nc.request(f"$SRV.PING.fleet-worker-{provider}", b"", timeout=PING_TIMEOUT_S)
        except NoRespondersError:
            return False
        except (TimeoutError, NatsTimeoutError):
            return True  # someone is subscribed but slow: a busy worker, not a dead one
        except Exception:
            return None
        return True

    async def _drain(self, provider: str) -> None:
        sub = await self._subscription(provider)
        while provider in self.workerless:
            try:
                msgs = await sub.fetch(DRAIN_BATCH, timeout=0.2)
            except (TimeoutError, NatsTimeoutError):
                return
            for msg in msgs:
                await asyncio.shield(self._settler.settle(msg, await self.handle(provider, msg)))
            if await self._alive(provider):
                return  # a worker is back: leave the rest to it (the next round notices)

    async def handle(self, provider: str, msg: Msg) -> Outcome:
        """Escalate one job of ``provider`` as failed with ``no_worker`` (``Done``)."""
        d = decode_dispatch(msg.data)
        if isinstance(d, DeadLetter):
            return d
        error = ErrorInfo(NO_WORKER, f"no live {provider} worker for {self.after_s:g}s")
        failed = Attempt(model=d.model, provider=provider, success=False, error=error)
        await escalate(self.js, self.subjects, d, failed, provider=provider)
        self.escalated += 1
        return DONE

    async def _subscription(self, provider: str) -> JetStreamContext.PullSubscription:
        """Bind to the workers' consumer, creating it (with the workers' settings) if no
        worker ever did; an existing one is used as it is, never reconfigured."""
        if provider in self._subs:
            return self._subs[provider]
        durable, stream = f"worker-{provider}", self.subjects.dispatch_stream
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            s = self.settings
            await self.js.add_consumer(
                stream,
                config=bus.consumer_config(
                    durable=durable,
                    filter_subject=self.subjects.dispatch(provider),
                    ack_wait_s=s.ack_wait_s,
                    max_deliver=s.max_deliver,
                    max_ack_pending=s.worker_concurrency * 8,
                ),
            )
        self._subs[provider] = sub = await self.js.pull_subscribe_bind(durable, stream)
        return sub

    async def _release(self, provider: str) -> None:
        sub = self._subs.pop(provider, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
