"""The router service: takes jobs and escalations, asks the policy, dispatches or fails.

Consumes (durable pull consumers shared by every router process):
    <p>.submit           (JOBS stream)        new jobs
    <p>.escalate.*       (ESCALATE stream)    failed attempts from workers
    max-deliveries advisories (ADVISORIES)   messages given up: failed Result + dead letter
Serves (core NATS, queue group "router"):
    <p>.request          persists the job on <p>.submit first, carrying the reply inbox
Listens (core NATS): <p>.events.attempt, to keep the live state the policy reads.
Watches: every provider's workers (``OrphanWatch``): jobs of a provider without a live
worker for ``no_worker_escalate_s`` are escalated to other models.

A job or escalation handled a second time (a redelivery after a crash, a duplicate that
outlived the de-duplication window) whose job already has a Result is only acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import msgspec
from nats.aio.msg import Msg

from fleet_router.deadletter import DeadLetters, GiveUp
from fleet_router.intake import Rejection, decode_job, excerpt, job_id_for, stream_key
from fleet_router.orphans import OrphanWatch
from fleet_router.policy import IntelligentModelRouter, RouteDecision
from fleet_router.state import LiveStateTracker
from fleet_shared import bus
from fleet_shared.config import Registry, Settings
from fleet_shared.loop import PullLoop, num_delivered
from fleet_shared.publish import (
    MSG_ID_HEADER,
    REPLY_TO_HEADER,
    dead_letter,
    js_publish,
    publish_result,
    stored_result,
)
from fleet_shared.schema import (
    Attempt,
    Decision,
    Dispatch,
    ErrorInfo,
    Job,
    Result,
    StreamChunk,
    TaskType,
    dispatch_decoder,
    encode,
    event_decoder,
)
from fleet_shared.service import FleetService

log = logging.getLogger("fleet.router")

#: a wait shorter than this is not worth a round trip through the queue
MIN_WAIT_S = 0.05


class _Outcome(msgspec.Struct):
    """The part of a Result the live state needs (decoding skips the rest)."""

    success: bool
    attempts: list[Attempt] = []


_outcome_decoder = msgspec.json.Decoder(_Outcome)


class Router(FleetService):
    """One router process. Use as ``async with Router(settings) as r: await r.run()``."""

    name = "fleet-router"
    description = "LLM model router"

    def __init__(self, settings: Settings, *, registry: Registry | None = None) -> None:
        super().__init__(settings)
        self.policy = IntelligentModelRouter(registry or settings.registry())
        self.state = LiveStateTracker(daily_budget_usd=settings.daily_budget_usd)
        self.orphans: OrphanWatch | None = None

    async def setup(self) -> None:
        subj = self.subjects
        self.state.board = self.board  # the policy skips what is down or cooling
        self.loops = await self._consumer_loops()
        self.orphans = OrphanWatch(self.nc, self.js, subj, self.settings, self.policy.registry)
        await self.subscribe(subj.request, self.on_request, queue="router")
        await self.subscribe(subj.attempt_event, self.on_attempt_event)
        # a successful attempt is published only inside its job's Result
        await self.subscribe(subj.result_all, self.on_result)

    async def _consumer_loops(self) -> list[PullLoop]:
        """Jobs, escalations, and max-deliveries advisories (dead letters, never given up)."""
        s, subj, n = self.settings, self.subjects, self.settings.router_concurrency
        common = dict(ack_wait_s=s.ack_wait_s, max_deliver=s.max_deliver, max_ack_pending=n * 8)
        jobs = await bus.ensure_pull_consumer(
            self.js, stream=subj.jobs_stream, durable="router-jobs", filter_subject=subj.submit, **common
        )
        escalations = await bus.ensure_pull_consumer(
            self.js,
            stream=subj.escalate_stream,
            durable="router-escalations",
            filter_subject=subj.escalate_all,
            **common,
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
        dead = DeadLetters(self.js, subj, self.give_up)
        return [
            PullLoop(jobs, self.on_job, name="router-jobs", concurrency=n),
            PullLoop(escalations, self.on_escalation, name="router-escalations", concurrency=n),
            PullLoop(advisories, dead.on_advisory, name="router-deadletter", concurrency=16),
        ]

    def tasks(self):
        return [self.orphans.run(self.stopping)]

    # -- handlers -------------------------------------------------------------------

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

    async def on_job(self, msg: Msg) -> None:
        headers = msg.headers or {}
        reply_to = headers.get(REPLY_TO_HEADER)
        meta = msg.metadata
        job_id = job_id_for(
            msg.data, headers.get(MSG_ID_HEADER), stream_key(meta.stream, meta.sequence.stream, meta.timestamp)
        )
        accepted_at = meta.timestamp.timestamp() if meta.timestamp else time.time()
        if await self._finished(job_id, reply_to):
            await msg.ack()
            return
        try:
            job = decode_job(
                msg.data, max_bytes=self.settings.max_prompt_bytes, known_models=self.policy.registry.models
            )
        except Rejection as rej:
            log.warning("job %s rejected: %s", job_id, rej)
            await self._reject(job_id, msg.data, rej, reply_to)
            await msg.ack()
            return
        decision = self._route(msg, job, job_id=job_id)
        if decision.rule == "wait":
            await self._wait_in_queue(msg, job_id, decision)
            return
        await self._dispatch_or_fail(job_id, job, decision, attempts=[], reply_to=reply_to, accepted_at=accepted_at)
        await msg.ack()

    async def on_escalation(self, msg: Msg) -> None:
        try:
            prev = dispatch_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            # Only our own workers publish here: a bad message is a bug, not a job we can serve.
            log.error("undecodable escalation dead-lettered: %s", exc)
            meta = msg.metadata
            await dead_letter(
                self.js,
                self.subjects,
                stream=meta.stream,
                seq=meta.sequence.stream,
                subject=msg.subject,
                data=msg.data,
                headers=msg.headers,
                reason=f"undecodable: {exc}",
            )
            await msg.term()
            return
        if await self._finished(prev.job_id, prev.reply_to):
            await msg.ack()
            return
        decision = self._route(msg, prev.job, attempts=prev.attempts, job_id=prev.job_id)
        if decision.rule == "wait":
            await self._wait_in_queue(msg, prev.job_id, decision)
            return
        await self._dispatch_or_fail(
            prev.job_id,
            prev.job,
            decision,
            attempts=prev.attempts,
            reply_to=prev.reply_to,
            accepted_at=prev.accepted_at,
        )
        await msg.ack()

    async def on_attempt_event(self, msg: Msg) -> None:
        try:
            event = event_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        self.state.observe(event.attempt)

    async def on_result(self, msg: Msg) -> None:
        try:
            outcome = _outcome_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        if outcome.success and outcome.attempts:  # failed attempts came as attempt events
            self.state.observe(outcome.attempts[-1])

    def _route(self, msg: Msg, job: Job, *, job_id: str, attempts: list[Attempt] | None = None) -> RouteDecision:
        """The policy's decision; a ``wait`` only while the message has deliveries to spare
        (each wait is one), so a job waits out a rate-limit storm but is never dead-lettered
        for waiting."""
        can_wait = num_delivered(msg) < self.settings.max_deliver - 1
        return self.policy.route(
            job, attempts=attempts or (), state=self._live_state(), job_id=job_id, now=time.time() if can_wait else None
        )

    async def _wait_in_queue(self, msg: Msg, job_id: str, decision: RouteDecision) -> None:
        log.info("job %s waits %.1fs: %s", job_id, decision.wait_s, decision.reasoning)
        await msg.nak(delay=max(MIN_WAIT_S, decision.wait_s))

    def _live_state(self):
        """The tracker's snapshot, plus the models of providers that have no live worker."""
        state = self.state.snapshot()
        gone = self.orphans.workerless_models() if self.orphans else frozenset()
        if gone - state.unavailable or gone & state.cooling_until.keys():
            cooling = {m: t for m, t in state.cooling_until.items() if m not in gone}  # no worker: nothing to wait for
            state = msgspec.structs.replace(state, unavailable=state.unavailable | gone, cooling_until=cooling)
        return state

    async def _finished(self, job_id: str, reply_to: str | None) -> bool:
        """Whether ``job_id`` already has a Result (then a waiting requester gets it)."""
        existing = await stored_result(self.js, self.subjects, job_id)
        if existing is None:
            return False
        log.info("job %s already has a Result: acked without routing it again", job_id)
        if reply_to:
            await self.nc.publish(reply_to, existing)
        return True

    # -- outcomes -------------------------------------------------------------------

    async def give_up(self, job: GiveUp) -> None:
        """Finish a job that cannot go on with a failed Result, unless it has one already.
        A job never routed also gets its decision, so the ledger has its objective."""
        if job.prev is not None:
            d = job.prev
            result = self._failed_result(
                job.job_id, d.job, d.task_type, d.complexity, d.reasoning, d.attempts, job.error, job.accepted_at, d
            )
        else:
            try:
                parsed = decode_job(
                    job.data, max_bytes=self.settings.max_prompt_bytes, known_models=self.policy.registry.models
                )
            except Rejection:
                parsed = None
            reasoning = f"given up: {job.error.code}"
            await self._emit(
                Decision(
                    job_id=job.job_id,
                    attempt_no=1,
                    objective=parsed.objective() if parsed else excerpt(job.data),
                    task_type=None,
                    complexity=None,
                    model=None,
                    provider=None,
                    reasoning=reasoning,
                    at=time.time(),
                )
            )
            result = Result(
                job_id=job.job_id,
                success=False,
                reasoning=reasoning,
                error=job.error,
                metadata=parsed.metadata if parsed else None,
            )
        await publish_result(self.nc, self.js, self.subjects, result, job.reply_to, if_absent=True)

    async def _dispatch_or_fail(
        self,
        job_id: str,
        job: Job,
        decision: RouteDecision,
        *,
        attempts: list[Attempt],
        reply_to: str | None,
        accepted_at: float,
    ) -> None:
        resolved = decision.resolved or self.policy.infer(job)
        task_type, complexity = resolved.task_type, resolved.complexity
        attempt_no = len(attempts) + 1
        spec = decision.model
        emitted = self._emit_decision(job_id, attempt_no, job.objective(), task_type, complexity, decision)
        if spec is None:
            await emitted
            error = self._exhausted_error(decision, attempts)
            if job.stream:  # the job's stream ends here too: no attempt will follow
                chunk = StreamChunk(job_id=job_id, attempt_no=attempt_no, seq=0, done=True, error=error)
                await self.nc.publish(self.subjects.stream(job_id), encode(chunk))
            await publish_result(
                self.nc,
                self.js,
                self.subjects,
                self._failed_result(
                    job_id, job, task_type, complexity, decision.reasoning, attempts, error, accepted_at, resolved
                ),
                reply_to,
            )
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
        )
        # both stored before the caller acks; neither waits for the other's ack
        await asyncio.gather(
            emitted,
            js_publish(
                self.js,
                self.subjects.dispatch(spec.provider),
                encode(dispatch),
                msg_id=f"dispatch:{job_id}:{attempt_no}",
            ),
        )

    @staticmethod
    def _exhausted_error(decision: RouteDecision, attempts: list[Attempt]) -> ErrorInfo:
        if not attempts:
            return ErrorInfo(decision.error_code or "no_model_available", decision.reasoning)
        last = attempts[-1].error
        if decision.rule == "fail_fast" and last is not None:  # e.g. invalid_request: the job is wrong
            return ErrorInfo(last.code, last.message)
        detail = f"; last error: {last.code}: {last.message}" if last else ""
        return ErrorInfo("all_models_failed", f"{len(attempts)} attempts failed{detail}")

    @staticmethod
    def _failed_result(job_id, job, task_type, complexity, reasoning, attempts, error, accepted_at, sources) -> Result:
        return Result(
            job_id=job_id,
            success=False,
            task_type=task_type,
            complexity=complexity,
            reasoning=reasoning,
            attempts=attempts,
            error=error,
            metadata=job.metadata if job else None,
            tokens_in=sum(a.tokens_in for a in attempts),
            tokens_out=sum(a.tokens_out for a in attempts),
            cost_usd=sum(a.cost_usd for a in attempts),
            latency_ms=max(0.0, (time.time() - accepted_at) * 1000) if accepted_at else 0.0,
            task_type_source=sources.task_type_source,  # an Inference or the job's last Dispatch
            complexity_source=sources.complexity_source,
        )

    async def _reject(self, job_id: str, data: bytes, rej: Rejection, reply_to: str | None) -> None:
        reasoning = f"rejected: {rej.code}"
        await self._emit(
            Decision(
                job_id=job_id,
                attempt_no=1,
                objective=excerpt(data),
                task_type=None,
                complexity=None,
                model=None,
                provider=None,
                reasoning=reasoning,
                at=time.time(),
            )
        )
        result = Result(job_id=job_id, success=False, reasoning=reasoning, error=ErrorInfo(rej.code, rej.message))
        await publish_result(self.nc, self.js, self.subjects, result, reply_to)

    async def _emit_decision(self, job_id, attempt_no, objective, task_type: TaskType, complexity, decision) -> None:
        spec = decision.model
        await self._emit(
            Decision(
                job_id=job_id,
                attempt_no=attempt_no,
                objective=objective,
                task_type=task_type.value,
                complexity=complexity,
                model=spec.id if spec else None,
                provider=spec.provider if spec else None,
                reasoning=decision.reasoning,
                estimated_cost_usd=decision.estimated_cost_usd,
                estimated_latency_ms=decision.estimated_latency_ms,
                at=time.time(),
                task_type_source=decision.task_type_source,
                complexity_source=decision.complexity_source,
            )
        )

    async def _emit(self, decision: Decision) -> None:
        await js_publish(
            self.js,
            self.subjects.decision_event,
            encode(decision),
            msg_id=f"decision:{decision.job_id}:{decision.attempt_no}",
        )
