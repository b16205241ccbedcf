"""A/B experiment analytics on known ledger rows (a database of its own), and the pure
statistics under them.

The fixture's experiment "ab" (every job finished):
    control  200 jobs, 120 succeed, $0.010 each, 60 s..; 10 quality_json failures
    openai   200 jobs, 180 succeed, $0.020 each;          no quality failures
    shadow    20 jobs,  10 succeed, $0.0 (a free model)
and experiment "tiny": control 5 / 3 succeed, b 5 / 4 succeed (too few for a verdict).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from fleet_ledger.analytics import RouterAnalytics
from fleet_ledger.experiments import compare, mean_interval, wilson
from fleet_ledger.migrate import migrate

pytestmark = pytest.mark.anyio

_JOB = """INSERT INTO routing_decisions (job_id, "timestamp", task_type, complexity, selected_model, success,
    execution_time, actual_cost, finished_at, experiment, variant) VALUES ($1, 1000, 'analysis', 5, $2, $3, $4, $5,
    1001, $6, $7)"""
_ATTEMPT = """INSERT INTO attempts (job_id, attempt_no, model, provider, success, error_code, cost_usd, at)
    VALUES ($1, $2, $3, 'openai', $4, $5, $6, 1001)"""


def arm(experiment: str, variant: str, jobs: int, ok: int, cost: float, quality_failures: int = 0):
    rows, attempts = [], []
    for i in range(jobs):
        job_id = f"{experiment}-{variant}-{i}"
        success = i < ok
        rows.append((job_id, variant, success, 1.0 + i / jobs, cost, experiment, variant))
        if i < quality_failures:  # a failed quality check, then a good answer from another model
            attempts.append((job_id, 1, variant, False, "quality_json", cost / 2))
            attempts.append((job_id, 2, "other", success, None if success else "server_error", cost / 2))
        else:
            attempts.append((job_id, 1, variant, success, None if success else "server_error", cost))
    return rows, attempts


@pytest.fixture(scope="module")
def experiments_dsn(postgres_admin_dsn):
    name = f"fleet_experiments_{uuid.uuid4().hex[:8]}"
    dsn = postgres_admin_dsn.rsplit("/", 1)[0] + f"/{name}"

    async def setup() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        for args in (
            ("ab", "control", 200, 120, 0.010, 10),
            ("ab", "openai", 200, 180, 0.020),
            ("ab", "shadow", 20, 10, 0.0),
            ("tiny", "control", 5, 3, 0.01),
            ("tiny", "b", 5, 4, 0.01),
        ):
            rows, attempts = arm(*args)
            await conn.executemany(_JOB, rows)
            await conn.executemany(_ATTEMPT, attempts)
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(setup())
    yield dsn
    asyncio.run(drop())


def test_wilson_interval_matches_the_textbook():
    low, high = wilson(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-4) and high == pytest.approx(0.8922, abs=1e-4)
    assert wilson(0, 0) is None
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


def test_mean_interval_is_the_normal_approximation():
    m = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert m["mean"] == 2.5 and m["ci95"][0] == pytest.approx(2.5 - 1.959964 * 1.2909944 / 2)
    assert mean_interval([5.0])["ci95"] is None


async def test_variants_are_compared_with_intervals_and_a_verdict_when_significant(experiments_dsn):
    async with RouterAnalytics(experiments_dsn) as analytics:
        report = await analytics.get_experiment_report()
        only = await analytics.get_experiment_report(experiment="tiny")
    assert list(report) == ["ab", "tiny"] and list(only) == ["tiny"]
    ab = report["ab"]
    assert ab["baseline"] == "control"
    control, openai = ab["variants"]["control"], ab["variants"]["openai"]
    assert control["jobs"] == 200 and control["success"]["rate"] == 0.6
    assert control["success"]["ci95"] == pytest.approx(wilson(120, 200))
    assert control["validator_pass"]["n"] == 130 and control["validator_pass"]["successes"] == 120
    assert openai["validator_pass"]["rate"] == 1.0
    assert control["cost_per_job"]["mean"] == pytest.approx(0.010)
    assert control["latency_p50_s"] == pytest.approx(1.2975) and control["latency_p95_s"] > control["latency_p50_s"]
    assert control["feedback_score"]["n"] == 0  # no feedback given here
    vs = ab["comparisons"]["openai"]
    assert vs["success"]["difference"] == pytest.approx(0.3) and vs["success"]["significant"]
    assert vs["success"]["ci95"][0] > 0
    assert vs["cost_per_job"]["difference"] == pytest.approx(0.01)  # constant costs: certain
    assert vs["verdict"] == "success better; validator_pass better; cost_per_job worse"
    shadow = ab["comparisons"]["shadow"]  # 10/20 vs 120/200: the intervals overlap
    assert not shadow["success"]["significant"] and shadow["verdict"] == "cost_per_job better"
    assert report["tiny"]["comparisons"]["b"]["verdict"] == "no significant difference"


async def test_feedback_scores_are_used_when_the_table_exists(experiments_dsn):
    conn = await asyncpg.connect(experiments_dsn)
    try:
        # the ledger's feedback table (migration 0006), as its feedback consumer writes it
        scores = [(f"tiny-control-{i}", 2.0 + i % 2) for i in range(5)] + [
            (f"tiny-b-{i}", 4.0 + i % 2) for i in range(5)
        ]
        await conn.executemany(
            "INSERT INTO feedback (msg_id, job_id, score, at) VALUES ($1, $2, $3, 0)",
            [(f"fb-{job}", job, score) for job, score in scores],
        )
        async with RouterAnalytics(experiments_dsn) as analytics:
            tiny = (await analytics.get_experiment_report(experiment="tiny"))["tiny"]
    finally:
        await conn.execute("DELETE FROM feedback WHERE msg_id LIKE 'fb-tiny-%'")
        await conn.close()
    assert tiny["variants"]["control"]["feedback_score"]["mean"] == pytest.approx(2.4)
    diff = tiny["comparisons"]["b"]["feedback_score"]
    assert diff["difference"] == pytest.approx(2.0) and diff["significant"]
    assert tiny["comparisons"]["b"]["verdict"] == "feedback_score better"


def test_compare_is_pure_over_rows():
    rows = [
        {"experiment": "e", "variant": v, "job_id": f"{v}{i}", "success": True, "execution_time": 1.0,
         "cost": 0.01, "quality_failed": 0, "validated": 1}
        for v in ("a", "b") for i in range(3)
    ]  # fmt: skip
    report = compare(rows)
    assert report["e"]["baseline"] == "a"  # no "control": the first by name
    assert report["e"]["comparisons"]["b"]["verdict"] == "no significant difference"
    assert json.dumps(report)  # JSON-ready
