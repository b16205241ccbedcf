"""A provider worker: consumes <p>.dispatch.<provider>, calls the model, settles the job.

Success publishes the final Result (which carries every attempt); a failed attempt goes
back to the router on <p>.escalate.<provider> with the attempt appended, and an
AttemptRecord tells the ledger and the routers at once. The dispatch message is acked only
after those publishes were stored.

Before a call the ``Gate`` may hold the job back: a model cooling down after a 429/529,
or over its fleet-wide rpm/tpm, leaves the job in the queue (``nak`` with the delay).
After a call the ``HealthReporter`` tells the fleet what the outcome means for the model.
A job with ``stream: true`` (or a model whose registry entry says ``stream = true``) is
streamed from the provider; the job's tokens go out on <p>.stream.<job_id>.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

from fleet_shared import bus
from fleet_shared.config import ModelSpec, ProviderEndpoint, Registry, Settings, provider_endpoint
from fleet_shared.kv import Lease, open_bucket
from fleet_shared.loop import PullLoop, keep_alive
from fleet_shared.publish import dead_letter, js_publish, publish_result
from fleet_shared.ratelimit import BUCKET_TTL_S, RateLimiter
from fleet_shared.schema import Attempt, AttemptRecord, Dispatch, ErrorInfo, Result, dispatch_decoder, encode
from fleet_shared.service import FleetService
from fleet_shared.subjects import PROVIDERS
from fleet_workers.gate import Gate
from fleet_workers.lmstudio import LMStudioLoader
from fleet_workers.prober import Prober
from fleet_workers.providers import make_adapter
from fleet_workers.providers.base import ProviderAdapter, ProviderError, ProviderReply, ProviderRequest
from fleet_workers.reporting import HealthReporter
from fleet_workers.streams import StreamPublisher
from fleet_workers.transport import AiohttpTransport, LeanAsyncClient

log = logging.getLogger("fleet.worker")

#: finish reasons meaning "stopped at the token limit", per protocol.
TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})


def too_large(attempt: Attempt, exc: MaxPayloadError) -> Attempt:
    """A successful call whose Result cannot travel on the bus (NATS max_payload): a failed
    ``bad_response`` attempt, so the router escalates and the job ends with a clear reason.
    Its tokens and cost stay: they were spent."""
    error = ErrorInfo("bad_response", f"the answer is too large to deliver: {exc}")
    return msgspec.structs.replace(attempt, success=False, error=error)


def http_client(settings: Settings, *, timeout_s: float | None = None) -> httpx.AsyncClient:
    """The worker's HTTP client: the httpx API over aiohttp's connection pool (see ``transport``)."""
    n = settings.worker_concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    timeout = httpx.Timeout(timeout_s or settings.provider_timeout_s, connect=5.0)
    return LeanAsyncClient(transport=AiohttpTransport(limits=limits), timeout=timeout)


class Worker(FleetService):
    """One worker process for one provider (its micro service: ``fleet-worker-<provider>``)."""

    def __init__(
        self,
        settings: Settings,
        provider: str,
        *,
        endpoint: ProviderEndpoint | None = None,
        adapter: ProviderAdapter | None = None,
        registry: Registry | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of {PROVIDERS}")
        super().__init__(settings)
        self.name = f"fleet-worker-{provider}"
        self.description = f"{provider} worker"
        self.provider = provider
        self.endpoint = endpoint or provider_endpoint(provider)
        self.registry = registry or settings.registry()
        self.adapter = adapter
        self.key_fingerprint = self.endpoint.api_key.fingerprint() if self.endpoint.api_key else ""
        self.gate = Gate(None, None, key_fingerprint=self.key_fingerprint)
        self.reporter: HealthReporter | None = None
        self.prober: Prober | None = None
        self.loader: LMStudioLoader | None = None

    @property
    def grace_s(self) -> float:
        return self.settings.ack_wait_s  # a provider call in flight may take that long

    async def setup(self) -> None:
        s, subj = self.settings, self.subjects
        if self.adapter is None:
            self.adapter = make_adapter(self.provider, self.endpoint, http_client(s))
        await self._start_fleet_state()
        sub = await bus.ensure_pull_consumer(
            self.js,
            stream=subj.dispatch_stream,
            durable=f"worker-{self.provider}",
            filter_subject=subj.dispatch(self.provider),
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            # shared by every process of this provider: room for several at full concurrency
            max_ack_pending=s.worker_concurrency * 8,
        )
        self.loops = [PullLoop(sub, self.on_dispatch, name=f"worker-{self.provider}", concurrency=s.worker_concurrency)]

    async def _start_fleet_state(self) -> None:
        """The rate limiter, the prober candidate and the LM Studio loader (the health board
        is the base's)."""
        s, subj = self.settings, self.subjects
        limiter = RateLimiter(await open_bucket(self.js, subj.rates_bucket, ttl_s=BUCKET_TTL_S))
        self.gate = Gate(self.board, limiter, key_fingerprint=self.key_fingerprint)
        self.reporter = HealthReporter(
            self.board, self.registry, s, provider=self.provider, key_fingerprint=self.key_fingerprint
        )
        await self.reporter.key_changed()
        leases = await open_bucket(self.js, subj.leases_bucket)
        lease = Lease(leases, f"prober.{self.provider}", ttl_s=3 * s.probe_interval_s)
        probe_client = http_client(s, timeout_s=min(10.0, s.provider_timeout_s))
        self.prober = self.add_part(
            Prober(self.provider, self.endpoint, probe_client, self.board, lease, self.registry, s)
        )
        self.prober.start()
        if self.provider == "lmstudio" and s.lmstudio_autoload:
            self.loader = self.add_part(LMStudioLoader(self.endpoint, http_client(s), s))
            self.loader.start()

    async def closed(self) -> None:
        if self.adapter:
            await self.adapter.aclose()

    # -- one job --------------------------------------------------------------------

    async def on_dispatch(self, msg: Msg) -> None:
        try:
            d = dispatch_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            # Only the router publishes here: a bad message is a bug; keep it for an operator.
            log.error("undecodable dispatch dead-lettered: %s", exc)
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
        spec = self.registry.get(d.model)
        verdict = await self.gate.check(d, spec)
        if verdict.wait_s > 0:
            await self._wait_in_queue(msg, d, verdict.wait_s)
            return
        async with keep_alive(msg, self.settings.ack_wait_s / 3):
            attempt, reply, retry_after_s = await self._attempt(d, spec, verdict.error)
        attempts = [*d.attempts, attempt]
        if reply is not None:
            # The successful attempt travels inside the Result (the ledger and the routers
            # read it there): one stored message fewer on the hot path.
            try:
                await publish_result(self.nc, self.js, self.subjects, self.success(d, attempts, reply), d.reply_to)
            except MaxPayloadError as exc:  # refused before sending: nothing was stored
                attempt = attempts[-1] = too_large(attempt, exc)
            await self.gate.settle(verdict.reservation, reply.tokens_in + reply.tokens_out)  # spent either way
            if attempt.success and self.reporter:
                await self.reporter.success(d.model, reply.limit_reset_s)
        if not attempt.success:
            record = AttemptRecord(job_id=d.job_id, attempt_no=len(attempts), attempt=attempt, at=time.time())
            escalation = msgspec.structs.replace(d, attempts=attempts)
            await asyncio.gather(  # both stored before the ack; neither waits for the other
                js_publish(
                    self.js, self.subjects.attempt_event, encode(record), msg_id=f"attempt:{d.job_id}:{len(attempts)}"
                ),
                js_publish(
                    self.js,
                    self.subjects.escalate(self.provider),
                    encode(escalation),
                    msg_id=f"escalate:{d.job_id}:{len(attempts)}",
                ),
            )
            if self.reporter and attempt.error and verdict.error is None:
                await self.reporter.failure(d.model, attempt.error.code, retry_after_s)
        await msg.ack()

    async def _wait_in_queue(self, msg: Msg, d: Dispatch, delay_s: float) -> None:
        """Leave the job queued for ``delay_s``. Each nak counts as a delivery, so a job
        that waited often is put back as a fresh message before max_deliver drops it."""
        meta = msg.metadata
        # (with max_deliver <= 2 a fresh copy would itself be copied at once: just nak)
        if self.settings.max_deliver > 2 and meta.num_delivered >= self.settings.max_deliver - 1:
            copy_id = f"wait:{d.job_id}:{len(d.attempts) + 1}:{meta.sequence.stream}"
            await js_publish(self.js, msg.subject, msg.data, msg_id=copy_id)
            await msg.ack()
            return
        log.debug("job %s waits %.2fs for %s", d.job_id, delay_s, d.model)
        await msg.nak(delay=delay_s)

    async def call(self, d: Dispatch) -> tuple[Attempt, ProviderReply | None]:
        """Call the provider once; never raises: every failure becomes a failed Attempt."""
        attempt, reply, _ = await self._attempt(d, self.registry.get(d.model), None)
        return attempt, reply

    async def _attempt(
        self, d: Dispatch, spec: ModelSpec | None, refused: ErrorInfo | None
    ) -> tuple[Attempt, ProviderReply | None, float | None]:
        stream = d.job.stream or (spec is not None and spec.stream)
        attempt_no = len(d.attempts) + 1
        publisher = StreamPublisher(
            self.nc if d.job.stream else None,
            self.subjects.stream(d.job_id),
            job_id=d.job_id,
            attempt_no=attempt_no,
            model=d.model,
        )
        request = ProviderRequest(
            model=d.provider_model,
            messages=d.job.chat(),
            system=d.job.system_prompt(),
            max_tokens=d.max_tokens,
            temperature=d.job.temperature,
            stream=stream,
            stall_timeout_s=self.settings.stream_stall_s if stream else None,
        )
        started = time.perf_counter()
        error, reply, retry_after_s = refused, None, None
        if error is None:
            error, reply, retry_after_s = await self._call_provider(d, request, publisher.delta if stream else None)
        latency_ms = (time.perf_counter() - started) * 1000
        await publisher.finish(error)
        common = dict(
            model=d.model, provider=self.provider, latency_ms=latency_ms, estimated_cost_usd=d.estimated_cost_usd
        )
        if reply is None:
            log.info("job %s: %s failed (%s)", d.job_id, d.model, error.code if error else "?")
            return Attempt(success=False, error=error, **common), None, retry_after_s
        log.debug(
            "job %s: %s answered in %.1f ms (%d+%d tokens)",
            d.job_id,
            d.model,
            latency_ms,
            reply.tokens_in,
            reply.tokens_out,
        )
        attempt = Attempt(
            success=True,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            cost_usd=self._cost(d, spec, reply),
            ttft_ms=publisher.ttft_ms if stream else None,
            cached_tokens_in=reply.cached_tokens_in,
            reasoning_tokens=reply.reasoning_tokens,
            truncated=reply.finish_reason in TRUNCATED,
            provider_ms=reply.provider_ms,
            **common,
        )
        return attempt, reply, None

    async def _call_provider(self, d: Dispatch, request: ProviderRequest, on_delta):
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

    @staticmethod
    def _cost(d: Dispatch, spec: ModelSpec | None, reply: ProviderReply) -> float:
        if spec is None:  # a model this worker's registry does not know: the router's prices
            return (reply.tokens_in * d.price_in_per_mtok + reply.tokens_out * d.price_out_per_mtok) / 1e6
        return spec.cost_usd(
            reply.tokens_in,
            reply.tokens_out,
            cached_in=reply.cached_tokens_in,
            cache_write_in=reply.cache_write_tokens_in,
        )

    @staticmethod
    def success(d: Dispatch, attempts: list[Attempt], reply: ProviderReply) -> Result:
        return Result(
            job_id=d.job_id,
            success=True,
            content=reply.content,
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
            task_type_source=d.task_type_source,
            complexity_source=d.complexity_source,
        )
