"""The router service: takes jobs and escalations, asks the policy, dispatches or fails.

Consumes (durable pull consumers shared by every router process):
    <p>.submit           (JOBS stream)        new jobs
    <p>.escalate.*       (ESCALATE stream)    failed attempts from workers
    max-deliveries advisories (ADVISORIES)   messages given up: failed Result + dead letter
Serves (core NATS, queue group "router"):
    <p>.request          persists the job on <p>.submit first, carrying the reply inbox
Follows: the custom rules in the config bucket (``fleet_router.rules_watch``), hot-reloaded.
Replays (an ordered consumer from a bounded look-back, ``fleet_router.feed``): the RESULTS
stream, into the decaying statistics per model and task type the policy reads.
Watches: every provider's workers (``OrphanWatch``): jobs of a provider without a live
worker for ``no_worker_escalate_s`` are escalated to other models.

The JetStream messages are handled in ``fleet_router.handlers`` (jobs, escalations) and
``fleet_router.deadletter`` (advisories); each handler returns an outcome that the shared
loop settles. This module is the process: its consumers, core subscriptions, live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from fleet_router.adaptive import PerformanceBook
from fleet_router.budgets import RouterBudgets
from fleet_router.deadletter import DeadLetters
from fleet_router.feed import PerformanceFeed
from fleet_router.handlers import RouterHandlers
from fleet_router.intake import FRESH_ID_HEADER, fresh_job_id, job_id_of_msg_id, payload_job_id
from fleet_router.orphans import OrphanWatch
from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_router.rules_watch import RulesWatch
from fleet_router.state import LiveStateTracker
from fleet_shared import rules_store
from fleet_shared.budget import BudgetBook
from fleet_shared.config import Settings
from fleet_shared.kv import open_bucket
from fleet_shared.metrics_sources import budget_source
from fleet_shared.publish import MSG_ID_HEADER, REPLY_TO_HEADER, js_publish, js_publish_attempt, pub_ack
from fleet_shared.registry import Registry
from fleet_shared.schema import ErrorInfo, Result, encode
from fleet_shared.service import FleetService, Loop

log = logging.getLogger("fleet.router")


class Router(FleetService):
    """One router process. Use as ``async with Router(settings) as r: await r.run()``."""

    name = "fleet-router"
    description = "LLM model router"

    def __init__(self, settings: Settings, *, registry: Registry | None = None) -> None:
        registry = registry or settings.registry()
        super().__init__(settings, registry=registry)
        self.policy = IntelligentModelRouter(registry)
        self.state = LiveStateTracker(performance=PerformanceBook(half_life_s=settings.adaptive_half_life_s))
        self.orphans: OrphanWatch | None = None
        self.handlers: RouterHandlers | None = None
        #: this process's name in the rules status it reports (``modelrouter rules show``)
        self.instance = f"router-{uuid.uuid4().hex[:12]}"
        self.rules: RulesWatch | None = None
        #: requests being made durable at once (see ``on_request``)
        self._intake_slots = asyncio.Semaphore(settings.router_concurrency)

    async def setup(self) -> None:
        subj = self.subjects
        self.state.board = self.board  # the policy skips what is down or cooling
        book = BudgetBook(await open_bucket(self.js, subj.budgets_bucket), self.settings.budgets())
        await book.watch()
        self.state.budgets = self.add_part(book)
        self.metrics.add_source("budget", budget_source(self.metrics, book))
        self.watched_streams = [subj.deadletter_stream]
        # the custom rules, hot-reloaded: loaded before the first job is consumed
        self.rules = RulesWatch(await rules_store.open_config(self.js, subj), self.policy, router=self.instance)
        await self.rules.start()
        self.add_part(self.rules)
        self.handlers = RouterHandlers(
            nc=self.nc,
            js=self.js,
            subjects=subj,
            settings=self.settings,
            policy=self.policy,
            live_state=self.live_state,
            budgets=RouterBudgets(book, self.nc, subj),
            metrics=self.metrics,
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
        jobs = await self.pull_consumer(
            stream=subj.jobs_stream,
            durable="router-jobs",
            filter_subject=subj.submit,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            max_ack_pending=n * 8,
        )
        escalations = await self.pull_consumer(
            stream=subj.escalate_stream,
            durable="router-escalations",
            filter_subject=subj.escalate_all,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            max_ack_pending=n * 8,
        )
        advisories = await self.pull_consumer(
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
        """Make a request durable exactly like a submission, remembering who waits for it.

        Its ack is read by a callback: nats-py runs a subscription's callbacks one at a time,
        so awaited here, requests would queue behind each other's acks (a task per request
        did the same at a task's cost per job). At most ``router_concurrency`` wait for their
        ack at once; past that this callback waits (nats-py buffers what arrives meanwhile).
        A first try that fails goes on in a task, with ``js_publish``'s retries (same id).
        """
        await self._intake_slots.acquire()
        headers = dict(msg.headers or {})
        headers.pop(FRESH_ID_HEADER, None)  # only this intake says an id is its own
        # De-duplicate on the job's own id: the same job requested twice is served once.
        job_id = payload_job_id(msg.data)
        if job_id is None:  # the header's id, else a fresh one (the payload is decoded once)
            given = headers.get(MSG_ID_HEADER)
            if given:
                job_id = job_id_of_msg_id(given)
            else:
                job_id = headers[FRESH_ID_HEADER] = fresh_job_id()
        headers[MSG_ID_HEADER] = job_id
        if msg.reply:
            headers[REPLY_TO_HEADER] = msg.reply
        try:
            sent = await js_publish_attempt(self.js, self.subjects.submit, msg.data, msg_id=job_id, headers=headers)
        except Exception:  # not sent (too large, connection closed): the full path says why
            sent = None
        if sent is None:
            self._retry_request(msg, job_id, headers)
        else:
            sent.add_done_callback(functools.partial(self._request_acked, msg, job_id, headers))

    def _request_acked(self, msg: Msg, job_id: str, headers: dict[str, str], sent: asyncio.Future[Any]) -> None:
        try:
            ack = pub_ack(sent.result())
        except (Exception, asyncio.CancelledError):  # leader election, timeout, refusal
            self._retry_request(msg, job_id, headers)
            return
        self._intake_slots.release()
        self._accepted(msg, job_id, ack)

    def _retry_request(self, msg: Msg, job_id: str, headers: dict[str, str]) -> None:
        """A request whose first try failed: retried in a task, its slot held until it ends."""
        task = self.spawn(self._accept_request(msg, job_id, headers))
        task.add_done_callback(lambda _: self._intake_slots.release())

    async def _accept_request(self, msg: Msg, job_id: str, headers: dict[str, str]) -> None:
        try:
            ack = await js_publish(self.js, self.subjects.submit, msg.data, msg_id=job_id, headers=headers)
        except Exception as exc:  # stream full, payload too big, JetStream down
            log.warning("request %s not accepted: %s", job_id, exc)
            if msg.reply:
                result = Result(job_id=job_id, success=False, error=ErrorInfo("not_accepted", str(exc)))
                await self.nc.publish(msg.reply, encode(result))
            return
        self._accepted(msg, job_id, ack)

    def _accepted(self, msg: Msg, job_id: str, ack: api.PubAck) -> None:
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
