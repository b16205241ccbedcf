"""A provider worker: consumes <p>.dispatch.<provider>, calls the model, settles the job.

Success publishes the final Result; a failed attempt goes back to the router on
<p>.escalate.<provider> with the attempt appended. Either way an AttemptRecord feeds the
ledger, and the dispatch message is acked only after those publishes were stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import msgspec
from nats.aio.msg import Msg

from fleet_shared import bus, health
from fleet_shared.config import ProviderEndpoint, Settings, provider_endpoint
from fleet_shared.loop import PullLoop, keep_alive
from fleet_shared.publish import js_publish, publish_result
from fleet_shared.schema import Attempt, AttemptRecord, Dispatch, ErrorInfo, Result, dispatch_decoder, encode
from fleet_shared.subjects import PROVIDERS, Subjects
from fleet_workers.providers import make_adapter
from fleet_workers.providers.base import ProviderAdapter, ProviderError, ProviderReply, ProviderRequest

log = logging.getLogger("fleet.worker")

#: finish reasons meaning "stopped at the token limit", per protocol.
TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})


def http_client(settings: Settings) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=settings.worker_concurrency, max_keepalive_connections=settings.worker_concurrency)
    return httpx.AsyncClient(timeout=httpx.Timeout(settings.provider_timeout_s, connect=5.0), limits=limits)


class Worker:
    """One worker process for one provider."""

    def __init__(
        self,
        settings: Settings,
        provider: str,
        *,
        endpoint: ProviderEndpoint | None = None,
        adapter: ProviderAdapter | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of {PROVIDERS}")
        self.settings = settings
        self.provider = provider
        self.subjects = Subjects(settings.subject_prefix)
        self.endpoint = endpoint or provider_endpoint(provider)
        self.adapter = adapter
        self.nc = None
        self.js = None
        self._loop: PullLoop | None = None
        self._service = None
        self._started = False

    async def __aenter__(self) -> "Worker":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        s, subj = self.settings, self.subjects
        if self.adapter is None:
            self.adapter = make_adapter(self.provider, self.endpoint, http_client(s))
        self.nc = await bus.connect(s, name=f"fleet-worker-{self.provider}")
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, subj, s)
        sub = await bus.ensure_pull_consumer(
            self.js, stream=subj.dispatch_stream, durable=f"worker-{self.provider}",
            filter_subject=subj.dispatch(self.provider), ack_wait_s=s.ack_wait_s, max_deliver=s.max_deliver,
            # shared by every process of this provider: room for several at full concurrency
            max_ack_pending=s.worker_concurrency * 8,
        )
        self._loop = PullLoop(sub, self.on_dispatch, name=f"worker-{self.provider}", concurrency=s.worker_concurrency)
        self._service = await health.register(self.nc, f"fleet-worker-{self.provider}", description=f"{self.provider} worker")

    async def run(self) -> None:
        assert self._loop is not None
        await self._loop.run()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._loop:
            await self._loop.stop(grace_s=self.settings.ack_wait_s)
        if self._service:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self.nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        if self.adapter:
            await self.adapter.aclose()

    # -- one job --------------------------------------------------------------------

    async def on_dispatch(self, msg: Msg) -> None:
        try:
            d = dispatch_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            log.error("undecodable dispatch dropped to term(): %s", exc)
            await msg.term()
            return
        async with keep_alive(msg, self.settings.ack_wait_s / 3):
            attempt, reply = await self.call(d)
        attempts = [*d.attempts, attempt]
        await js_publish(
            self.js, self.subjects.attempt_event,
            encode(AttemptRecord(job_id=d.job_id, attempt_no=len(attempts), attempt=attempt, at=time.time())),
            msg_id=f"attempt:{d.job_id}:{len(attempts)}",
        )
        if reply is not None:
            await publish_result(self.nc, self.js, self.subjects, self.success(d, attempts, reply), d.reply_to)
        else:
            escalation = msgspec.structs.replace(d, attempts=attempts)
            await js_publish(
                self.js, self.subjects.escalate(self.provider), encode(escalation),
                msg_id=f"escalate:{d.job_id}:{len(attempts)}",
            )
        await msg.ack()

    async def call(self, d: Dispatch) -> tuple[Attempt, ProviderReply | None]:
        """Call the provider once; never raises: every failure becomes a failed Attempt."""
        job = d.job
        request = ProviderRequest(
            model=d.provider_model, messages=job.chat(), system=job.system_prompt(),
            max_tokens=d.max_tokens, temperature=job.temperature,
        )
        started = time.perf_counter()
        error: ErrorInfo | None = None
        reply: ProviderReply | None = None
        try:
            async with asyncio.timeout(self.settings.provider_timeout_s):
                reply = await self.adapter.call(request)
        except ProviderError as exc:
            error = ErrorInfo(exc.code, exc.message)
        except TimeoutError:
            error = ErrorInfo("timeout", f"no answer within {self.settings.provider_timeout_s}s")
        except Exception as exc:  # a bug in an adapter must not lose the job: escalate it
            log.exception("%s adapter failed unexpectedly", self.provider)
            error = ErrorInfo("worker_error", type(exc).__name__)
        latency_ms = (time.perf_counter() - started) * 1000
        if reply is None:
            log.info("job %s: %s failed (%s)", d.job_id, d.model, error.code if error else "?")
            return Attempt(model=d.model, provider=self.provider, success=False, error=error, latency_ms=latency_ms), None
        cost = (reply.tokens_in * d.price_in_per_mtok + reply.tokens_out * d.price_out_per_mtok) / 1e6
        attempt = Attempt(
            model=d.model, provider=self.provider, success=True, latency_ms=latency_ms,
            tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, cost_usd=cost,
        )
        return attempt, reply

    @staticmethod
    def success(d: Dispatch, attempts: list[Attempt], reply: ProviderReply) -> Result:
        return Result(
            job_id=d.job_id, success=True, content=reply.content, model=d.model, provider=d.provider,
            task_type=d.task_type, complexity=d.complexity, reasoning=d.reasoning, attempts=attempts,
            tokens_in=sum(a.tokens_in for a in attempts), tokens_out=sum(a.tokens_out for a in attempts),
            cost_usd=sum(a.cost_usd for a in attempts),
            latency_ms=max(0.0, (time.time() - d.accepted_at) * 1000) if d.accepted_at else attempts[-1].latency_ms,
            metadata=d.job.metadata, estimated_cost_usd=d.estimated_cost_usd,
            estimated_latency_ms=d.estimated_latency_ms, truncated=reply.finish_reason in TRUNCATED,
        )
