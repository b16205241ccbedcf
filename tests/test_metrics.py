"""The metrics catalogue and its recording functions (pure: no NATS, no HTTP)."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_shared import labels as L
from fleet_shared.availability import HealthBoard, cooldown, down
from fleet_shared.metrics import CATALOGUE, SOURCES, FleetMetrics
from fleet_shared.metrics_sources import health_source
from fleet_shared.registry import load_registry
from fleet_shared.schema import Attempt, ErrorInfo, Result
from fleet_shared.subjects import Subjects
from tests.metrics_text import parse, value

REGISTRY = load_registry()
SUBJECTS = Subjects("llm")


def fresh() -> FleetMetrics:
    return FleetMetrics(REGISTRY, subjects=SUBJECTS, key_fingerprint="0123456789ab")


def scrape(metrics: FleetMetrics):
    body, headers = metrics.render()
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def ok_attempt(**kw) -> Attempt:
    base = dict(model="openai", provider="openai", success=True, latency_ms=1500.0, tokens_in=12, tokens_out=30)
    return Attempt(**{**base, **kw})


# -- the catalogue -----------------------------------------------------------------------


def test_catalogue_names_follow_prometheus_and_otel_conventions():
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        assert re.fullmatch(r"(gen_ai|fleet)_[a-z0-9_]+", spec.name), spec.name
        assert spec.kind in ("counter", "gauge", "histogram")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.help and spec.by
        assert (spec.kind == "histogram") == bool(spec.buckets)
        assert list(spec.buckets) == sorted(spec.buckets)
    # the OTel GenAI conventions' metrics, in Prometheus form, with their required attributes
    by_name = {spec.name: spec for spec in CATALOGUE}
    tokens = by_name["gen_ai_client_token_usage"]
    assert {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_token_type"} <= set(tokens.labels)
    assert tokens.buckets[:3] == (1, 4, 16) and tokens.buckets[-1] == 67108864
    duration = by_name["gen_ai_client_operation_duration_seconds"]
    assert {"gen_ai_request_model", "gen_ai_response_model", "error_type"} <= set(duration.labels)
    assert duration.buckets[0] == 0.01 and duration.buckets[-1] == 81.92
    assert by_name["gen_ai_server_time_to_first_token_seconds"].buckets[0] == 0.001


def test_every_label_of_the_catalogue_has_a_closed_set():
    metrics = fresh()
    for spec in CATALOGUE:
        for label in spec.labels:
            assert label in metrics.label_sets, f"{spec.name}: label {label} has no closed set"


def test_error_classes_agree_with_the_workers_error_tree():
    from fleet_workers.providers.base import ERROR_CLASSES
    from fleet_workers.providers.errors import TRANSIENT

    assert set(TRANSIENT) == L.TRANSIENT_ERRORS
    assert set(ERROR_CLASSES) == L.TRANSIENT_ERRORS | L.PERMANENT_ERRORS
    assert {L.error_class(code) for code in ERROR_CLASSES} == {"transient", "permanent"}
    assert L.error_class("worker_error") == "internal" and L.error_class(None) == "none"


def test_router_codes_and_rules_are_in_the_closed_sets():
    from fleet_router import deadletter, intake, orphans, policy

    assert {orphans.NO_WORKER, deadletter.MAX_DELIVERIES} <= L.JOB_ERRORS
    rejections = set(re.findall(r'Rejection\("(\w+)"', inspect.getsource(intake)))
    assert rejections and rejections <= L.ERROR_CODES
    source = inspect.getsource(policy)
    rules = set(re.findall(r'rule="(\w+)"', source)) | set(re.findall(r'return \(\s+"(\w+)",', source))
    assert {"simple_local", "complex", "wait", "exhausted"} <= rules <= L.RULES


# -- recording ---------------------------------------------------------------------------


def test_a_successful_attempt_records_tokens_duration_ttft_and_cost():
    metrics = fresh()
    attempt = ok_attempt(cost_usd=0.25, ttft_ms=500.0)
    metrics.record_attempt(
        attempt, requested_model="gpt-4o", response_model="gpt-4o-2024-08-06", accepted_at=100.0, now=110.0
    )
    s = scrape(metrics)
    gen_ai = dict(gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o", gen_ai_operation_name="chat")
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **gen_ai) == 12
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **gen_ai) == 30
    assert value(s, "gen_ai_client_operation_duration_seconds_sum", **gen_ai) == pytest.approx(1.5)
    assert value(s, "gen_ai_client_operation_duration_seconds_count", gen_ai_response_model="gpt-4o-2024-08-06") == 1
    assert value(s, "gen_ai_client_operation_time_to_first_chunk_seconds_sum") == pytest.approx(0.5)
    # accepted at 100, the call started at 110 - 1.5, its first token 0.5 s later
    assert value(s, "gen_ai_server_time_to_first_token_seconds_sum") == pytest.approx(9.0)
    assert value(s, "fleet_attempts_total", model="openai", outcome="success", error_class="none") == 1
    assert value(s, "fleet_cost_usd_total", model="openai", key="0123456789ab") == pytest.approx(0.25)


def test_a_failed_attempt_records_its_error_type_and_class():
    metrics = fresh()
    failed = Attempt(
        model="gemini", provider="gemini", success=False, error=ErrorInfo("rate_limited", "429"), latency_ms=80.0
    )
    metrics.record_attempt(failed, requested_model="gemini-2.5-pro")
    s = scrape(metrics)
    assert value(s, "gen_ai_client_operation_duration_seconds_count", error_type="rate_limited") == 1
    assert value(s, "gen_ai_client_operation_duration_seconds_count", gen_ai_provider_name="gcp.gemini") == 1
    assert value(s, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="generate_content") == 1
    assert value(s, "gen_ai_client_token_usage_count") == 0  # no usage reported for a failure
    labels = dict(outcome="failure", error_class="transient", error_code="rate_limited")
    assert value(s, "fleet_attempts_total", model="gemini", **labels) == 1
    assert value(s, "fleet_cost_usd_total") == 0


def test_decisions_count_rules_and_escalations_from_the_failed_model():
    metrics = fresh()
    failed = Attempt(model="local_mlx", provider="lmstudio", success=False, error=ErrorInfo("timeout", "slow"))
    metrics.record_decision("simple_local", "local_mlx")
    metrics.record_decision("wait", None, attempts=[failed])  # a wait decides nothing yet
    metrics.record_decision("complex", "claude", attempts=[failed])
    metrics.record_decision("exhausted", None, attempts=[failed, failed])
    s = scrape(metrics)
    assert value(s, "fleet_decisions_total", rule="simple_local", model="local_mlx") == 1
    assert value(s, "fleet_decisions_total", rule="exhausted", model="none") == 1
    assert value(s, "fleet_escalations_total", from_model="local_mlx", to_model="claude") == 1
    assert value(s, "fleet_escalations_total", from_model="local_mlx", to_model="none") == 1
    assert value(s, "fleet_escalations_total") == 2


def test_results_count_jobs_by_outcome_error_code_and_model():
    metrics = fresh()
    metrics.record_result(Result(job_id="a", success=True, model="claude", latency_ms=2000.0))
    metrics.record_result(Result(job_id="b", success=False, error=ErrorInfo("too_large", "big")))
    metrics.record_result(Result(job_id="c", success=False, error=ErrorInfo("a brand new code", "?")))
    s = scrape(metrics)
    assert value(s, "fleet_jobs_total", outcome="success", error_code="none", model="claude") == 1
    assert value(s, "fleet_jobs_total", outcome="failure", error_code="too_large", model="none") == 1
    assert value(s, "fleet_jobs_total", outcome="failure", error_code=L.OTHER) == 1
    assert value(s, "fleet_job_duration_seconds_sum", outcome="success") == pytest.approx(2.0)


def test_waits_deliveries_inflight_budget_and_ledger():
    metrics = fresh()
    metrics.record_wait("openai", 12.5, source="limiter")
    metrics.record_wait(None, 3.0, source="cooldown")
    metrics.record_delivery("worker-openai", 1)
    metrics.record_delivery("worker-openai", 3)
    metrics.set_concurrency("worker-openai", 64)
    with metrics.inflight("worker-openai"):
        inside = scrape(metrics)
    metrics.record_budget(spent_usd=12.0, daily_budget_usd=10.0)
    metrics.record_ledger_commit("events", messages=40, rows={"attempts": 40, "routing_decisions": 0}, seconds=0.02)
    metrics.record_ledger_error("results", "transient")
    s = scrape(metrics)
    assert value(s, "fleet_rate_limit_waits_total", model="openai", source="limiter") == 1
    assert value(s, "fleet_rate_limit_wait_seconds_total", model="openai") == 12.5
    assert value(s, "fleet_rate_limit_waits_total", model="none", source="cooldown") == 1
    assert value(s, "fleet_redeliveries_total", consumer="worker-openai") == 1
    assert value(inside, "fleet_inflight_messages", consumer="worker-openai") == 1
    assert value(s, "fleet_inflight_messages", consumer="worker-openai") == 0
    assert value(s, "fleet_concurrency_limit", consumer="worker-openai") == 64
    assert value(s, "fleet_budget_remaining_usd") == 0  # overspent: never negative
    assert value(s, "fleet_budget_spent_usd") == 12
    assert value(s, "fleet_ledger_batch_size_sum", consumer="events") == 40
    assert value(s, "fleet_ledger_commit_seconds_count", consumer="events") == 1
    assert value(s, "fleet_ledger_rows_written_total", table="attempts") == 40
    assert value(s, "fleet_ledger_errors_total", consumer="results", kind="transient") == 1


def test_health_source_reports_each_models_phase_one_hot():
    board = HealthBoard(kv=None)  # its live copy only: no bucket read
    board.models["claude"] = down("auth")
    board.models["openai"] = cooldown("rate_limited", 3600.0, ramp_s=30.0)
    metrics = fresh()
    metrics.add_source("health_board", health_source(metrics, board, list(REGISTRY.models)))
    asyncio.run(metrics.refresh())
    s = scrape(metrics)
    assert value(s, "fleet_model_health", model="claude", provider="anthropic", state="down") == 1
    assert value(s, "fleet_model_health", model="claude", state="up") == 0
    assert value(s, "fleet_model_health", model="openai", state="cooling") == 1
    assert value(s, "fleet_model_health", model="gemini", state="up") == 1
    assert value(s, "fleet_model_admitted_share", model="openai") == 0
    assert value(s, "fleet_model_admitted_share", model="gemini") == 1
    assert value(s, "fleet_model_health") == len(REGISTRY.models)  # exactly one phase each


def test_a_failing_or_slow_source_is_counted_and_does_not_fail_the_scrape():
    metrics = fresh()

    async def broken() -> None:
        raise ConnectionError("NATS away")

    async def slow() -> None:
        await asyncio.Event().wait()

    metrics.add_source("jetstream", broken)
    metrics.add_source("budget", slow)
    asyncio.run(metrics.refresh(timeout_s=0.05))
    s = scrape(metrics)
    assert value(s, "fleet_metrics_source_errors_total", collector="jetstream") == 1
    assert value(s, "fleet_metrics_source_errors_total", collector="budget") == 1
    with pytest.raises(ValueError, match="unknown metrics source"):
        metrics.add_source("anything", broken)
    assert set(SOURCES) == metrics.label_sets["collector"].values - {L.OTHER}


# -- bounded cardinality ---------------------------------------------------------------

hostile = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    job_id=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    prompt=hostile,
    model=st.one_of(st.sampled_from(sorted(REGISTRY.models)), hostile),
    provider=st.one_of(st.sampled_from(["openai", "gemini"]), hostile),
    code=st.one_of(st.none(), st.sampled_from(sorted(L.ERROR_CODES)), hostile),
    reported=st.one_of(st.none(), st.just("gpt-4o-2024-08-06"), hostile),
    rule=st.one_of(st.sampled_from(sorted(L.RULES)), hostile),
    consumer=hostile,
)
def test_label_values_come_from_closed_sets(job_id, prompt, model, provider, code, reported, rule, consumer):
    """Whatever the traffic carries, every label value is one of its label's closed set, and
    neither a job id nor a prompt ever appears in the exposition."""
    job_id, prompt = f"job-{job_id}", f"PROMPT {prompt}"
    metrics = fresh()
    error = ErrorInfo(code, prompt) if code else None
    attempt = Attempt(model=model, provider=provider, success=error is None, error=error, cost_usd=0.1, ttft_ms=5.0)
    metrics.record_attempt(attempt, requested_model=prompt, response_model=reported, accepted_at=1.0, now=2.0)
    metrics.record_attempt(attempt, requested_model="gpt-4o", response_model=job_id)
    metrics.record_decision(rule, model, attempts=[attempt])
    metrics.record_result(Result(job_id=job_id, success=False, model=model, error=error, reasoning=prompt))
    metrics.record_wait(model, 1.0, source=prompt)
    metrics.record_delivery(consumer, 2)
    metrics.set_model_health(model, phase="down", admitted_share=0.0)
    metrics.set_consumer(prompt, consumer, pending=1, ack_pending=0, redelivered=0)
    metrics.record_ledger_error(consumer, prompt)
    body = metrics.render()[0].decode()
    samples = parse(body)
    assert samples
    for name, labels, _ in samples:
        for label, val in labels.items():
            if label == "le":
                continue
            assert val in metrics.label_sets[label].values, f"{name}: {label}={val!r}"
    assert job_id not in body and prompt not in body


def test_response_models_are_capped_and_must_extend_a_requested_model():
    response = fresh().label_sets["gen_ai_response_model"]
    assert response.bound("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"
    assert response.bound("gpt-5-secret-preview") == L.OTHER
    admitted = {response.bound(f"gpt-4o-{i}") for i in range(500)}
    assert len(response.values) <= response.cap + 1 and L.OTHER in admitted


def test_attempts_count_exactly_across_many_answering_models():
    """A provider that names a new answering model on every call: each attempt is counted
    once, whatever series its answering model's label ends up in."""
    metrics = fresh()
    calls = 600
    for i in range(calls):
        metrics.record_attempt(ok_attempt(), requested_model="gpt-4o", response_model=f"gpt-4o-{i}")
        metrics.record_attempt(ok_attempt(), requested_model="gpt-4o", response_model="gpt-4o")
    s = scrape(metrics)
    assert value(s, "fleet_attempts_total", model="openai", outcome="success") == 2 * calls
    assert value(s, "gen_ai_client_operation_duration_seconds_count", gen_ai_response_model="gpt-4o") == calls
    assert value(s, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 2 * calls * 30
