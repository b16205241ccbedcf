"""The router service: takes jobs and escalations, asks the policy, dispatches or fails.

Consumes (durable pull consumers shared by every router process):
    <p>.submit           (JOBS stream)        new jobs
    <p>.escalate.*       (ESCALATE stream)    failed attempts from workers
    max-deliveries advisories (ADVISORIES)   messages given up: failed Result + dead letter
Serves (core NATS, queue group "router"):
    <p>.request          persists the job on <p>.submit first, carrying the reply inbox
Replays (ordered consumers from a bounded look-back, ``fleet_router.feed``): the EVENTS and
RESULTS streams, into the decaying statistics per model and task type the policy reads.
Watches: every provider's workers (``OrphanWatch``): jobs of a provider without a live
worker for ``no_worker_escalate_s`` are escalated to other models.

The JetStream messages are handled in ``fleet_router.handlers`` (jobs, escalations) and
``fleet_router.deadletter`` (advisories); each handler returns an outcome that the shared
loop settles. This module is the process: its consumers, core subscriptions, live state.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable

import msgspec
from nats.aio.msg import Msg

from fleet_router.adaptive import PerformanceBook
from fleet_router.budgets import RouterBudgets
from fleet_router.deadletter import DeadLetters
from fleet_router.feed import PerformanceFeed
from fleet_router.handlers import RouterHandlers
from fleet_router.intake import job_id_for
from fleet_router.orphans import OrphanWatch
from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_router.state import LiveStateTracker
from fleet_shared import bus
from fleet_shared.budget import BudgetBook
from fleet_shared.config import Registry, Settings
from fleet_shared.kv import open_bucket
from fleet_shared.publish import MSG_ID_HEADER, REPLY_TO_HEADER, js_publish
from fleet_shared.schema import ErrorInfo, Result, encode
from fleet_shared.service import FleetService, Loop

log = logging.getLogger("fleet.router")


class Router(FleetService):
    """One router process. Use as ``async with Router(settings) as r: await r.run()``."""

    name = "fleet-router"
    description = "LLM model router"

    def __init__(self, settings: Settings, *, registry: Registry | None = None) -> None:
        super().__init__(settings)
        self.policy = IntelligentModelRouter(registry or settings.registry())
        self.state = LiveStateTracker(performance=PerformanceBook(half_life_s=settings.adaptive_half_life_s))
        self.orphans: OrphanWatch | None = None
        self.handlers: RouterHandlers | None = None

    async def setup(self) -> None:
        subj = self.subjects
        self.state.board = self.board  # the policy skips what is down or cooling
        book = BudgetBook(await open_bucket(self.js, subj.budgets_bucket), self.settings.budgets())
        await book.watch()
        self.state.budgets = self.add_part(book)
        self.handlers = RouterHandlers(
            nc=self.nc,
            js=self.js,
            subjects=subj,
            settings=self.settings,
            policy=self.policy,
            live_state=self.live_state,
            budgets=RouterBudgets(book, self.nc, subj),
        )
        self.loops = await self._consumer_loops(self.handlers)
        self.orphans = OrphanWatch(self.nc, self.js, subj, self.settings, self.policy.registry)
        await self.subscribe(subj.request, self.on_request, queue="router")
        feed = PerformanceFeed(self.nc, self.js, subj, self.state, lookback_s=self.settings.adaptive_lookback_s)
        await feed.start()
        self.add_part(feed)

    async def _consumer_loops(self, handlers: RouterHandlers) -> list[Loop]:
        """Jobs, escalations, and max-deliveries advisories (dead letters, never given up)."""
        s, subj, n = self.settings, self.subjects, self.settings.router_concurrency
        jobs = await bus.ensure_pull_consumer(
            self.js,
            stream=subj.jobs_stream,
            durable="router-jobs",
            filter_subject=subj.submit,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            max_ack_pending=n * 8,
        )
        escalations = await bus.ensure_pull_consumer(
            self.js,
            stream=subj.escalate_stream,
            durable="router-escalations",
            filter_subject=subj.escalate_all,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            max_ack_pending=n * 8,
        )
        advisories = await bus.ensure_pull_consumer(
            self.js,
            stream=subj.advisories_stream,
            durable="router-deadletter",
            filter_subject=None,
            ack_wait_s=s.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=1000,
        )
        dead = DeadLetters(self.js, subj, handlers.give_up)
        return [
            self.pull_loop(jobs, handlers.on_job, name="router-jobs", concurrency=n),
            self.pull_loop(escalations, handlers.on_escalation, name="router-escalations", concurrency=n),
            self.pull_loop(advisories, dead.on_advisory, name="router-deadletter", concurrency=16),
        ]

    def tasks(self) -> list[Awaitable[None]]:
        return [self.orphans.run(self.stopping)] if self.orphans else []

    # -- core NATS ------------------------------------------------------------------

    async def on_request(self, msg: Msg) -> None:
        """Make a request durable exactly like a submission, remembering who waits for it."""
        headers = dict(msg.headers or {})
        # De-duplicate on the job's own id: the same job requested twice is served once.
        job_id = job_id_for(msg.data, headers.get(MSG_ID_HEADER) or uuid.uuid4().hex, "")
        headers[MSG_ID_HEADER] = job_id
        if msg.reply:
            headers[REPLY_TO_HEADER] = msg.reply
        try:
            ack = await js_publish(self.js, self.subjects.submit, msg.data, msg_id=job_id, headers=headers)
        except Exception as exc:  # stream full, payload too big, JetStream down
            log.warning("request %s not accepted: %s", job_id, exc)
            if msg.reply:
                result = Result(job_id=job_id, success=False, error=ErrorInfo("not_accepted", str(exc)))
                await self.nc.publish(msg.reply, encode(result))
            return
        if ack.duplicate and msg.reply:
            # The first copy carries the first requester's inbox; answer this one from the Result.
            self.spawn(self._reply_when_done(job_id, msg.reply))

    async def _reply_when_done(self, job_id: str, reply: str) -> None:
        subject = self.subjects.result(job_id)
        sub = await self.js.subscribe(subject, ordered_consumer=True)
        try:
            found = await sub.next_msg(timeout=self.settings.provider_timeout_s * self.settings.max_deliver)
            await self.nc.publish(reply, found.data)
        except Exception as exc:
            log.warning("duplicate request %s: no Result to answer with: %s", job_id, exc)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def live_state(self) -> LiveState:
        """The tracker's snapshot, plus the models of providers that have no live worker."""
        state = self.state.snapshot()
        gone = self.orphans.workerless_models() if self.orphans else frozenset()
        if gone - state.unavailable or gone & state.cooling_until.keys():
            cooling = {m: t for m, t in state.cooling_until.items() if m not in gone}  # no worker: nothing to wait for
            state = msgspec.structs.replace(state, unavailable=state.unavailable | gone, cooling_until=cooling)
        return state
