"""Helpers of the ledger tests: messages as the fleet sends them, a client that collects the
ledger's commit notices, and reads of the rows it wrote."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

import asyncpg

from fleet_ledger.service import Ledger
from fleet_shared.bus import connect, ensure_streams
from fleet_shared.schema import Attempt, Decision, ErrorInfo, Result, TaskType, encode

WAIT_S = 15.0
T0 = 1_790_000_000.0  # a fixed decision time, far from "now"


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def decision(job_id: str, attempt_no: int = 1, **kw) -> Decision:
    base = dict(
        job_id=job_id,
        attempt_no=attempt_no,
        objective="Write a Python function to sort a list",
        task_type="code_generation",
        complexity=3,
        model="local_mlx",
        provider="lmstudio",
        reasoning="simple task (complexity 3 <= 3): local first",
        estimated_cost_usd=0.0,
        estimated_latency_ms=1500.0,
        at=T0 + attempt_no,
    )
    return Decision(**{**base, **kw})


FAILED_LOCAL = Attempt("local_mlx", "lmstudio", False, ErrorInfo("timeout", "no answer in 120s"), 120_000.0, 0, 0, 0.0)
OK_OPENAI = Attempt(
    "openai",
    "openai",
    True,
    None,
    2_500.0,
    1_000,
    500,
    0.0075,
    ttft_ms=310.0,
    cached_tokens_in=200,
    reasoning_tokens=0,
    estimated_cost_usd=0.008,
)


def result(job_id: str, **kw) -> Result:
    base = dict(
        job_id=job_id,
        success=True,
        content="def sort(xs): return sorted(xs)",
        model="openai",
        provider="openai",
        task_type=TaskType.CODE_GENERATION,
        complexity=3,
        reasoning="escalated after a local failure",
        attempts=[FAILED_LOCAL, OK_OPENAI],
        tokens_in=1_000,
        tokens_out=500,
        cost_usd=0.0075,
        latency_ms=122_600.0,
    )
    return Result(**{**base, **kw})


class Notices:
    """Collects the ledger's commit notices (core NATS) as they arrive."""

    def __init__(self) -> None:
        self.results: list[str] = []
        self.decisions: list[str] = []
        self.attempts: list[tuple[str, int]] = []
        self._changed = asyncio.Event()

    async def subscribe(self, nc, subjects) -> Notices:
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
            return (
                all(self.results.count(j) >= times for j in results)
                and all(self.decisions.count(j) >= times for j in decisions)
                and all(self.attempts.count(a) >= times for a in attempts)
            )

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
