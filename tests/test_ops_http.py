"""The ops endpoint served over loopback: /metrics with JetStream consumer lag read from a
real nats-server, /healthz, and /readyz following NATS and PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import nats
import pytest

from fleet_shared import bus
from fleet_shared.metrics import FleetMetrics
from fleet_shared.metrics_sources import jetstream_source
from fleet_shared.ops_http import OpsServer, nats_connected, postgres_answers, probe
from fleet_shared.registry import load_registry
from tests.metrics_text import parse, value

pytestmark = pytest.mark.anyio


@pytest.fixture
async def js_fleet(make_settings, subjects):
    """The fleet's streams on the test's nats-server, a dispatch consumer with 3 jobs queued."""
    settings = make_settings()
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await bus.ensure_streams(js, subjects, settings)
    await bus.ensure_pull_consumer(
        js,
        stream=subjects.dispatch_stream,
        durable="worker-openai",
        filter_subject=subjects.dispatch("openai"),
        ack_wait_s=30.0,
        max_deliver=5,
        max_ack_pending=10,
    )
    for i in range(3):
        await js.publish(subjects.dispatch("openai"), b"{}", headers={"Nats-Msg-Id": f"d{i}"})
    yield nc, js
    if not nc.is_closed:
        await nc.close()


async def test_metrics_are_scraped_over_loopback_with_consumer_lag(js_fleet, subjects):
    nc, js = js_fleet
    metrics = FleetMetrics(load_registry(), subjects=subjects)
    consumers = [(subjects.dispatch_stream, "worker-openai")]
    metrics.add_source(
        "jetstream", jetstream_source(metrics, js, consumers=consumers, streams=[subjects.deadletter_stream])
    )
    metrics.record_decision("complex", "claude")
    async with OpsServer(metrics, checks={"nats": nats_connected(nc)}, host="127.0.0.1") as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            response = await http.get("/metrics", headers={"Accept": "text/plain"})
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = parse(response.text)
            labels = dict(stream=subjects.dispatch_stream, consumer="worker-openai")
            assert value(samples, "fleet_jetstream_consumer_pending_messages", **labels) == 3
            assert value(samples, "fleet_jetstream_consumer_ack_pending_messages", **labels) == 0
            assert value(samples, "fleet_jetstream_stream_messages", stream=subjects.deadletter_stream) == 0
            assert value(samples, "fleet_decisions_total", rule="complex", model="claude") == 1
            assert value(samples, "fleet_metrics_source_errors_total") == 0

            # a consumer takes one: the next scrape reads the new lag
            sub = await js.pull_subscribe_bind("worker-openai", stream=subjects.dispatch_stream)
            (msg,) = await sub.fetch(1, timeout=5)
            samples = parse((await http.get("/metrics")).text)
            assert value(samples, "fleet_jetstream_consumer_pending_messages", **labels) == 2
            assert value(samples, "fleet_jetstream_consumer_ack_pending_messages", **labels) == 1
            await msg.ack()


async def test_healthz_and_readyz_follow_the_nats_connection(js_fleet, subjects):
    nc, _ = js_fleet
    async with OpsServer(FleetMetrics(), checks={"nats": nats_connected(nc)}, host="127.0.0.1") as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/healthz")).text == "ok\n"
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.text == "ready\nnats: ok\n"
            await nc.close()
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.text == "not ready\nnats: not ready\n"
            assert (await http.get("/healthz")).status_code == 200  # alive, only not ready
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
        # the container health check: exit 0 only on a 200
        port = server.port
        assert await asyncio.to_thread(probe, "/healthz", port=port) == 0
        assert await asyncio.to_thread(probe, "/readyz", port=port) == 1
    assert await asyncio.to_thread(probe, "/healthz", port=port) == 1  # nothing listens now


async def test_readyz_follows_postgresql(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    checks = {"postgres": postgres_answers(pool)}
    async with OpsServer(FleetMetrics(), checks=checks, host="127.0.0.1") as server:
        ready, report = await server.readiness()
        assert ready and report == "ready\npostgres: ok\n"
        await pool.close()
        ready, report = await server.readiness()
        assert not ready and report.startswith("not ready\npostgres: failed (")


async def test_a_hung_check_times_out_and_garbage_gets_400():
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async with OpsServer(FleetMetrics(), checks={"slow": hangs}, host="127.0.0.1", check_timeout_s=0.05) as server:
        ready, report = await server.readiness()
        assert not ready and report == "not ready\nslow: no answer within 0.05s\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NONSENSE\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
