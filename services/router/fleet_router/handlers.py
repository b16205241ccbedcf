"""The router's message handling: a job or an escalation in, an ``Outcome`` out.

``on_job`` (<p>.submit) and ``on_escalation`` (<p>.escalate.*) ask the policy and then
dispatch the job to a provider's workers, or finish it with a failed Result when no model
is left; either way the message is ``Done``. A policy ``wait`` (every model cooling down at
its provider's request) leaves the message in the queue (``Wait``); an escalation that does
not decode is a bug and is dead-lettered. The consumer loop settles
(``fleet_shared.loop``); nothing here acks.

A job or escalation handled a second time (a redelivery after a crash, a duplicate that
outlived the de-duplication window) whose job already has a Result is only ``Done``.
The decision travels inside the Dispatch (or inside the failed Result when no model is
left): the ledger gets it with the attempt's outcome, no stored message of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from fleet_router.budgets import Reservation, RouterBudgets
from fleet_router.deadletter import GiveUp
from fleet_router.inference import Inference, carried
from fleet_router.intake import FRESH_ID_HEADER, Rejection, decode_job, excerpt, job_id_for, stream_key
from fleet_router.policy import IntelligentModelRouter, LiveState, RouteDecision
from fleet_router.records import exhausted_error, failed_result, routed_decision, unrouted_decision
from fleet_router.shadow import send_shadow
from fleet_shared.config import Settings
from fleet_shared.delivery import num_delivered, stream_time
from fleet_shared.dispatch import decode_dispatch
from fleet_shared.metrics import FleetMetrics
from fleet_shared.outcome import DONE, DeadLetter, Outcome, Wait
from fleet_shared.publish import (
    MSG_ID_HEADER,
    REPLY_TO_HEADER,
    js_publish,
    publish_result,
    stored_result_sent,
)
from fleet_shared.schema import Attempt, Dispatch, ErrorInfo, Job, Result, StreamChunk, encode
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router")

#: Routing again after a budget refused a reservation (another router took the rest first):
#: each round marks one more budget as spent, so a few rounds always end.
BUDGET_REROUTES = 4


async def _no_result() -> bool:
    return False


def position_of(msg: Msg) -> str:
    """The message's stream position as ``stream_key`` (only for a job that names no id)."""
    meta = msg.metadata
    return stream_key(meta.stream, meta.sequence.stream, meta.timestamp)


class RouterHandlers:
    """Handles jobs and escalations for one router process.

    Parameters:
        nc, js: the router's connection (core publishes: replies, stream ends).
        subjects, settings: names; max_prompt_bytes and max_deliver are read.
        policy: chooses the model.
        live_state: the live state the policy reads, fresh for every decision.
        budgets: reserves a paid attempt's estimate fleet-wide (None: no budgets are held).
        metrics: counts decisions, escalations, waits and the failed Results published here
            (None: a registry of its own that nobody scrapes).
    """

    def __init__(
        self,
        *,
        nc: NATS,
        js: JetStreamContext,
        subjects: Subjects,
        settings: Settings,
        policy: IntelligentModelRouter,
        live_state: Callable[[], LiveState],
        budgets: RouterBudgets | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.settings = settings
        self.policy = policy
        self.live_state = live_state
        self.budgets = budgets
        self.metrics = metrics or FleetMetrics(policy.registry, subjects=subjects)

    async def on_job(self, msg: Msg) -> Outcome:
        headers = msg.headers or {}
        reply_to = headers.get(REPLY_TO_HEADER)
        job_id = job_id_for(msg.data, headers.get(MSG_ID_HEADER), lambda: position_of(msg))
        accepted_at = stream_time(msg)
        # The look-up of an earlier Result travels while the job is decoded and routed (no
        # I/O); it is awaited before anything is reserved, published or counted. A job whose
        # id the intake made has none at its first delivery: no look-up.
        if headers.get(FRESH_ID_HEADER) == job_id and num_delivered(msg) == 1:
            finished: Coroutine[Any, Any, bool] = _no_result()
        else:
            finished = await self._finished_sent(job_id, reply_to)
        try:
            job = self._decode_job(msg.data)
        except Rejection as rej:
            if await finished:
                return DONE
            log.warning("job %s rejected: %s", job_id, rej)
            await self._reject(job_id, msg.data, rej, reply_to)
            return DONE
        except BaseException:
            await finished  # never left running behind a bug
            raise
        decided = await self._decide(msg, job, job_id=job_id, attempts=[], finished=finished)
        if decided is None:
            return DONE
        decision, reservation = decided
        self._count(decision, [])
        if decision.rule == "wait":
            return self._wait(job_id, decision)
        await self._dispatch_or_fail(
            job_id, job, decision, attempts=[], reply_to=reply_to, accepted_at=accepted_at, reservation=reservation
        )
        return DONE

    async def on_escalation(self, msg: Msg) -> Outcome:
        # Only our own workers publish here: a bad message is a bug, not a job we can serve.
        prev = decode_dispatch(msg.data)
        if isinstance(prev, DeadLetter):
            return prev
        finished = await self._finished_sent(prev.job_id, prev.reply_to)
        decided = await self._decide(
            msg, prev.job, job_id=prev.job_id, attempts=prev.attempts, finished=finished, resolved=carried(prev)
        )
        if decided is None:
            return DONE
        decision, reservation = decided
        self._count(decision, prev.attempts)
        if decision.rule == "wait":
            return self._wait(prev.job_id, decision)
        await self._dispatch_or_fail(
            prev.job_id,
            prev.job,
            decision,
            attempts=prev.attempts,
            reply_to=prev.reply_to,
            accepted_at=prev.accepted_at,
            reservation=reservation,
        )
        return DONE

    def _count(self, decision: RouteDecision, attempts: list[Attempt]) -> None:
        """The decision, the escalation it makes after a failed attempt, a cooldown wait."""
        self.metrics.record_decision(decision.rule, decision.model.id if decision.model else None, attempts=attempts)
        if decision.rule == "wait":
            self.metrics.record_wait(None, decision.wait_s, source="cooldown")

    def _decode_job(self, data: bytes) -> Job:
        return decode_job(data, max_bytes=self.settings.max_prompt_bytes, known_models=self.policy.registry.models)

    async def _decide(
        self,
        msg: Msg,
        job: Job,
        *,
        job_id: str,
        attempts: list[Attempt],
        finished: Awaitable[bool],
        resolved: Inference | None = None,
    ) -> tuple[RouteDecision, Reservation | None] | None:
        """The policy's decision, with the budget reservation of a paid model; None when
        ``finished`` (the look-up of an earlier Result, running meanwhile) finds one. When a
        budget refuses (the policy's view of it was a moment old), that budget counts as spent
        and the policy decides again: a free local model, another paid one, or budget_exhausted.
        ``resolved``: an escalation's task type and complexity as the first attempt inferred them.

        Raises:
            RuntimeError: the budgets' compare-and-set lost too many races (a transient fault).
        """
        state = self.live_state()
        try:
            decision = self._route(msg, job, job_id=job_id, attempts=attempts, state=state, resolved=resolved)
        finally:
            has_result = await finished  # awaited even when routing raised: never left running
        if has_result:
            return None
        for round_no in range(BUDGET_REROUTES):
            if round_no:
                decision = self._route(msg, job, job_id=job_id, attempts=attempts, state=state, resolved=resolved)
            if decision.model is None or self.budgets is None:
                return decision, None
            reservation, refused = await self.budgets.reserve(
                job_id, len(attempts) + 1, job, decision.model, decision.estimated_cost_usd
            )
            if refused is None:
                return decision, reservation
            state = msgspec.structs.replace(state, budget_left={**state.budget_left, refused.scope: 0.0})
        why = f"budgets kept refusing after {BUDGET_REROUTES} decisions; last: {decision.reasoning}"
        return RouteDecision(model=None, rule="budget_exhausted", error_code="budget_exhausted", reasoning=why), None

    def _route(
        self,
        msg: Msg,
        job: Job,
        *,
        job_id: str,
        attempts: list[Attempt],
        state: LiveState,
        resolved: Inference | None = None,
    ) -> RouteDecision:
        """The policy's decision; a ``wait`` only while the message has deliveries to spare
        (each wait is one), so a job waits out a rate-limit storm but is never dead-lettered
        for waiting."""
        can_wait = num_delivered(msg) < self.settings.max_deliver - 1
        return self.policy.route(
            job,
            attempts=attempts,
            state=state,
            job_id=job_id,
            now=time.time() if can_wait else None,
            resolved=resolved,
        )

    @staticmethod
    def _wait(job_id: str, decision: RouteDecision) -> Wait:
        log.info("job %s waits %.1fs: %s", job_id, decision.wait_s, decision.reasoning)
        return Wait(decision.wait_s, why=decision.reasoning)

    async def _finished_sent(self, job_id: str, reply_to: str | None) -> Coroutine[Any, Any, bool]:
        """Whether ``job_id`` already has a Result (then a waiting requester gets it): the
        look-up is sent now, and answered by awaiting what this returns."""
        return self._finished(job_id, reply_to, await stored_result_sent(self.js, self.subjects, job_id))

    async def _finished(self, job_id: str, reply_to: str | None, found: Awaitable[bytes | None]) -> bool:
        existing = await found
        if existing is None:
            return False
        log.info("job %s already has a Result: acked without routing it again", job_id)
        if reply_to:
            await self.nc.publish(reply_to, existing)
        return True

    # -- a job that cannot go on ---------------------------------------------------------

    async def give_up(self, job: GiveUp) -> None:
        """Finish a job that cannot go on with a failed Result, unless it has one already.
        A job never routed also gets its decision, so the ledger has its objective."""
        if job.prev is not None:  # a Dispatch whose attempt never ended still carries its decision
            d = job.prev
            result = failed_result(
                job.job_id,
                d.job,
                d.task_type,
                d.complexity,
                d.reasoning,
                d.attempts,
                job.error,
                job.accepted_at,
                sources=d,
                decision=d.decision,
            )
        else:
            try:
                parsed: Job | None = self._decode_job(job.data)
            except Rejection:
                parsed = None
            reasoning = f"given up: {job.error.code}"
            result = Result(
                job_id=job.job_id,
                success=False,
                reasoning=reasoning,
                error=job.error,
                metadata=parsed.metadata if parsed else None,
                decision=unrouted_decision(job.job_id, parsed.objective() if parsed else excerpt(job.data), reasoning),
            )
        self.metrics.record_decision("given_up", None, attempts=job.prev.attempts if job.prev else ())
        if await publish_result(self.nc, self.js, self.subjects, result, job.reply_to, if_absent=True):
            self.metrics.record_result(result)

    async def _reject(self, job_id: str, data: bytes, rej: Rejection, reply_to: str | None) -> None:
        reasoning = f"rejected: {rej.code}"
        decision = unrouted_decision(job_id, excerpt(data), reasoning)
        result = Result(
            job_id=job_id, success=False, reasoning=reasoning, error=ErrorInfo(rej.code, rej.message), decision=decision
        )
        self.metrics.record_decision("rejected", None)
        await publish_result(self.nc, self.js, self.subjects, result, reply_to)
        self.metrics.record_result(result)

    # -- dispatch, or the end of the road ------------------------------------------------

    async def _dispatch_or_fail(
        self,
        job_id: str,
        job: Job,
        decision: RouteDecision,
        *,
        attempts: list[Attempt],
        reply_to: str | None,
        accepted_at: float,
        reservation: Reservation | None = None,
    ) -> None:
        resolved = decision.resolved or self.policy.infer(job)
        task_type, complexity = resolved.task_type, resolved.complexity
        attempt_no = len(attempts) + 1
        spec = decision.model
        event = routed_decision(job_id, attempt_no, job.objective(), task_type, complexity, decision, job.metadata)
        if spec is None:
            error = exhausted_error(decision, attempts)
            if job.stream:  # the job's stream ends here too: no attempt will follow
                chunk = StreamChunk(job_id=job_id, attempt_no=attempt_no, seq=0, done=True, error=error)
                await self.nc.publish(self.subjects.stream(job_id), encode(chunk))
            result = failed_result(
                job_id, job, task_type, complexity, decision.reasoning, attempts, error, accepted_at, resolved, event
            )
            await publish_result(self.nc, self.js, self.subjects, result, reply_to)
            self.metrics.record_result(result)
            return
        log.debug("job %s attempt %d -> %s (%s)", job_id, attempt_no, spec.id, decision.rule)
        dispatch = Dispatch(
            job_id=job_id,
            job=job,
            task_type=task_type,
            complexity=complexity,
            model=spec.id,
            provider=spec.provider,
            provider_model=spec.provider_model,
            reasoning=decision.reasoning,
            price_in_per_mtok=spec.input_per_mtok,
            price_out_per_mtok=spec.output_per_mtok,
            max_tokens=job.max_tokens or self.policy.rules.default_max_tokens,
            estimated_cost_usd=decision.estimated_cost_usd,
            estimated_latency_ms=decision.estimated_latency_ms,
            attempts=attempts,
            reply_to=reply_to,
            accepted_at=accepted_at,
            task_type_source=resolved.task_type_source,
            complexity_source=resolved.complexity_source,
            budget_hold=reservation.hold if reservation else None,
            budget_keys=reservation.keys if reservation else [],
            decision=event,  # to the ledger with the attempt's outcome: one stored message fewer
        )
        if decision.shadow and attempt_no == 1:
            await send_shadow(
                self.js, self.subjects, job_id, job, model=decision.shadow, experiment=decision.experiment
            )
        subject, msg_id = self.subjects.dispatch(spec.provider), f"dispatch:{job_id}:{attempt_no}"
        await js_publish(self.js, subject, encode(dispatch), msg_id=msg_id)
