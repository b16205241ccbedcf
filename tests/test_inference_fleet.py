"""Inferred task type and complexity through the fleet: a real nats-server, PostgreSQL and
provider emulators. The Result and the ledger row say which values the job gave and which
the router inferred."""

from __future__ import annotations

import asyncpg
import pytest

from fleet_shared.schema import TaskType
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def fleet(make_settings, database_url):
    settings = make_settings(database_url=database_url, ack_wait_s=10.0)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        yield fleet


async def ledger_row(database_url: str, job_id: str):
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow("SELECT * FROM routing_decisions WHERE job_id = $1", job_id)
    finally:
        await conn.close()


async def test_results_and_ledger_say_what_was_given_and_what_was_inferred(fleet, database_url):
    bare = await fleet.request({"id": "inf-bare", "prompt": "Write a haiku about the sea."})
    half = await fleet.request(
        {"id": "inf-half", "prompt": "Summarise the trade-offs of event sourcing", "complexity": 5}
    )
    given = await fleet.request(
        {"id": "inf-given", "prompt": "Prove the Riemann hypothesis.", "task_type": "creative", "complexity": 2}
    )
    assert bare.success and bare.model == "local_mlx"  # a haiku is easy: the free local model
    assert (bare.task_type, bare.task_type_source) == (TaskType.CREATIVE, "inferred")
    assert bare.complexity <= 3 and bare.complexity_source == "inferred"
    assert bare.reasoning.startswith("inferred task creative (")
    assert (half.task_type, half.task_type_source) == (TaskType.ANALYSIS, "inferred")
    assert (half.complexity, half.complexity_source) == (5, "given")
    assert half.model == "claude"  # analysis at complexity 5: its preference list
    assert (given.task_type, given.complexity) == (TaskType.CREATIVE, 2)  # labels win over the text
    assert (given.task_type_source, given.complexity_source) == ("given", "given")
    assert "inferred" not in given.reasoning

    await fleet.watch.wait_for([bare.job_id, half.job_id, given.job_id])
    for r in (bare, half, given):
        row = await ledger_row(database_url, r.job_id)
        assert (row["task_type"], row["complexity"]) == (r.task_type.value, r.complexity)
        assert (row["task_type_source"], row["complexity_source"]) == (r.task_type_source, r.complexity_source)


async def test_a_rejected_job_records_no_source(fleet, database_url):
    r = await fleet.request({"id": "inf-bad", "prompt": "x", "complexity": 11})
    assert not r.success and r.error.code == "invalid_job"
    assert (r.task_type_source, r.complexity_source) == (None, None)
