"""A worker's message handling: one Dispatch in, one provider call, an ``Outcome`` out.

Success publishes the final Result (which carries every attempt); a failed attempt goes
back to the router on <p>.escalate.<provider> with the attempt appended, and an
AttemptRecord tells the ledger and the routers at once (``fleet_shared.dispatch.escalate``).
Either way the message is ``Done``, and the loop acks it only after those publishes were
stored. A provider's failure is an attempt that escalates, never a message retry; so is an
answer that fails a quality check (``fleet_workers.validators``: error code ``quality_<check>``).

Before a call the ``Gate`` may hold the job back: a model cooling down after a 429/529, or
over its fleet-wide rpm/tpm, leaves the job in the queue (``Wait``). A job that waited so
often that its next wait would reach max_deliver is put back as a fresh message
(``Requeue``). After a call the ``HealthReporter`` tells the fleet what the outcome means
for the model. A job with ``stream: true`` (or a model whose registry entry says
``stream = true``) is streamed from the provider; its tokens go out on <p>.stream.<job_id>.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext

from fleet_shared.budget import BudgetBook
from fleet_shared.config import Settings
from fleet_shared.dispatch import decode_dispatch, escalate
from fleet_shared.loop import keep_alive
from fleet_shared.metrics import FleetMetrics
from fleet_shared.outcome import DONE, DeadLetter, Outcome, Requeue, Wait
from fleet_shared.publish import publish_result
from fleet_shared.registry import ModelSpec, Registry
from fleet_shared.schema import Attempt, Dispatch, ErrorInfo, Result
from fleet_shared.subjects import Subjects
from fleet_workers.continuation import continued_text, prefilled
from fleet_workers.gate import Gate, Verdict
from fleet_workers.lmstudio import LMStudioLoader
from fleet_workers.providers.base import (
    DeltaSink,
    ProviderAdapter,
    ProviderError,
    ProviderReply,
    ProviderRequest,
    finish_reason,
    job_request,
)
from fleet_workers.reporting import HealthReporter
from fleet_workers.streams import StreamPublisher
from fleet_workers.validators import first_failure

log = logging.getLogger("fleet.worker")

#: Tries to settle a budget hold (each already retries its compare-and-set races).
SETTLE_TRIES = 3
#: finish reasons meaning "stopped at the token limit", per protocol.
TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})


def too_large(attempt: Attempt, exc: MaxPayloadError) -> Attempt:
    """A successful call whose Result cannot travel on the bus (NATS max_payload): a failed
    ``bad_response`` attempt, so the router escalates and the job ends with a clear reason.
    Its tokens and cost stay: they were spent."""
    error = ErrorInfo("bad_response", f"the answer is too large to deliver: {exc}")
    return msgspec.structs.replace(attempt, success=False, error=error)


class DispatchHandler:
    """Handles the Dispatch messages of one provider (a ``PullLoop`` handler: ``handle``).

    Parameters:
        nc, js, subjects: the worker's connection and names.
        settings: ack_wait_s, max_deliver, provider_timeout_s, stream_stall_s,
            first_token_timeout_s are read.
        provider: the provider this worker calls.
        registry: prices and options of the models.
        adapter: the provider's wire protocol.
        gate: admission before a call (cooldowns, rate limits).
        reporter: tells the health board what an outcome means (None: nobody is told).
        loader: loads an LM Studio model before its call (None: not needed).
        budgets: where the router's budget hold of a paid attempt is settled (None: nowhere).
        metrics: counts attempts (GenAI client metrics, cost), waits and the Results
            published here (None: a registry of its own that nobody scrapes).
    """

    def __init__(
        self,
        *,
        nc: NATS,
        js: JetStreamContext,
        subjects: Subjects,
        settings: Settings,
        provider: str,
        registry: Registry,
        adapter: ProviderAdapter,
        gate: Gate,
        reporter: HealthReporter | None = None,
        loader: LMStudioLoader | None = None,
        budgets: BudgetBook | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.nc, self.js, self.subjects, self.settings = nc, js, subjects, settings
        self.provider = provider
        self.registry = registry
        self.adapter = adapter
        self.gate = gate
        self.reporter = reporter
        self.loader = loader
        self.budgets = budgets
        self.metrics = metrics or FleetMetrics(registry, subjects=subjects)
        self.quality_checks = settings.quality_check_set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, looked up once

    async def handle(self, msg: Msg) -> Outcome:
        # Only the router publishes here: a bad message is a bug; keep it for an operator.
        d = decode_dispatch(msg.data)
        if isinstance(d, DeadLetter):
            return d
        spec = self.registry.get(d.model)
        verdict = await self.gate.check(d, spec)
        if verdict.wait_s > 0:
            self.metrics.record_wait(d.model, verdict.wait_s, source=verdict.wait_source)
            return self._wait(msg, d, verdict.wait_s)
        loop = self._loop
        if loop is None:  # on Python 3.11 every look-up is a getpid system call
            loop = self._loop = asyncio.get_running_loop()
        async with keep_alive(msg, self.settings.ack_wait_s / 3, loop=loop):
            attempt, reply, retry_after_s = await self._attempt(d, spec, verdict.error)
        if reply is not None and attempt.success:
            attempt = await self._deliver(d, attempt, reply, verdict)
        elif reply is not None:  # answered, but the answer failed a quality check: spent anyway
            await self.gate.settle(verdict.reservation, reply.tokens_in + reply.tokens_out)
        self.metrics.record_attempt(
            attempt,
            requested_model=d.provider_model,
            response_model=reply.provider_model if reply is not None else None,
            accepted_at=d.accepted_at,
        )
        await self._settle_budget(d, attempt)
        if not attempt.success:
            await escalate(self.js, self.subjects, d, attempt, provider=self.provider)
            if self.reporter and attempt.error and verdict.error is None:
                await self.reporter.failure(d.model, attempt.error.code, retry_after_s)
        return DONE

    async def _settle_budget(self, d: Dispatch, attempt: Attempt) -> None:
        """Replace the router's hold by what the attempt cost. A failure here must not redo the
        call: it is logged, and the hold expires (budget_hold_s) with the spend uncounted."""
        if self.budgets is None or d.budget_hold is None:
            return
        for tries_left in reversed(range(SETTLE_TRIES)):
            try:
                await self.budgets.settle(d.budget_hold, attempt.cost_usd, d.budget_keys)
                return
            except Exception as exc:
                if not tries_left:
                    log.error(
                        "job %s: budget hold %s not settled ($%.6f): %s", d.job_id, d.budget_hold, attempt.cost_usd, exc
                    )

    def _wait(self, msg: Msg, d: Dispatch, delay_s: float) -> Outcome:
        """Leave the job queued for ``delay_s``. Each wait counts as a delivery, so a job
        that waited often is put back as a fresh message before max_deliver drops it."""
        meta = msg.metadata
        why = f"{d.model} is cooling down or over its rate limit"
        # (with max_deliver <= 2 a fresh copy would itself be copied at once: just wait)
        if self.settings.max_deliver > 2 and meta.num_delivered >= self.settings.max_deliver - 1:
            return Requeue(f"wait:{d.job_id}:{len(d.attempts) + 1}:{meta.sequence.stream}", why=why)
        log.debug("job %s waits %.2fs for %s", d.job_id, delay_s, d.model)
        return Wait(delay_s, why=why)

    async def _deliver(self, d: Dispatch, attempt: Attempt, reply: ProviderReply, verdict: Verdict) -> Attempt:
        """Publish the Result of a successful call; the attempt as it finally stands."""
        # The successful attempt travels inside the Result (the ledger and the routers
        # read it there): one stored message fewer on the hot path.
        try:
            result = success_result(d, [*d.attempts, attempt], reply)
            await publish_result(self.nc, self.js, self.subjects, result, d.reply_to)
            self.metrics.record_result(result)
        except MaxPayloadError as exc:  # refused before sending: nothing was stored
            attempt = too_large(attempt, exc)
        await self.gate.settle(verdict.reservation, reply.tokens_in + reply.tokens_out)  # spent either way
        if attempt.success and self.reporter:
            await self.reporter.success(d.model, reply.limit_reset_s)
        return attempt

    async def _attempt(
        self, d: Dispatch, spec: ModelSpec | None, refused: ErrorInfo | None
    ) -> tuple[Attempt, ProviderReply | None, float | None]:
        """Call the provider once (unless ``refused``); never raises: every failure becomes
        a failed Attempt. (attempt, reply or None, the provider's retry-after)"""
        stream = d.job.stream or (spec is not None and spec.stream)
        partial = continued_text(d)
        publisher = StreamPublisher(
            self.nc if d.job.stream else None,
            self.subjects.stream(d.job_id),
            job_id=d.job_id,
            attempt_no=len(d.attempts) + 1,
            model=d.model,
            continues=len(partial),
        )
        request = job_request(
            d.job,
            model=d.provider_model,
            max_tokens=d.max_tokens,
            stream=stream,
            stall_timeout_s=self.settings.stream_stall_s if stream else None,
            first_token_timeout_s=self.settings.first_token_timeout_s if stream else None,
        )
        started = time.perf_counter()
        error, reply, retry_after_s = refused, None, None
        if error is None:
            error, reply, retry_after_s = await self._call(d, request, partial, publisher, stream)
        latency_ms = (time.perf_counter() - started) * 1000
        if reply is None:
            await publisher.finish(error)
            log.info("job %s: %s failed (%s)", d.job_id, d.model, error.code if error else "?")
            failed = Attempt(
                model=d.model,
                provider=self.provider,
                success=False,
                error=error,
                latency_ms=latency_ms,
                estimated_cost_usd=d.estimated_cost_usd,
                # what the client has seen of this answer: the next model continues it
                partial_content=(partial + "".join(publisher.sent) or None) if d.job.stream else None,
            )
            return failed, None, retry_after_s
        log.debug(
            "job %s: %s answered in %.1f ms (%d+%d tokens)",
            d.job_id,
            d.model,
            latency_ms,
            reply.tokens_in,
            reply.tokens_out,
        )
        attempt = Attempt(
            model=d.model,
            provider=self.provider,
            success=True,
            latency_ms=latency_ms,
            estimated_cost_usd=d.estimated_cost_usd,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            cost_usd=cost_usd(d, spec, reply),
            ttft_ms=publisher.ttft_ms if stream else None,
            cached_tokens_in=reply.cached_tokens_in,
            reasoning_tokens=reply.reasoning_tokens,
            truncated=reply.finish_reason in TRUNCATED,
            provider_ms=reply.provider_ms,
        )
        attempt = self._judge(d, attempt, partial + reply.content, bool(reply.tool_calls))
        await publisher.finish(attempt.error)
        return attempt, reply, None

    def _judge(self, d: Dispatch, attempt: Attempt, answer: str, called_tools: bool) -> Attempt:
        """The attempt as the quality checks see it: failed (tokens and cost kept) when the
        answer fails one; the next model then starts afresh (no partial content to continue)."""
        error = first_failure(
            d.job,
            answer,
            task_type=d.task_type,
            truncated=attempt.truncated,
            called_tools=called_tools,
            checks=self.quality_checks,
        )
        if error is None:
            return attempt
        log.info("job %s: %s's answer failed a quality check (%s): %s", d.job_id, d.model, error.code, error.message)
        return msgspec.structs.replace(attempt, success=False, error=error)

    async def _call(
        self, d: Dispatch, fresh: ProviderRequest, partial: str, publisher: StreamPublisher, stream: bool
    ) -> tuple[ErrorInfo | None, ProviderReply | None, float | None]:
        """The provider call, continuing ``partial`` (an earlier attempt's streamed text) when set."""
        on_delta = publisher.delta if stream else None
        protocol = self.registry.providers[self.provider].protocol
        request = prefilled(fresh, partial, protocol) if partial else fresh
        error, reply, retry_after_s = await self._call_provider(d, request, on_delta)
        if partial and error is not None and error.code == "invalid_request" and not publisher.sent:
            # the model refused the prefill: ask it to continue in a user turn instead
            return await self._call_provider(d, prefilled(fresh, partial, "openai"), on_delta)
        return error, reply, retry_after_s

    async def _call_provider(
        self, d: Dispatch, request: ProviderRequest, on_delta: DeltaSink | None
    ) -> tuple[ErrorInfo | None, ProviderReply | None, float | None]:
        """(error, reply, retry_after_s): exactly one of error and reply is set."""
        try:
            async with asyncio.timeout(self.settings.provider_timeout_s):
                if self.loader is not None:
                    await self.loader.ensure_loaded(d.provider_model)
                return None, await self.adapter.call(request, on_delta), None
        except ProviderError as exc:
            return ErrorInfo(exc.code, exc.message), None, exc.retry_after_s
        except TimeoutError:
            return ErrorInfo("timeout", f"no answer within {self.settings.provider_timeout_s}s"), None, None
        except Exception as exc:  # a bug in an adapter must not lose the job: escalate it
            log.exception("%s adapter failed unexpectedly", self.provider)
            return ErrorInfo("worker_error", type(exc).__name__), None, None


def cost_usd(d: Dispatch, spec: ModelSpec | None, reply: ProviderReply) -> float:
    """What the call cost, at this worker's registry prices (the router's when it has none)."""
    if spec is None:  # a model this worker's registry does not know: the router's prices
        return (reply.tokens_in * d.price_in_per_mtok + reply.tokens_out * d.price_out_per_mtok) / 1e6
    return spec.cost_usd(
        reply.tokens_in,
        reply.tokens_out,
        cached_in=reply.cached_tokens_in,
        cache_write_in=reply.cache_write_tokens_in,
    )


def success_result(d: Dispatch, attempts: list[Attempt], reply: ProviderReply) -> Result:
    """The final Result of a job whose last attempt answered."""
    return Result(
        job_id=d.job_id,
        success=True,
        content=continued_text(d) + reply.content,
        model=d.model,
        provider=d.provider,
        task_type=d.task_type,
        complexity=d.complexity,
        reasoning=d.reasoning,
        attempts=attempts,
        tokens_in=sum(a.tokens_in for a in attempts),
        tokens_out=sum(a.tokens_out for a in attempts),
        cost_usd=sum(a.cost_usd for a in attempts),
        latency_ms=max(0.0, (time.time() - d.accepted_at) * 1000) if d.accepted_at else attempts[-1].latency_ms,
        metadata=d.job.metadata,
        estimated_cost_usd=d.estimated_cost_usd,
        estimated_latency_ms=d.estimated_latency_ms,
        truncated=reply.finish_reason in TRUNCATED,
        tool_calls=reply.tool_calls or None,
        finish_reason=finish_reason(reply),
        task_type_source=d.task_type_source,
        complexity_source=d.complexity_source,
        decision=d.decision,
    )
