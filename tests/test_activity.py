"""The dashboard's ledger reports (``fleet_ledger.activity``) on known rows, and over NATS.

The fleet (a database of its own), NOW = 2026-11-03 12:00 UTC:
    A1..A4  local, first try, finished NOW-50 in 0.1 .. 0.4 s
    E1, E2  local failed, openai answered; finished NOW-20 in 2 s; $0.01 each
    F1      local failed, openai failed: given up; finished NOW-20 in 3 s; $0.02
    Y1      openai, yesterday
    R1      routed NOW-5, still running (no Result yet)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from fleet_ledger.analytics import RouterAnalytics
from fleet_ledger.migrate import migrate
from fleet_ledger.service import Ledger

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp()
TODAY = datetime(2026, 11, 3, tzinfo=UTC).timestamp()

_JOB = """INSERT INTO routing_decisions (job_id, "timestamp", task_type, complexity, selected_model, provider,
    reasoning, success, attempts_count, actual_cost, execution_time, finished_at)
    VALUES ($1, $2, 'completion', 2, $3, $4, $5, $6, $7, $8, $9, $10)"""
_ATTEMPT = """INSERT INTO attempts (job_id, attempt_no, model, provider, success, cost_usd, at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""


def rows() -> tuple[list[tuple], list[tuple]]:
    jobs, attempts = [], []
    for i in range(1, 5):
        jobs.append((f"A{i}", NOW - 51, "local", "lmstudio", "local first", True, 1, 0.0, i / 10, NOW - 50))
        attempts.append((f"A{i}", 1, "local", "lmstudio", True, 0.0, NOW - 50))
    for i, job in enumerate(("E1", "E2", "F1")):
        ok = job != "F1"
        reasoning = "escalated after local failed" if ok else "escalated, then given up"
        cost, seconds = (0.01, 2.0) if ok else (0.02, 3.0)
        jobs.append((job, NOW - 23 + i, "openai", "openai", reasoning, ok, 2, cost, seconds, NOW - 20))
        attempts.append((job, 1, "local", "lmstudio", False, 0.0, NOW - 21))
        attempts.append((job, 2, "openai", "openai", ok, cost, NOW - 20))
    jobs.append(("Y1", NOW - 86_400, "openai", "openai", "yesterday", True, 1, 0.01, 1.0, NOW - 86_400))
    attempts.append(("Y1", 1, "openai", "openai", True, 0.01, NOW - 86_400))
    jobs.append(("R1", NOW - 5, "local", "lmstudio", "just routed", None, 1, None, None, None))
    return jobs, attempts


@pytest.fixture(scope="module")
def activity_dsn(postgres_admin_dsn):
    name = f"fleet_activity_{uuid.uuid4().hex[:8]}"
    dsn = f"{postgres_admin_dsn.rpartition('/')[0]}/{name}"

    async def setup() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        jobs, attempts = rows()
        await conn.executemany(_JOB, jobs)
        await conn.executemany(_ATTEMPT, attempts)
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(setup())
    yield dsn
    asyncio.run(drop())


async def test_activity_totals_and_buckets(activity_dsn):
    async with RouterAnalytics(activity_dsn) as analytics:
        report = await analytics.get_activity(since=TODAY, window_s=120, bucket_s=30, now=NOW)
        partial = await analytics.get_activity(since=TODAY, window_s=60, bucket_s=30, now=NOW - 15)
    assert {k: report[k] for k in ("jobs", "successes", "failures", "escalated")} == {
        "jobs": 7,
        "successes": 6,
        "failures": 1,
        "escalated": 3,
    }
    assert report["cost"] == pytest.approx(0.04)
    assert report["p50_latency_ms"] == pytest.approx(400.0)
    assert report["p95_latency_ms"] == pytest.approx(2700.0)  # between 2 s and 3 s, 70 % of the way
    assert [b["t"] for b in report["buckets"]] == [NOW - 120, NOW - 90, NOW - 60, NOW - 30]
    assert [(b["jobs"], b["failures"]) for b in report["buckets"]] == [(0, 0), (0, 0), (4, 0), (3, 1)]
    assert report["buckets"][2]["p50_latency_ms"] == pytest.approx(250.0)
    assert report["buckets"][3]["jobs_per_s"] == pytest.approx(0.1)
    assert report["buckets"][0]["p50_latency_ms"] is None
    # 15 s before NOW: the last slot has run 15 s of its 30, and the jobs of NOW-20 are in it
    assert [b["t"] for b in partial["buckets"]] == [NOW - 60, NOW - 30]
    assert partial["buckets"][1]["jobs"] == 3 and partial["buckets"][1]["jobs_per_s"] == pytest.approx(0.2)


async def test_escalation_paths_and_recent_decisions(activity_dsn):
    async with RouterAnalytics(activity_dsn) as analytics:
        paths = await analytics.get_escalation_paths()
        later = await analytics.get_escalation_paths(since=NOW - 20.5)
        recent = await analytics.get_recent_decisions(limit=3)
    assert paths == [
        {"from_model": "local", "to_model": "openai", "count": 3},
        {"from_model": "openai", "to_model": "none", "count": 1},
    ]
    assert later == [{"from_model": "openai", "to_model": "none", "count": 1}]
    assert [d["job_id"] for d in recent] == ["R1", "F1", "E2"]
    running, failed, _ = recent
    assert running["success"] is None and running["path"] == [] and running["reasoning"] == "just routed"
    assert failed["success"] is False and failed["path"] == ["local", "openai"]
    assert failed["reasoning"] == "escalated, then given up" and failed["actual_cost"] == pytest.approx(0.02)


async def test_dashboard_reports_over_nats(make_settings, subjects, activity_dsn):
    settings = make_settings(database_url=activity_dsn)
    async with Ledger(settings, fetch_timeout_s=0.2) as ledger:

        async def ask(report: str, body: dict | None = None) -> dict | list:
            data = json.dumps(body).encode() if body is not None else b""
            reply = await ledger.nc.request(subjects.analytics(report), data, timeout=10)
            return json.loads(reply.data)

        activity = await ask("activity", {"now": NOW, "window_s": 120, "bucket_s": 30})
        assert activity["since"] == TODAY and activity["jobs"] == 7 and len(activity["buckets"]) == 4
        assert len(await ask("escalations")) == 2
        assert [d["job_id"] for d in await ask("decisions", {"limit": 2})] == ["R1", "F1"]
        too_many = await ask("activity", {"window_s": 86_400, "bucket_s": 1})
        assert too_many["error"]["code"] == "bad_request" and "2000 buckets" in too_many["error"]["message"]
        assert (await ask("decisions", {"limit": 0}))["error"]["code"] == "bad_request"
