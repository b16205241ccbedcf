"""The ledger against a real nats-server and a real PostgreSQL.

Synchronisation is event-driven: a test subscribes to the ledger's commit notices (or to
JetStream's advisories) before publishing, then waits for them with a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from fleet_ledger.migrate import migrate
from fleet_ledger.service import Ledger
from fleet_ledger.writer import Envelope, collapse
from fleet_shared.bus import connect, ensure_streams
from fleet_shared.schema import Attempt, AttemptRecord, Decision, ErrorInfo, Result, TaskType, encode
from fleet_shared.embedded import free_port

pytestmark = pytest.mark.anyio

WAIT_S = 15.0
T0 = 1_790_000_000.0  # a fixed decision time, far from "now"


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def decision(job_id: str, attempt_no: int = 1, **kw) -> Decision:
    base = dict(
        job_id=job_id, attempt_no=attempt_no, objective="Write a Python function to sort a list",
        task_type="code_generation", complexity=3, model="local_mlx", provider="lmstudio",
        reasoning="simple task (complexity 3 <= 3): local first", estimated_cost_usd=0.0,
        estimated_latency_ms=1500.0, at=T0 + attempt_no,
    )
    return Decision(**{**base, **kw})


FAILED_LOCAL = Attempt("local_mlx", "lmstudio", False, ErrorInfo("timeout", "no answer in 120s"), 120_000.0, 0, 0, 0.0)
OK_OPENAI = Attempt("openai", "openai", True, None, 2_500.0, 1_000, 500, 0.0075,
                    ttft_ms=310.0, cached_tokens_in=200, reasoning_tokens=0, estimated_cost_usd=0.008)


def result(job_id: str, **kw) -> Result:
    base = dict(
        job_id=job_id, success=True, content="def sort(xs): return sorted(xs)", model="openai",
        provider="openai", task_type=TaskType.CODE_GENERATION, complexity=3,
        reasoning="escalated after a local failure", attempts=[FAILED_LOCAL, OK_OPENAI],
        tokens_in=1_000, tokens_out=500, cost_usd=0.0075, latency_ms=122_600.0,
    )
    return Result(**{**base, **kw})


class Notices:
    """Collects the ledger's commit notices (core NATS) as they arrive."""

    def __init__(self) -> None:
        self.results: list[str] = []
        self.decisions: list[str] = []
        self.attempts: list[tuple[str, int]] = []
        self._changed = asyncio.Event()

    async def subscribe(self, nc, subjects) -> "Notices":
        await nc.subscribe(subjects.ledger_committed, cb=self._on_result)
        await nc.subscribe(subjects.ledger_committed_events, cb=self._on_events)
        await nc.flush()
        return self

    async def _on_result(self, msg) -> None:
        self.results += json.loads(msg.data)["job_ids"]
        self._changed.set()

    async def _on_events(self, msg) -> None:
        body = json.loads(msg.data)
        self.decisions += body["decision_job_ids"]
        self.attempts += [tuple(a) for a in body["attempts"]]
        self._changed.set()

    async def wait(self, *, results=(), decisions=(), attempts=(), times: int = 1) -> None:
        """Until every id was noticed at least ``times`` times (bounded by WAIT_S)."""

        def done() -> bool:
            return (all(self.results.count(j) >= times for j in results)
                    and all(self.decisions.count(j) >= times for j in decisions)
                    and all(self.attempts.count(a) >= times for a in attempts))

        async def until_done() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until_done(), WAIT_S)


@asynccontextmanager
async def client(settings, subjects):
    nc = await connect(settings, name="test-client")
    js = nc.jetstream()
    await ensure_streams(js, subjects, settings)
    notices = await Notices().subscribe(nc, subjects)
    try:
        yield nc, js, notices
    finally:
        await nc.close()


def running(settings, **kw) -> Ledger:
    return Ledger(settings, fetch_timeout_s=0.2, **kw)


async def publish_events(js, subjects, *events) -> None:
    for event in events:
        subject = subjects.decision_event if isinstance(event, Decision) else subjects.attempt_event
        await js.publish(subject, encode(event))


async def publish_result(js, subjects, res: Result) -> None:
    await js.publish(subjects.result(res.job_id), encode(res))


async def fetch_row(database_url, job_id):
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM routing_decisions WHERE job_id = $1", job_id)
        attempts = await conn.fetch("SELECT * FROM attempts WHERE job_id = $1 ORDER BY attempt_no", job_id)
    finally:
        await conn.close()
    assert len(rows) == 1, rows
    return dict(rows[0]), [dict(a) for a in attempts]


async def row_when(database_url, job_id, check) -> dict:
    """The job's routing_decisions row once ``check(row)`` holds (polled, bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        row, _ = await fetch_row(database_url, job_id)
        if check(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"row of {job_id} never satisfied the check: {row}")
        await asyncio.sleep(0.02)


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url)


async def test_decisions_attempts_then_result_fill_every_column(settings, subjects, database_url):
    job = new_job_id()
    before = time.time()
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_events(
            js, subjects,
            decision(job, 1),
            AttemptRecord(job_id=job, attempt_no=1, attempt=FAILED_LOCAL, at=T0 + 121),
            decision(job, 2, model="openai", provider="openai", reasoning="escalated: local failed",
                     estimated_cost_usd=0.008, estimated_latency_ms=9000.0),
            AttemptRecord(job_id=job, attempt_no=2, attempt=OK_OPENAI, at=T0 + 124),
        )
        # one loop commits the events in stream order: attempt 2 noticed => decision 2 written
        await notices.wait(attempts=[(job, 2)])
        await publish_result(js, subjects, result(job))
        await notices.wait(results=[job])
    row, attempts = await fetch_row(database_url, job)
    assert row.pop("id") > 0
    finished_at = row.pop("finished_at")
    assert before - 1 <= finished_at <= time.time() + 1
    assert row == {
        "timestamp": T0 + 1, "objective": "Write a Python function to sort a list",
        "task_type": "code_generation", "complexity": 3, "selected_model": "openai",
        "reasoning": "escalated after a local failure", "estimated_cost": 0.008, "actual_cost": 0.0075,
        "execution_time": 122.6, "estimated_time": 9.0, "success": True, "tokens_used": 1500,
        "job_id": job, "provider": "openai", "error_code": None, "error_message": None,
        "tokens_in": 1000, "tokens_out": 500, "attempts_count": 2, "decision_attempt_no": 2,
        "truncated": False,
    }
    assert [(a["attempt_no"], a["model"], a["success"], a["error_code"], a["at"]) for a in attempts] == [
        (1, "local_mlx", False, "timeout", T0 + 121),  # the AttemptRecord's time wins
        (2, "openai", True, None, T0 + 124),
    ]
    assert attempts[1]["cost_usd"] == 0.0075 and attempts[1]["latency_ms"] == 2500.0
    assert attempts[1]["estimated_cost_usd"] == OK_OPENAI.estimated_cost_usd
    assert (attempts[1]["ttft_ms"], attempts[1]["cached_tokens_in"]) == (OK_OPENAI.ttft_ms, OK_OPENAI.cached_tokens_in)


async def test_result_before_decision_keeps_the_final_fields(settings, subjects, database_url):
    job = new_job_id()
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_result(js, subjects, result(job, reasoning=""))
        await notices.wait(results=[job])
        row, attempts = await fetch_row(database_url, job)
        assert row["objective"] is None and row["selected_model"] == "openai" and row["finished_at"]
        assert [a["attempt_no"] for a in attempts] == [1, 2]  # from Result.attempts
        late = decision(job, 2, model="claude", provider="anthropic", reasoning="late decision")
        await publish_events(js, subjects, decision(job, 1))
        await row_when(database_url, job, lambda r: r["decision_attempt_no"] == 1)
        await publish_events(js, subjects, late)  # a later batch (one batch merges them: see collapse)
        row = await row_when(database_url, job, lambda r: r["decision_attempt_no"] == 2)
    assert row["objective"] == "Write a Python function to sort a list"  # filled by the decision
    assert row["timestamp"] == T0 + 1  # the decision's time replaces the estimate
    assert row["selected_model"] == "openai" and row["provider"] == "openai"  # not clobbered
    assert row["reasoning"] == "simple task (complexity 3 <= 3): local first"  # the result had none
    assert row["success"] is True and row["attempts_count"] == 2


async def test_duplicates_leave_one_row(settings, subjects, database_url):
    job = new_job_id()
    async with client(settings, subjects) as (nc, js, notices):
        # published before the ledger starts, so both copies arrive in one batch
        await publish_events(js, subjects, decision(job, 1), decision(job, 1), decision(job, 2, model="openai"))
        async with running(settings):
            await notices.wait(decisions=[job])
            await publish_result(js, subjects, result(job))
            await notices.wait(results=[job])
            first, _ = await fetch_row(database_url, job)
            await publish_result(js, subjects, result(job))  # a second copy, a later batch
            await publish_events(js, subjects, decision(job, 1),
                                 AttemptRecord(job_id=job, attempt_no=2, attempt=OK_OPENAI, at=T0 + 124))
            # the attempt follows the decision in the stream: noticed => both are written
            await notices.wait(results=[job], times=2)
            await notices.wait(attempts=[(job, 2)])
    row, attempts = await fetch_row(database_url, job)
    assert row == first  # finished_at included: the first copy's time is kept
    assert row["decision_attempt_no"] == 2 and row["selected_model"] == "openai"
    assert [a["attempt_no"] for a in attempts] == [1, 2]


async def test_the_result_has_the_last_word_on_its_attempts(settings, subjects, database_url):
    # a worker recorded a failed call, died before escalating, and the redelivered job
    # succeeded on the same attempt number: the Result says what finally happened
    job = new_job_id()
    failed_openai = Attempt("openai", "openai", False, ErrorInfo("server_error", "500"), 900.0, 0, 0, 0.0)
    stale = AttemptRecord(job_id=job, attempt_no=2, attempt=failed_openai, at=T0 + 123)
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_events(js, subjects, decision(job, 1), stale)
        await notices.wait(attempts=[(job, 2)])
        await publish_result(js, subjects, result(job))
        await notices.wait(results=[job])
        await publish_events(js, subjects, stale)  # redelivered once more, after the Result
        await notices.wait(attempts=[(job, 2)], times=2)
    _, attempts = await fetch_row(database_url, job)
    assert [(a["attempt_no"], a["success"], a["error_code"]) for a in attempts] == [(1, False, "timeout"), (2, True, None)]
    assert attempts[1]["at"] == T0 + 123  # the recorded time of the call is kept


def test_collapse_keeps_the_newest_decision_and_the_earliest_time():
    job = new_job_id()
    batch = [Envelope(decision(job, 2, model="openai", at=T0 + 9), 5.0),
             Envelope(decision(job, 1, at=T0 + 1), 6.0),
             Envelope(decision(job, 2, model="openai", at=T0 + 9), 7.0)]
    rows = collapse(batch)
    assert len(rows.decisions) == 1
    assert rows.decisions[0][:2] == (job, T0 + 1) and rows.decisions[0][5] == "openai"
    assert rows.decisions[0][-1] == 2


async def test_malformed_messages_are_terminated_and_the_loop_goes_on(settings, subjects, database_url):
    job = new_job_id()
    terminated = asyncio.Queue()
    async with client(settings, subjects) as (nc, js, notices):
        advisory = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"
        await nc.subscribe(f"{advisory}.{subjects.events_stream}.ledger-events", cb=terminated.put)
        await nc.subscribe(f"{advisory}.{subjects.results_stream}.ledger-results", cb=terminated.put)
        async with running(settings) as ledger:
            await js.publish(subjects.decision_event, b"not json")
            await js.publish(subjects.attempt_event, b'{"type": "decision", "job_id": "x"}')  # fields missing
            await js.publish(subjects.result("broken"), b'{"job_id": 7}')
            await publish_events(js, subjects, decision(job, 1))
            await publish_result(js, subjects, result(job))
            await notices.wait(results=[job], decisions=[job])
            for _ in range(3):
                await asyncio.wait_for(terminated.get(), WAIT_S)
            errors = ledger.metrics.errors.get({"consumer": "events", "kind": "decode"})
            assert errors == 2
            for stream, durable in ((subjects.events_stream, "ledger-events"),
                                    (subjects.results_stream, "ledger-results")):
                info = await js.consumer_info(stream, durable)
                assert info.num_ack_pending == 0 and info.num_redelivered == 0
    row, _ = await fetch_row(database_url, job)
    assert row["success"] is True and row["objective"]


async def test_a_row_postgres_refuses_is_dead_lettered_alone(settings, subjects, database_url):
    good, nul, huge = new_job_id(), new_job_id(), new_job_id()
    terminated = asyncio.Queue()
    async with client(settings, subjects) as (nc, js, notices):
        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{subjects.results_stream}.ledger-results"
        await nc.subscribe(advisory, cb=terminated.put)
        await publish_result(js, subjects, result(nul, reasoning="nul \x00 byte"))  # TEXT can't hold NUL
        await publish_result(js, subjects, result(good))
        await publish_result(js, subjects, result(huge, tokens_in=3_000_000_000))  # > INTEGER
        async with running(settings):
            await notices.wait(results=[good, nul])
            await asyncio.wait_for(terminated.get(), WAIT_S)
        dead = await js.get_last_msg(subjects.deadletter_stream, subjects.deadletter(subjects.results_stream))
    assert json.loads(dead.data)["job_id"] == huge
    assert dead.headers["Fleet-Dead-Reason"] == "refused by PostgreSQL"
    assert dead.headers["Fleet-Dead-Subject"] == subjects.result(huge)
    await fetch_row(database_url, good)
    row, _ = await fetch_row(database_url, nul)
    assert row["reasoning"] == "nul \ufffd byte"  # stored, with the NUL replaced
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM routing_decisions WHERE job_id = $1", huge) == 0
    finally:
        await conn.close()


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
        assert ledger.metrics.errors.get({"consumer": "results", "kind": "transient"}) >= 1
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
            assert sorted(applied) == [[], [], ["0001_init", "0002_attempt_details"]]
            assert await migrate(conns[0]) == []
            assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == 2
            columns = dict(await conns[0].fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'routing_decisions'"
            ))
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    seed = {"id": "bigint", "timestamp": "double precision", "objective": "text", "task_type": "text",
            "complexity": "integer", "selected_model": "text", "reasoning": "text",
            "estimated_cost": "double precision", "actual_cost": "double precision",
            "execution_time": "double precision", "estimated_time": "double precision",
            "success": "boolean", "tokens_used": "integer"}
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
    env = {**os.environ, "NATS_URL": settings.nats_url, "DATABASE_URL": database_url,
           "FLEET_SUBJECT_PREFIX": subjects.prefix}
    async with client(settings, subjects) as (nc, js, notices):
        proc = subprocess.Popen([sys.executable, "-m", "fleet_ledger"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
