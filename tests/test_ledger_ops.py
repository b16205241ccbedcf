"""The ledger as an operated process, against a real nats-server and PostgreSQL: a PostgreSQL
outage through a TCP relay that is cut and restored, concurrent migrations, the micro
service and metrics, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from fleet_ledger.migrate import migrate, migration_files
from fleet_local.embedded import free_port
from tests.ledger_harness import WAIT_S, client, fetch_row, new_job_id, publish_result, result, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url)


class TcpProxy:
    """A TCP relay to PostgreSQL that can be cut and restored: a real outage, real server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class LogEvent(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged by ``logger_name``."""

    def __init__(self, logger_name: str, text: str) -> None:
        super().__init__()
        self.event = asyncio.Event()
        self._logger = logging.getLogger(logger_name)
        self._text = text

    def emit(self, record: logging.LogRecord) -> None:
        if self._text in record.getMessage():
            self.event.set()  # logged from the event loop's own thread

    def __enter__(self) -> asyncio.Event:
        self._logger.addHandler(self)
        return self.event

    def __exit__(self, *exc_info) -> None:
        self._logger.removeHandler(self)


async def test_backlog_drains_after_a_postgres_outage(make_settings, subjects, database_url):
    url = urlsplit(database_url)
    proxy = TcpProxy(url.port or 5432)
    await proxy.start()
    via_proxy = url._replace(netloc=url.netloc.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}"))
    settings = make_settings(database_url=urlunsplit(via_proxy))
    first, second = new_job_id(), new_job_id()
    async with client(settings, subjects) as (nc, js, notices), running(settings) as ledger:
        await publish_result(js, subjects, result(first))
        await notices.wait(results=[first])
        with LogEvent("fleet_ledger.consumer", "PostgreSQL unavailable") as failed:
            await proxy.cut()
            await publish_result(js, subjects, result(second))
            await asyncio.wait_for(failed.wait(), WAIT_S)
        await proxy.start()  # PostgreSQL is back: the held batch is written on the next retry
        await notices.wait(results=[second])
        info = await js.consumer_info(subjects.results_stream, "ledger-results")
        assert info.num_redelivered == 0  # held with in_progress(), not redelivered
        assert (
            ledger.metrics.counter("fleet_ledger_errors_total").get({"consumer": "results", "kind": "transient"}) >= 1
        )
    await fetch_row(database_url, second)


async def test_migrations_are_idempotent_under_concurrency(postgres_admin_dsn):
    name = f"fleet_mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = f"{postgres_admin_dsn.rpartition('/')[0]}/{name}"
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            versions = [version for version, _ in migration_files()]
            assert versions[:4] == ["0001_init", "0002_attempt_details", "0003_api_key_name", "0004_label_sources"]
            assert sorted(applied) == [[], [], versions]
            assert await migrate(conns[0]) == []
            assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
            columns = dict(
                await conns[0].fetch(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'routing_decisions'"
                )
            )
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    seed = {
        "id": "bigint",
        "timestamp": "double precision",
        "objective": "text",
        "task_type": "text",
        "complexity": "integer",
        "selected_model": "text",
        "reasoning": "text",
        "estimated_cost": "double precision",
        "actual_cost": "double precision",
        "execution_time": "double precision",
        "estimated_time": "double precision",
        "success": "boolean",
        "tokens_used": "integer",
    }
    assert seed.items() <= columns.items()


async def test_micro_service_and_metrics(make_settings, subjects, database_url):
    port = free_port()
    settings = make_settings(database_url=database_url, metrics_port=port)
    job = new_job_id()
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        reply = await nc.request("$SRV.PING.fleet-ledger", b"", timeout=WAIT_S)
        assert json.loads(reply.data)["name"] == "fleet-ledger"
        await publish_result(js, subjects, result(job))
        await notices.wait(results=[job])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), WAIT_S)).decode()
        writer.close()
    assert 'fleet_ledger_batches_total{consumer="results"} 1' in body
    assert 'fleet_ledger_rows_written_total{table="attempts"} 2' in body


async def test_main_exits_cleanly_on_sigterm(settings, subjects, database_url):
    job = new_job_id()
    env = {
        **os.environ,
        "NATS_URL": settings.nats_url,
        "DATABASE_URL": database_url,
        "FLEET_SUBJECT_PREFIX": subjects.prefix,
    }
    async with client(settings, subjects) as (nc, js, notices):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_ledger"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await publish_result(js, subjects, result(job))
            await notices.wait(results=[job])  # the process is up and consuming
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stderr = proc.stderr.read().decode()
            proc.stderr.close()
    assert code == 0, stderr
    assert "ledger stopped" in stderr
