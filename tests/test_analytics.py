"""RouterAnalytics on known rows (a database of its own), and its NATS endpoints.

The fixture's fleet, all times on 2026-11-02/03 UTC (NOW = 2026-11-03 12:00):
    L1..L10  code_generation, complexity 2: local_mlx first; L8..L10 failed locally and
             were escalated to openai (attempt 2, today)
    O1..O7   completion, complexity 2: openai first, yesterday
    C1..C10  reasoning, complexity 8: claude, today
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
YESTERDAY = TODAY - 86_400 + 3_600

_ATTEMPT = """INSERT INTO attempts (job_id, attempt_no, model, provider, success, error_code, latency_ms,
    tokens_in, tokens_out, cost_usd, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""
_JOB = """INSERT INTO routing_decisions (job_id, "timestamp", task_type, complexity, selected_model,
    provider, success, attempts_count, actual_cost, finished_at) VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8, $2)"""


def fleet_rows() -> tuple[list[tuple], list[tuple]]:
    jobs, attempts = [], []
    for i in range(1, 11):  # local: 7 successes (100..700 ms), 3 failures escalated to openai
        ok = i <= 7
        attempts.append(
            (
                f"L{i}",
                1,
                "local_mlx",
                "lmstudio",
                ok,
                None if ok else "timeout",
                100.0 * i if ok else 5000.0,
                100 if ok else 0,
                50 if ok else 0,
                0.0,
                NOW - 60,
            )
        )
        if not ok:
            attempts.append((f"L{i}", 2, "openai", "openai", True, None, 1000.0, 1000, 500, 0.0075, NOW - 30))
        jobs.append(
            (
                f"L{i}",
                NOW - 60,
                "code_generation",
                2,
                "local_mlx" if ok else "openai",
                "lmstudio" if ok else "openai",
                1 if ok else 2,
                0.0 if ok else 0.0075,
            )
        )
    for i in range(1, 8):
        attempts.append((f"O{i}", 1, "openai", "openai", True, None, 1000.0, 1000, 500, 0.0075, YESTERDAY))
        jobs.append((f"O{i}", YESTERDAY, "completion", 2, "openai", "openai", 1, 0.0075))
    for i in range(1, 11):
        attempts.append((f"C{i}", 1, "claude", "anthropic", True, None, 3000.0, 1000, 400, 0.01, NOW - 10))
        jobs.append((f"C{i}", NOW - 10, "reasoning", 8, "claude", "anthropic", 1, 0.01))
    return jobs, attempts


@pytest.fixture(scope="module")
def analytics_dsn(postgres_admin_dsn):
    """A database holding exactly the fleet above (the session database is shared)."""
    name = f"fleet_analytics_{uuid.uuid4().hex[:8]}"

    async def setup() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        jobs, attempts = fleet_rows()
        await conn.executemany(_JOB, jobs)
        await conn.executemany(_ATTEMPT, attempts)
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    dsn = f"{postgres_admin_dsn.rpartition('/')[0]}/{name}"
    asyncio.run(setup())
    yield dsn
    asyncio.run(drop())


async def test_model_performance_report(analytics_dsn):
    async with RouterAnalytics(analytics_dsn) as analytics:
        report = await analytics.get_model_performance_report()
    assert list(report) == ["claude", "local_mlx", "openai"]
    local = report["local_mlx"]
    assert local == {
        "provider": "lmstudio",
        "attempts": 10,
        "successes": 7,
        "success_rate": 0.7,
        "avg_latency_ms": 400.0,
        "p50_latency_ms": 400.0,
        "p95_latency_ms": pytest.approx(670.0),
        "avg_tokens_in": 100.0,
        "avg_tokens_out": 50.0,
        "avg_tokens": 150.0,
        "total_cost": 0.0,
        "feedback_count": 0,  # tests/test_feedback.py scores answers
        "avg_feedback_score": None,
    }
    assert report["openai"]["attempts"] == 10 and report["openai"]["success_rate"] == 1.0
    assert report["openai"]["total_cost"] == pytest.approx(0.075)
    assert report["claude"]["p95_latency_ms"] == 3000.0 and report["claude"]["avg_tokens"] == 1400.0


async def test_cost_analysis(analytics_dsn):
    async with RouterAnalytics(analytics_dsn, reference_prices=(3.0, 15.0)) as analytics:
        costs = await analytics.get_cost_analysis()
        today = await analytics.get_cost_analysis(since=TODAY, reference_prices=(1.0, 1.0))
    assert costs["total_cost"] == pytest.approx(0.175)
    assert (costs["jobs"], costs["attempts"]) == (27, 30)
    assert costs["cost_per_job"] == pytest.approx(0.175 / 27)
    assert costs["by_model"]["openai"] == {
        "provider": "openai",
        "cost": pytest.approx(0.075),
        "attempts": 10,
        "jobs": 10,
        "tokens_in": 10_000,
        "tokens_out": 5_000,
    }
    assert costs["by_task_type"] == {
        "code_generation": {"cost": pytest.approx(0.0225), "attempts": 13, "jobs": 10},
        "completion": {"cost": pytest.approx(0.0525), "attempts": 7, "jobs": 7},
        "reasoning": {"cost": pytest.approx(0.1), "attempts": 10, "jobs": 10},
    }
    assert costs["by_day"] == {
        "2026-11-02": {"cost": pytest.approx(0.0525), "attempts": 7, "jobs": 7},
        "2026-11-03": {"cost": pytest.approx(0.1225), "attempts": 23, "jobs": 20},
    }
    # 700 input + 350 output tokens served locally, priced at $3 / $15 per million
    assert (costs["local_tokens_in"], costs["local_tokens_out"]) == (700, 350)
    assert costs["commercial_equivalent_cost"] == pytest.approx(0.00735)
    assert costs["savings"] == pytest.approx(0.00735)
    assert today["total_cost"] == pytest.approx(0.1225) and list(today["by_day"]) == ["2026-11-03"]
    assert today["commercial_equivalent_cost"] == pytest.approx(1050 / 1e6)


async def test_daily_budget_remaining(analytics_dsn):
    async with RouterAnalytics(analytics_dsn) as analytics:
        budget = await analytics.get_daily_budget_remaining(0.15, now=NOW)
        over = await analytics.get_daily_budget_remaining(0.1, now=NOW)
    assert budget == {
        "day": "2026-11-03",
        "budget": 0.15,
        "spent": pytest.approx(0.1225),
        "remaining": pytest.approx(0.0275),
        "fraction_spent": pytest.approx(0.1225 / 0.15),
    }
    assert over["remaining"] == 0.0


async def test_optimization_recommendations(analytics_dsn):
    async with RouterAnalytics(analytics_dsn) as analytics:
        recs = await analytics.get_optimization_recommendations(
            min_low_complexity_jobs=5, daily_budget_usd=0.15, now=NOW
        )
        quiet = await analytics.get_optimization_recommendations(daily_budget_usd=10.0, now=NOW, min_attempts=11)
    assert [(r["kind"], r.get("model") or r.get("task_type")) for r in recs] == [
        ("low_success_rate", "local_mlx"),
        ("slow_model", "claude"),  # p50 3000 ms vs the peers' median of 400 and 1000 ms
        ("route_locally", "openai"),  # O1..O7; the escalated L8..L10 do not count
        ("high_escalation", "code_generation"),
        ("budget", None),
    ]
    assert recs[0]["evidence"] == {"attempts": 10, "successes": 7, "success_rate": 0.7}
    assert recs[1]["evidence"] == {"p50_latency_ms": 3000.0, "peers_median_p50_latency_ms": 700.0}
    assert recs[2]["evidence"] == {"jobs": 7, "cost": pytest.approx(0.0525), "provider": "openai", "max_complexity": 3}
    assert recs[3]["evidence"] == {"jobs": 10, "escalated": 3, "escalation_rate": 0.3}
    assert recs[4]["evidence"]["fraction_spent"] == pytest.approx(0.1225 / 0.15)
    assert all(isinstance(r["message"], str) and r["message"] for r in recs)
    # default thresholds: 7 low-complexity openai jobs < 10; under budget; 10 attempts < 11
    assert [r["kind"] for r in quiet] == ["high_escalation"]


async def test_analytics_over_nats(make_settings, subjects, analytics_dsn):
    settings = make_settings(database_url=analytics_dsn, daily_budget_usd=0.15)
    async with Ledger(settings, fetch_timeout_s=0.2) as ledger:
        nc = ledger.nc

        async def ask(report: str, body: bytes = b"") -> dict:
            reply = await nc.request(subjects.analytics(report), body, timeout=10)
            return json.loads(reply.data)

        direct = RouterAnalytics(ledger.pool)
        assert await ask("performance") == json.loads(json.dumps(await direct.get_model_performance_report()))
        budget = await ask("budget", json.dumps({"now": NOW}).encode())
        assert budget["budget"] == 0.15 and budget["spent"] == pytest.approx(0.1225)
        cost = await ask("cost", json.dumps({"since": TODAY, "reference_prices": [1.0, 1.0]}).encode())
        assert cost["total_cost"] == pytest.approx(0.1225) and cost["reference_prices"]["input_per_mtok"] == 1.0
        recs = await ask("recommendations", json.dumps({"now": NOW}).encode())
        assert [r["kind"] for r in recs] == ["low_success_rate", "slow_model", "high_escalation", "budget"]
        bad = await ask("budget", b'{"daily_budget_usd": -1}')
        assert bad["error"]["code"] == "bad_request" and "daily_budget_usd" in bad["error"]["message"]
        assert (await ask("cost", b"not json"))["error"]["code"] == "bad_request"


async def test_analytics_reply_an_error_when_postgres_is_unreachable(make_settings, subjects):
    from nats.micro import add_service

    from fleet_ledger.api import AnalyticsEndpoints
    from fleet_local.embedded import free_port
    from fleet_shared.bus import connect

    nowhere = RouterAnalytics(f"postgresql://postgres@127.0.0.1:{free_port()}/none")  # nothing listens
    nc = await connect(make_settings(), name="test-analytics")
    try:
        service = await add_service(nc, name="fleet-ledger-test", version="0.1.0")
        await AnalyticsEndpoints(nowhere, daily_budget_usd=1.0).add_to(service, subjects)
        reply = await nc.request(subjects.analytics("budget"), b"", timeout=10)
        assert json.loads(reply.data) == {
            "error": {"code": "unavailable", "message": "the ledger database is unavailable"}
        }
        assert reply.headers["Nats-Service-Error-Code"] == "503"
        await service.stop()
    finally:
        await nowhere.aclose()
        await nc.close()
