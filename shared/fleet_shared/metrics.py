"""Every metric of the fleet, in one catalogue, and the one-line functions that record them.

Names: where the OpenTelemetry GenAI semantic conventions name a figure, their metric and
attribute names in Prometheus form (dots become underscores, the unit a suffix:
``gen_ai.client.operation.duration`` -> ``gen_ai_client_operation_duration_seconds``,
``gen_ai.provider.name`` -> ``gen_ai_provider_name``) and their bucket boundaries; the
fleet's own figures under ``fleet_``. ``CATALOGUE`` lists them all; the Prometheus alert
rules and the Grafana dashboard in deploy/ are tested against it.

Labels: every value passes through its label's closed set (``fleet_shared.labels``), so
no job id, prompt or provider text ever becomes a series; anything else is ``_OTHER``.

Each process holds one ``FleetMetrics`` (its own aioprometheus registry: several services
may share a Python process in tests). Figures read from elsewhere at scrape time (consumer
lag, the health board) are ``sources`` (see ``fleet_shared.metrics_sources``), refreshed
by ``refresh()`` just before ``/metrics`` is rendered (``fleet_shared.ops_http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from aioprometheus.collectors import Counter, Gauge, Histogram
from aioprometheus.collectors import Registry as PromRegistry
from aioprometheus.renderer import render

from fleet_shared import labels as L
from fleet_shared.collectors import FastCounter, FastHistogram
from fleet_shared.registry import Registry
from fleet_shared.schema import Attempt, Result
from fleet_shared.subjects import PROVIDERS, Subjects

log = logging.getLogger(__name__)

#: OTel GenAI bucket boundaries (seconds; tokens for token usage).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1, 4, 16 ... 67108864
#: A job may wait in queues and escalate: longer than one call.
JOB_BUCKETS = (*DURATION_BUCKETS, 163.84, 327.68, 655.36)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_GEN_AI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")
_CONSUMER = ("stream", "consumer")


class MetricSpec(NamedTuple):
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    #: which processes record it
    by: str
    buckets: tuple[float, ...] = ()


# fmt: off
CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec("gen_ai_client_token_usage", "histogram", "Tokens per provider call (OTel gen_ai.client.token.usage).", (*_GEN_AI, "gen_ai_token_type"), "worker", TOKEN_BUCKETS),
    MetricSpec("gen_ai_client_operation_duration_seconds", "histogram", "Provider call duration (OTel gen_ai.client.operation.duration).", (*_GEN_AI, "error_type"), "worker", DURATION_BUCKETS),
    MetricSpec("gen_ai_client_operation_time_to_first_chunk_seconds", "histogram", "Call start to the first streamed chunk (OTel gen_ai.client.operation.time_to_first_chunk); streamed calls only.", _GEN_AI, "worker", DURATION_BUCKETS),
    MetricSpec("gen_ai_server_time_to_first_token_seconds", "histogram", "The fleet as a GenAI server: job accepted to its first streamed token, queueing and failed attempts included (OTel gen_ai.server.time_to_first_token).", _GEN_AI, "worker", TTFT_BUCKETS),
    MetricSpec("fleet_jobs_total", "counter", "Jobs finished (Results published), by outcome, error code and model.", ("outcome", "error_code", "model"), "router, worker"),
    MetricSpec("fleet_job_duration_seconds", "histogram", "Job accepted to Result, by outcome.", ("outcome",), "router, worker", JOB_BUCKETS),
    MetricSpec("fleet_decisions_total", "counter", "Routing decisions, by policy rule and chosen model (none: no model).", ("rule", "model"), "router"),
    MetricSpec("fleet_escalations_total", "counter", "Jobs routed again after a failed attempt, from the failed model to the next (none: given up).", ("from_model", "to_model"), "router"),
    MetricSpec("fleet_attempts_total", "counter", "Provider calls, by outcome, error class (transient / permanent / internal) and code.", ("provider", "model", "outcome", "error_class", "error_code"), "worker"),
    MetricSpec("fleet_cost_usd_total", "counter", "Spend in USD, by model and API key fingerprint.", ("provider", "model", "key"), "worker"),
    MetricSpec("fleet_budget_daily_usd", "gauge", "The daily commercial budget (FLEET_DAILY_BUDGET_USD).", (), "router"),
    MetricSpec("fleet_budget_spent_usd", "gauge", "Spent today (UTC day).", (), "router"),
    MetricSpec("fleet_budget_remaining_usd", "gauge", "Budget left today (never below 0).", (), "router"),
    MetricSpec("fleet_model_health", "gauge", "1 for the model's current phase on the health board, 0 for the others.", ("provider", "model", "state"), "router, worker, gateway"),
    MetricSpec("fleet_model_admitted_share", "gauge", "Share of jobs a model is admitted (0 down/cooling, rising while ramping, 1 up).", ("provider", "model"), "router, worker, gateway"),
    MetricSpec("fleet_rate_limit_waits_total", "counter", "Jobs left queued for a rate limit (limiter: the fleet's rpm/tpm; cooldown: a provider's 429).", ("model", "source"), "router, worker"),
    MetricSpec("fleet_rate_limit_wait_seconds_total", "counter", "Seconds of queueing asked for by those waits.", ("model", "source"), "router, worker"),
    MetricSpec("fleet_inflight_messages", "gauge", "Messages being handled now, per consumer (per process: see the instance label).", ("consumer",), "router, worker"),
    MetricSpec("fleet_concurrency_limit", "gauge", "Handlers allowed at once, per consumer and process.", ("consumer",), "router, worker"),
    MetricSpec("fleet_redeliveries_total", "counter", "Messages handled on their second or later delivery.", ("consumer",), "router, worker, ledger"),
    MetricSpec("fleet_jetstream_consumer_pending_messages", "gauge", "Consumer lag: messages in the stream not yet delivered to the consumer.", _CONSUMER, "router, worker, ledger"),
    MetricSpec("fleet_jetstream_consumer_ack_pending_messages", "gauge", "Delivered, not yet acknowledged.", _CONSUMER, "router, worker, ledger"),
    MetricSpec("fleet_jetstream_consumer_redelivered_messages", "gauge", "Messages redelivered and not yet acknowledged.", _CONSUMER, "router, worker, ledger"),
    MetricSpec("fleet_jetstream_stream_messages", "gauge", "Messages stored in a stream (the dead-letter stream: what was given up).", ("stream",), "router"),
    MetricSpec("fleet_ledger_batch_size", "histogram", "Messages per ledger transaction.", ("consumer",), "ledger", BATCH_BUCKETS),
    MetricSpec("fleet_ledger_commit_seconds", "histogram", "Ledger transaction latency (write and commit).", ("consumer",), "ledger", COMMIT_BUCKETS),
    MetricSpec("fleet_ledger_batches_total", "counter", "Transactions committed, per consumer.", ("consumer",), "ledger"),
    MetricSpec("fleet_ledger_messages_total", "counter", "Messages acked after commit, per consumer.", ("consumer",), "ledger"),
    MetricSpec("fleet_ledger_rows_written_total", "counter", "Rows upserted, per table.", ("table",), "ledger"),
    MetricSpec("fleet_ledger_errors_total", "counter", "Ledger failures per consumer and kind.", ("consumer", "kind"), "ledger"),
    MetricSpec("fleet_metrics_source_errors_total", "counter", "Scrape-time sources that failed or timed out (their figures are stale).", ("collector",), "every service"),
)
# fmt: on
SPECS = {spec.name: spec for spec in CATALOGUE}
#: Scrape-time sources (``add_source``): a closed set like every label.
SOURCES = ("jetstream", "health_board", "budget")

Source = Callable[[], Awaitable[None]]


class FleetMetrics:
    """The catalogue's collectors for one process, and the functions that record them.

    Parameters:
        registry: the model registry: model ids and provider model names are the label sets.
        subjects: the stream names are the ``stream`` label's set.
        key_fingerprint: a worker's API key fingerprint (``Secret.fingerprint``), the ``key``
            label of its spend; never the key.
    """

    def __init__(
        self, registry: Registry | None = None, *, subjects: Subjects | None = None, key_fingerprint: str = ""
    ) -> None:
        self.prom = PromRegistry()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        for spec in CATALOGUE:
            self._add(spec)
        models = registry.models if registry is not None else {}
        self.provider_models = {m: spec.provider_model for m, spec in models.items()}
        self.providers = {m: spec.provider for m, spec in models.items()}
        self.key = L.key_label(key_fingerprint)
        self.label_sets = _label_sets(models.keys(), self.provider_models.values(), subjects, self.key)
        self._sources: dict[str, Source] = {}
        #: messages being handled now, per consumer (see ``handling``)
        self._inflight: dict[str, int] = {}

    # -- recording (one line per call site) -------------------------------------------

    def record_attempt(
        self,
        attempt: Attempt,
        *,
        requested_model: str,
        response_model: str | None = None,
        accepted_at: float = 0.0,
        now: float | None = None,
    ) -> None:
        """One provider call, as the worker finished it.

        Parameters:
            requested_model: the provider's model name asked for (``Dispatch.provider_model``).
            response_model: the one the provider says answered (``ProviderReply.provider_model``).
            accepted_at: when the fleet accepted the job (``Dispatch.accepted_at``): with a
                streamed answer, gives the server-side time to first token.
        """
        gen_ai = self._gen_ai(attempt.provider, requested_model, response_model)
        code = attempt.error.code if attempt.error is not None else None
        duration_labels = {**gen_ai, "error_type": self._bound("error_type", code)} if code else gen_ai
        self.histogram("gen_ai_client_operation_duration_seconds").observe(duration_labels, attempt.latency_ms / 1e3)
        if attempt.success:
            for token_type, count in (("input", attempt.tokens_in), ("output", attempt.tokens_out)):
                self.histogram("gen_ai_client_token_usage").observe({**gen_ai, "gen_ai_token_type": token_type}, count)
        if attempt.ttft_ms is not None:
            self.histogram("gen_ai_client_operation_time_to_first_chunk_seconds").observe(gen_ai, attempt.ttft_ms / 1e3)
            if accepted_at > 0:
                now = time.time() if now is None else now
                started = now - attempt.latency_ms / 1e3
                ttft_s = max(0.0, started - accepted_at + attempt.ttft_ms / 1e3)
                self.histogram("gen_ai_server_time_to_first_token_seconds").observe(gen_ai, ttft_s)
        model = {"provider": self._bound("provider", attempt.provider), "model": self._bound("model", attempt.model)}
        outcome = {
            "outcome": "success" if attempt.success else "failure",
            "error_class": L.error_class(code),
            "error_code": self._bound("error_code", code),
        }
        self.counter("fleet_attempts_total").inc({**model, **outcome})
        if attempt.cost_usd > 0:
            self.counter("fleet_cost_usd_total").add({**model, "key": self.key}, attempt.cost_usd)

    def record_decision(self, rule: str, model: str | None, *, attempts: Sequence[Attempt] = ()) -> None:
        """A routing decision (``RouteDecision.rule``, the chosen model id or None); with the
        job's failed ``attempts``, also the escalation from the last one's model."""
        chosen = self._bound("model", model)
        self.counter("fleet_decisions_total").inc({"rule": self._bound("rule", rule), "model": chosen})
        if attempts and rule != "wait":  # a wait decides nothing yet: counted when it routes
            escalation = {"from_model": self._bound("model", attempts[-1].model), "to_model": chosen}
            self.counter("fleet_escalations_total").inc(escalation)

    def record_result(self, result: Result) -> None:
        """A job's final Result, where it is published."""
        outcome = "success" if result.success else "failure"
        code = result.error.code if result.error is not None else None
        labels = {"outcome": outcome, "error_code": self._bound("error_code", code)}
        self.counter("fleet_jobs_total").inc({**labels, "model": self._bound("model", result.model)})
        if result.latency_ms > 0:
            self.histogram("fleet_job_duration_seconds").observe({"outcome": outcome}, result.latency_ms / 1e3)

    def record_wait(self, model: str | None, seconds: float, *, source: str) -> None:
        """A job left queued ``seconds`` for a rate limit (``source``: limiter | cooldown;
        ``model`` None when the router waits before choosing one)."""
        labels = {"model": self._bound("model", model), "source": self._bound("source", source)}
        self.counter("fleet_rate_limit_waits_total").inc(labels)
        self.counter("fleet_rate_limit_wait_seconds_total").add(labels, max(0.0, seconds))

    def record_delivery(self, consumer: str, num_delivered: int) -> None:
        """A message about to be handled (counts it when it is a redelivery)."""
        if num_delivered > 1:
            self.counter("fleet_redeliveries_total").inc({"consumer": self._bound("consumer", consumer)})

    @contextlib.contextmanager
    def inflight(self, consumer: str) -> Iterator[None]:
        """``with metrics.inflight("worker-openai"): await handler(msg)``."""
        self.handling(consumer)
        try:
            yield
        finally:
            self.handled(consumer)

    def handling(self, consumer: str) -> None:
        """A message of ``consumer`` is being handled (until ``handled``). A plain count, copied
        into the gauge when the metrics are rendered: a gauge update (label checks, the label
        set serialised to find the series) twice per message was ~2 % of a worker's CPU."""
        self._inflight[consumer] = self._inflight.get(consumer, 0) + 1

    def handled(self, consumer: str) -> None:
        self._inflight[consumer] -= 1

    def set_concurrency(self, consumer: str, limit: int) -> None:
        self.gauge("fleet_concurrency_limit").set({"consumer": self._bound("consumer", consumer)}, limit)
        self.gauge("fleet_inflight_messages").add({"consumer": self._bound("consumer", consumer)}, 0)

    def record_budget(self, *, spent_usd: float, daily_budget_usd: float, remaining_usd: float | None = None) -> None:
        """Today's spend against the daily budget (``remaining_usd``: what is left once open
        holds are set aside; default the budget less the spend)."""
        left = daily_budget_usd - spent_usd if remaining_usd is None else remaining_usd
        self.gauge("fleet_budget_daily_usd").set({}, daily_budget_usd)
        self.gauge("fleet_budget_spent_usd").set({}, spent_usd)
        self.gauge("fleet_budget_remaining_usd").set({}, max(0.0, left))

    def record_ledger_commit(
        self, consumer: str, *, messages: int, rows: Mapping[str, int], seconds: float | None = None
    ) -> None:
        """One committed ledger transaction of ``messages`` messages that took ``seconds``."""
        labels = {"consumer": self._bound("consumer", consumer)}
        self.histogram("fleet_ledger_batch_size").observe(labels, messages)
        if seconds is not None:
            self.histogram("fleet_ledger_commit_seconds").observe(labels, seconds)
        self.counter("fleet_ledger_batches_total").inc(labels)
        self.counter("fleet_ledger_messages_total").add(labels, messages)
        for table, count in rows.items():
            if count:
                self.counter("fleet_ledger_rows_written_total").add({"table": self._bound("table", table)}, count)

    def record_ledger_error(self, consumer: str, kind: str) -> None:
        labels = {"consumer": self._bound("consumer", consumer), "kind": self._bound("kind", kind)}
        self.counter("fleet_ledger_errors_total").inc(labels)

    # -- set by scrape-time sources ---------------------------------------------------

    def set_model_health(self, model: str, *, phase: str, admitted_share: float) -> None:
        provider = self._provider_of(model)
        base = {"provider": provider, "model": self._bound("model", model)}
        for state in L.HEALTH_STATES:
            self.gauge("fleet_model_health").set({**base, "state": state}, 1 if state == phase else 0)
        self.gauge("fleet_model_admitted_share").set(base, admitted_share)

    def set_consumer(self, stream: str, consumer: str, *, pending: int, ack_pending: int, redelivered: int) -> None:
        labels = {"stream": self._bound("stream", stream), "consumer": self._bound("consumer", consumer)}
        self.gauge("fleet_jetstream_consumer_pending_messages").set(labels, pending)
        self.gauge("fleet_jetstream_consumer_ack_pending_messages").set(labels, ack_pending)
        self.gauge("fleet_jetstream_consumer_redelivered_messages").set(labels, redelivered)

    def set_stream(self, stream: str, *, messages: int) -> None:
        self.gauge("fleet_jetstream_stream_messages").set({"stream": self._bound("stream", stream)}, messages)

    def add_source(self, name: str, source: Source) -> None:
        """Run ``source`` before each scrape (``name`` one of ``SOURCES``)."""
        if name not in SOURCES:
            raise ValueError(f"unknown metrics source {name!r}; one of {SOURCES}")
        self._sources[name] = source

    async def refresh(self, *, timeout_s: float = 2.0) -> None:
        """Run every source, each within ``timeout_s``; a failed one leaves its figures stale
        and is counted (a scrape never fails because NATS is slow)."""

        async def one(name: str, source: Source) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await source()
            except Exception as exc:
                log.info("metrics source %s failed: %s", name, exc)
                self.counter("fleet_metrics_source_errors_total").inc({"collector": name})

        await asyncio.gather(*(one(n, s) for n, s in self._sources.items()))

    def render(self, accept: Sequence[str] = ()) -> tuple[bytes, dict[str, str]]:
        """The Prometheus text exposition and its HTTP headers."""
        gauge = self.gauge("fleet_inflight_messages")
        for consumer, count in self._inflight.items():
            gauge.set({"consumer": self._bound("consumer", consumer)}, count)
        body, headers = render(self.prom, list(accept))
        return body, dict(headers)

    # -- helpers ------------------------------------------------------------------------

    def _bound(self, label: str, value: str | None) -> str:
        return self.label_sets[label].bound(value)

    def _gen_ai(self, provider: str, requested: str, response: str | None) -> dict[str, str]:
        labels = {
            "gen_ai_operation_name": L.GEN_AI_OPERATION.get(provider, "chat"),
            "gen_ai_provider_name": L.GEN_AI_PROVIDER.get(provider, L.OTHER),
            "gen_ai_request_model": self._bound("gen_ai_request_model", requested),
        }
        if response:
            labels["gen_ai_response_model"] = self._bound("gen_ai_response_model", response)
        return labels

    def _provider_of(self, model: str) -> str:
        return self._bound("provider", self.providers.get(model))

    def _add(self, spec: MetricSpec) -> None:
        if spec.kind == "counter":
            self._counters[spec.name] = FastCounter(spec.name, spec.help, registry=self.prom)
        elif spec.kind == "gauge":
            self._gauges[spec.name] = Gauge(spec.name, spec.help, registry=self.prom)
        else:
            self._histograms[spec.name] = FastHistogram(spec.name, spec.help, registry=self.prom, buckets=spec.buckets)

    # the collectors by name (KeyError: not in CATALOGUE, or not of that kind)
    def counter(self, name: str) -> Counter:
        return self._counters[name]

    def gauge(self, name: str) -> Gauge:
        return self._gauges[name]

    def histogram(self, name: str) -> Histogram:
        return self._histograms[name]


def _label_sets(
    models: Iterable[str], provider_models: Iterable[str], subjects: Subjects | None, key: str
) -> dict[str, L.LabelSet]:
    model_ids = L.LabelSet([*models, L.NONE])
    streams = _streams(subjects) if subjects is not None else ()
    return {
        "gen_ai_operation_name": L.LabelSet(["chat", *L.GEN_AI_OPERATION.values()]),
        "gen_ai_provider_name": L.LabelSet(L.GEN_AI_PROVIDER.values()),
        "gen_ai_token_type": L.LabelSet(L.TOKEN_TYPES),
        "gen_ai_request_model": L.LabelSet(provider_models),
        "gen_ai_response_model": L.PrefixedSet(provider_models),
        "error_type": L.LabelSet(L.ERROR_CODES),
        "error_code": L.LabelSet([*L.ERROR_CODES, L.NONE]),
        "provider": L.LabelSet(PROVIDERS),
        "outcome": L.LabelSet(L.OUTCOMES),
        "error_class": L.LabelSet(L.ERROR_CLASSES),
        "state": L.LabelSet(L.HEALTH_STATES),
        "from_model": model_ids,
        "to_model": model_ids,
        "collector": L.LabelSet(SOURCES),
        "model": model_ids,
        "rule": L.LabelSet(L.RULES),
        "source": L.LabelSet(L.WAIT_SOURCES),
        "consumer": L.LabelSet(L.CONSUMERS),
        "stream": L.LabelSet(streams),
        "kind": L.LabelSet(L.LEDGER_ERROR_KINDS),
        "table": L.LabelSet(L.LEDGER_TABLES),
        "key": L.LabelSet({key, L.NONE}),
    }


def _streams(subjects: Subjects) -> tuple[str, ...]:
    s = subjects
    return (
        s.jobs_stream,
        s.dispatch_stream,
        s.escalate_stream,
        s.results_stream,
        s.events_stream,
        s.advisories_stream,
        s.deadletter_stream,
    )
