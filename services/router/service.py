"""The router service: takes jobs and escalations, asks the policy, dispatches or fails.

Consumes (durable pull consumers shared by every router process):
    <p>.submit           (JOBS stream)      new jobs
    <p>.escalate.*       (ESCALATE stream)  failed attempts from workers
Serves (core NATS, queue group "router"):
    <p>.request          persists the job on <p>.submit first, carrying the reply inbox
Listens (core NATS): <p>.events.attempt, to keep the live state the policy reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import msgspec
from nats.aio.msg import Msg

from fleet_router.intake import Rejection, decode_job, excerpt, job_id_for
from fleet_router.policy import IntelligentModelRouter, RouteDecision
from fleet_router.state import LiveStateTracker
from fleet_shared import bus, health
from fleet_shared.config import Registry, Settings
from fleet_shared.loop import PullLoop
from fleet_shared.publish import MSG_ID_HEADER, REPLY_TO_HEADER, js_publish, publish_result
from fleet_shared.schema import (
    Attempt,
    Decision,
    Dispatch,
    ErrorInfo,
    Job,
    Result,
    TaskType,
    dispatch_decoder,
    encode,
    event_decoder,
)
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router")


class Router:
    """One router process. Use as ``async with Router(settings) as r: await r.run()``."""

    def __init__(self, settings: Settings, *, registry: Registry | None = None) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.policy = IntelligentModelRouter(registry or settings.registry())
        self.state = LiveStateTracker(daily_budget_usd=settings.daily_budget_usd)
        self.nc = None
        self.js = None
        self._loops: list[PullLoop] = []
        self._subs: list = []
        self._service = None
        self._background: set[asyncio.Task] = set()
        self._started = False

    async def __aenter__(self) -> "Router":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        s, subj = self.settings, self.subjects
        self.nc = await bus.connect(s, name="fleet-router")
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, subj, s)
        common = dict(ack_wait_s=s.ack_wait_s, max_deliver=s.max_deliver, max_ack_pending=s.router_concurrency * 8)
        jobs = await bus.ensure_pull_consumer(
            self.js, stream=subj.jobs_stream, durable="router-jobs", filter_subject=subj.submit, **common
        )
        escalations = await bus.ensure_pull_consumer(
            self.js, stream=subj.escalate_stream, durable="router-escalations",
            filter_subject=subj.escalate_all, **common,
        )
        n = s.router_concurrency
        self._loops = [
            PullLoop(jobs, self.on_job, name="router-jobs", concurrency=n),
            PullLoop(escalations, self.on_escalation, name="router-escalations", concurrency=n),
        ]
        self._subs = [
            await self.nc.subscribe(subj.request, queue="router", cb=self.on_request),
            await self.nc.subscribe(subj.attempt_event, cb=self.on_attempt_event),
        ]
        self._service = await health.register(self.nc, "fleet-router", description="LLM model router")

    async def run(self) -> None:
        await asyncio.gather(*(loop.run() for loop in self._loops))

    async def stop(self) -> None:
        if not self._started or self.nc is None:
            return
        self._started = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        for task in list(self._background):
            task.cancel()
        if self._service:
            with contextlib.suppress(Exception):
                await self._service.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()

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
            ack = await self.js.publish(self.subjects.submit, msg.data, headers=headers)
        except Exception as exc:  # stream full, payload too big, JetStream down
            log.warning("request %s not accepted: %s", job_id, exc)
            if msg.reply:
                result = Result(job_id=job_id, success=False, error=ErrorInfo("not_accepted", str(exc)))
                await self.nc.publish(msg.reply, encode(result))
            return
        if ack.duplicate and msg.reply:
            # The first copy carries the first requester's inbox; answer this one from the Result.
            task = asyncio.create_task(self._reply_when_done(job_id, msg.reply))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

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
        job_id = job_id_for(msg.data, headers.get(MSG_ID_HEADER), f"{meta.stream}:{meta.sequence.stream}:{meta.timestamp}")
        accepted_at = meta.timestamp.timestamp() if meta.timestamp else time.time()
        try:
            job = decode_job(msg.data, max_bytes=self.settings.max_prompt_bytes, known_models=set(self.policy.registry.models))
        except Rejection as rej:
            log.warning("job %s rejected: %s", job_id, rej)
            await self._reject(job_id, msg.data, rej, reply_to)
            await msg.ack()
            return
        decision = self.policy.route(job, state=self.state.snapshot())
        await self._dispatch_or_fail(job_id, job, decision, attempts=[], reply_to=reply_to, accepted_at=accepted_at)
        await msg.ack()

    async def on_escalation(self, msg: Msg) -> None:
        try:
            prev = dispatch_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            # Only our own workers publish here: a bad message is a bug, not a job we can serve.
            log.error("undecodable escalation dropped to term(): %s", exc)
            await msg.term()
            return
        decision = self.policy.route(prev.job, attempts=prev.attempts, state=self.state.snapshot())
        await self._dispatch_or_fail(
            prev.job_id, prev.job, decision, attempts=prev.attempts, reply_to=prev.reply_to, accepted_at=prev.accepted_at
        )
        await msg.ack()

    async def on_attempt_event(self, msg: Msg) -> None:
        try:
            event = event_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        self.state.observe(event.attempt)

    # -- outcomes -------------------------------------------------------------------

    async def _dispatch_or_fail(
        self, job_id: str, job: Job, decision: RouteDecision, *, attempts: list[Attempt], reply_to: str | None, accepted_at: float
    ) -> None:
        task_type, complexity = self.policy.resolve(job)
        attempt_no = len(attempts) + 1
        spec = decision.model
        await self._emit_decision(job_id, attempt_no, job.objective(), task_type, complexity, decision)
        if spec is None:
            error = self._exhausted_error(decision, attempts)
            await publish_result(self.nc, self.js, self.subjects, self._failed_result(
                job_id, job, task_type, complexity, decision.reasoning, attempts, error, accepted_at
            ), reply_to)
            return
        dispatch = Dispatch(
            job_id=job_id, job=job, task_type=task_type, complexity=complexity,
            model=spec.id, provider=spec.provider, provider_model=spec.provider_model,
            reasoning=decision.reasoning, price_in_per_mtok=spec.input_per_mtok,
            price_out_per_mtok=spec.output_per_mtok,
            max_tokens=job.max_tokens or self.policy.rules.default_max_tokens,
            estimated_cost_usd=decision.estimated_cost_usd, estimated_latency_ms=decision.estimated_latency_ms,
            attempts=attempts, reply_to=reply_to, accepted_at=accepted_at,
        )
        await js_publish(self.js, self.subjects.dispatch(spec.provider), encode(dispatch), msg_id=f"dispatch:{job_id}:{attempt_no}")

    @staticmethod
    def _exhausted_error(decision: RouteDecision, attempts: list[Attempt]) -> ErrorInfo:
        if not attempts:
            return ErrorInfo(decision.error_code or "no_model_available", decision.reasoning)
        last = attempts[-1].error
        detail = f"; last error: {last.code}: {last.message}" if last else ""
        return ErrorInfo("all_models_failed", f"{len(attempts)} attempts failed{detail}")

    @staticmethod
    def _failed_result(job_id, job, task_type, complexity, reasoning, attempts, error, accepted_at) -> Result:
        return Result(
            job_id=job_id, success=False, task_type=task_type, complexity=complexity, reasoning=reasoning,
            attempts=attempts, error=error, metadata=job.metadata if job else None,
            tokens_in=sum(a.tokens_in for a in attempts), tokens_out=sum(a.tokens_out for a in attempts),
            cost_usd=sum(a.cost_usd for a in attempts),
            latency_ms=max(0.0, (time.time() - accepted_at) * 1000) if accepted_at else 0.0,
        )

    async def _reject(self, job_id: str, data: bytes, rej: Rejection, reply_to: str | None) -> None:
        reasoning = f"rejected: {rej.code}"
        await self._emit(Decision(
            job_id=job_id, attempt_no=1, objective=excerpt(data), task_type=None, complexity=None,
            model=None, provider=None, reasoning=reasoning, at=time.time(),
        ))
        result = Result(job_id=job_id, success=False, reasoning=reasoning, error=ErrorInfo(rej.code, rej.message))
        await publish_result(self.nc, self.js, self.subjects, result, reply_to)

    async def _emit_decision(self, job_id, attempt_no, objective, task_type: TaskType, complexity, decision) -> None:
        spec = decision.model
        await self._emit(Decision(
            job_id=job_id, attempt_no=attempt_no, objective=objective, task_type=task_type.value,
            complexity=complexity, model=spec.id if spec else None, provider=spec.provider if spec else None,
            reasoning=decision.reasoning, estimated_cost_usd=decision.estimated_cost_usd,
            estimated_latency_ms=decision.estimated_latency_ms, at=time.time(),
        ))

    async def _emit(self, decision: Decision) -> None:
        await js_publish(
            self.js, self.subjects.decision_event, encode(decision),
            msg_id=f"decision:{decision.job_id}:{decision.attempt_no}",
        )
