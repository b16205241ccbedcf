"""Every service serves its metrics: a small fleet (emulators, a worker per provider, the
router, the ledger, the gateway; each with its own FLEET_METRICS_PORT) takes traffic, then
each process's /metrics, /healthz and /readyz is scraped over loopback and checked against
the traffic sent."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import msgspec
import nats
import pytest

from fleet_emulators import running_emulator
from fleet_gateway.app import Gateway
from fleet_gateway.settings import GatewaySettings
from fleet_ledger import Ledger
from fleet_local.embedded import free_port
from fleet_router.service import Router
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.schema import result_decoder
from fleet_shared.subjects import PROVIDERS, Subjects
from fleet_workers.service import Worker
from tests.fleet_harness import LedgerWatch
from tests.metrics_text import parse, value

pytestmark = pytest.mark.anyio

SIMPLE = {"prompt": "Write hello world", "task_type": "code_generation", "complexity": 2}
#: both local models answer 500: two transient failures, then the paid openai model answers
ESCALATED = {**SIMPLE, "prompt": "[emulate:lmstudio:error=500] sort a list"}


def with_port(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, metrics_port=free_port())


@contextlib.asynccontextmanager
async def metered_fleet(settings: Settings):
    """Every service of the fleet, each on its own metrics port, running; yields them by name."""
    async with contextlib.AsyncExitStack() as stack:
        services: dict = {}
        for provider in PROVIDERS:
            url = await stack.enter_async_context(running_emulator(provider))
            endpoint = ProviderEndpoint(provider, url, Secret("test-key"))
            worker = Worker(with_port(settings), provider, endpoint=endpoint)
            services[provider] = await stack.enter_async_context(worker)
        services["router"] = await stack.enter_async_context(Router(with_port(settings)))
        services["ledger"] = await stack.enter_async_context(Ledger(with_port(settings)))
        gateway_settings = GatewaySettings.from_env({}, fleet=with_port(settings), port=0, keys={})
        services["gateway"] = await stack.enter_async_context(Gateway(gateway_settings))
        tasks = [asyncio.create_task(service.run()) for service in services.values()]
        try:
            yield services
        finally:
            for service in services.values():
                await service.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def scrape(port: int) -> tuple[list, httpx.Response, httpx.Response]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as http:
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        return parse(metrics.text), await http.get("/healthz"), await http.get("/readyz")


async def test_each_service_serves_metrics_that_match_the_traffic(make_settings):
    settings = make_settings(daily_budget_usd=10.0)
    subjects = Subjects(settings.subject_prefix)
    async with metered_fleet(settings) as services:
        nc = await nats.connect(settings.nats_url)
        try:
            watch = LedgerWatch()
            await nc.subscribe(subjects.ledger_committed, cb=watch.on_msg)
            jobs = [{**SIMPLE, "id": f"simple-{i}"} for i in range(3)]
            jobs += [{**ESCALATED, "id": "escalated"}, {"id": "bad", "prompt": "x", "complexity": 99}]
            results = {}
            for job in jobs:
                msg = await nc.request(subjects.request, json.dumps(job).encode(), timeout=30)
                results[job["id"]] = result_decoder.decode(msg.data)
            await watch.wait_for(list(results))
        finally:
            await nc.drain()
        assert [results[f"simple-{i}"].model for i in range(3)] == ["local_mlx"] * 3
        assert results["escalated"].model == "openai" and results["escalated"].cost_usd > 0
        assert not results["bad"].success

        scraped = {name: await scrape(service_port(service)) for name, service in services.items()}

    for name, (_, healthz, readyz) in scraped.items():
        assert healthz.status_code == 200, name
        assert readyz.status_code == 200 and readyz.text.startswith("ready"), (name, readyz.text)
    assert "postgres: ok" in scraped["ledger"][2].text

    router = scraped["router"][0]
    # one decision per job routed, plus one per escalation, plus the rejection
    assert value(router, "fleet_decisions_total") == 3 + 3 + 1
    assert value(router, "fleet_decisions_total", rule="rejected", model="none") == 1
    assert value(router, "fleet_escalations_total", from_model="local_mlx", to_model="local_devstral") == 1
    assert value(router, "fleet_escalations_total", from_model="local_devstral", to_model="openai") == 1
    assert value(router, "fleet_budget_daily_usd") == 10.0
    assert 0 <= value(router, "fleet_budget_remaining_usd") <= 10.0
    lag = [s for s in router if s[0] == "fleet_jetstream_consumer_pending_messages"]
    assert {s[1]["consumer"] for s in lag} == {"router-jobs", "router-escalations", "router-deadletter"}
    assert value(router, "fleet_jetstream_stream_messages", stream=subjects.deadletter_stream) == 0
    assert value(router, "fleet_concurrency_limit", consumer="router-jobs") == settings.router_concurrency
    assert value(router, "fleet_model_health", model="openai", state="up") == 1

    lmstudio, openai = scraped["lmstudio"][0], scraped["openai"][0]
    assert value(lmstudio, "fleet_attempts_total", outcome="success", model="local_mlx") == 3
    assert value(lmstudio, "fleet_attempts_total", error_class="transient", error_code="server_error") == 2
    assert value(lmstudio, "gen_ai_client_operation_duration_seconds_count", error_type="server_error") == 2
    assert value(openai, "fleet_attempts_total", outcome="success", model="openai") == 1
    assert value(openai, "fleet_cost_usd_total", model="openai") == pytest.approx(results["escalated"].cost_usd)
    assert value(openai, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") > 0
    assert value(openai, "gen_ai_client_operation_duration_seconds_count", gen_ai_provider_name="openai") == 1
    assert value(lmstudio, "fleet_concurrency_limit", consumer="worker-lmstudio") == settings.worker_concurrency
    assert value(lmstudio, "fleet_inflight_messages", consumer="worker-lmstudio") == 0
    worker_lag = [s for s in openai if s[0] == "fleet_jetstream_consumer_pending_messages"]
    assert [s[1]["consumer"] for s in worker_lag] == ["worker-openai"]

    # every job's Result is counted once, by whoever published it
    jobs_total = sum(value(scraped[n][0], "fleet_jobs_total") for n in ("router", *PROVIDERS))
    assert jobs_total == len(results)
    assert value(router, "fleet_jobs_total", outcome="failure", error_code="invalid_job") == 1

    ledger = scraped["ledger"][0]
    assert value(ledger, "fleet_ledger_messages_total", consumer="results") >= len(results)
    assert value(ledger, "fleet_ledger_commit_seconds_count", consumer="results") >= 1
    assert value(ledger, "fleet_ledger_batch_size_sum", consumer="results") >= len(results)
    assert {s[1]["consumer"] for s in ledger if s[0] == "fleet_jetstream_consumer_pending_messages"} == {
        "ledger-events",
        "ledger-results",
        "ledger-feedback",
    }

    gateway = scraped["gateway"][0]
    assert value(gateway, "fleet_model_health", model="claude", state="up") == 1
    assert value(gateway, "fleet_metrics_source_errors_total") == 0


def service_port(service) -> int:
    return service.ops.port
