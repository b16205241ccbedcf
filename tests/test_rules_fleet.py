"""Custom rules, experiments and shadow traffic through the fleet: a real nats-server,
PostgreSQL and provider emulators. The rules are hot-reloaded from NATS KV: a new version
changes routing without restarting the router; an invalid one is rejected and the old
rules stay."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from fleet_shared import rules_store
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PREFER_GEMINI = """
[[rule]]
name = "code-to-gemini"
match = { task_types = ["code_generation"] }
prefer = ["gemini"]
"""

AB_WITH_SHADOW = """
[[experiment]]
name = "ab"
match = { task_types = ["analysis"] }
shadow = "gemini"
[[experiment.variant]]
name = "control"
[[experiment.variant]]
name = "openai"
prefer = ["openai"]
"""


@pytest.fixture
async def fleet(make_settings, database_url):
    settings = make_settings(database_url=database_url, ack_wait_s=10.0)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        fleet.config = await rules_store.open_config(fleet.js, fleet.subjects)
        yield fleet


async def router_status(fleet, revision: int, timeout: float = 15.0) -> rules_store.RulesStatus:
    """The router's report once it has seen ``revision`` of the rules (waits on a KV watch)."""
    key = rules_store.STATUS_PREFIX + fleet.services["router"].instance
    watcher = await fleet.config.watch(key)
    try:
        async with asyncio.timeout(timeout):
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                status = rules_store.status_decoder.decode(entry.value)
                if status.revision >= revision:
                    return status
    finally:
        await watcher.stop()
    raise AssertionError("unreachable")


def code_job(job_id: str) -> dict:
    return {"id": job_id, "prompt": "Write a function", "task_type": "code_generation", "complexity": 2}


async def test_a_rules_update_changes_routing_without_a_restart_and_a_bad_one_is_rejected(fleet):
    router = fleet.services["router"]
    before = await fleet.request(code_job("rules-before"))
    assert before.success and before.model == "local_mlx"  # the seed's tree: simple -> local

    revision, _ = await rules_store.write(fleet.config, PREFER_GEMINI)
    status = await router_status(fleet, revision)
    assert status.error is None and status.loaded_revision == revision and status.rules == 1
    after = await fleet.request(code_job("rules-after"))
    assert after.success and after.model == "gemini"
    assert "custom rule 'code-to-gemini' prefers gemini" in after.reasoning

    # written past the CLI's validation: the router validates again and keeps what it had
    bad = await fleet.config.put(rules_store.RULES_KEY, b'[[rule]]\nname = "x"\nprefer = ["gpt-99"]\n')
    status = await router_status(fleet, bad)
    assert status.loaded_revision == revision and "line 1" in status.error and "gpt-99" in status.error
    still = await fleet.request(code_job("rules-still"))
    assert still.model == "gemini" and router.rules.loaded_revision == revision

    # deleting the key clears the rules: the seed's tree again
    await fleet.config.delete(rules_store.RULES_KEY)  # its delete marker comes after ``bad``
    assert (await router_status(fleet, bad + 1)).rules == 0
    assert (await fleet.request(code_job("rules-cleared"))).model == "local_mlx"


async def test_an_experiment_splits_jobs_and_shadows_them_into_the_ledger(fleet, database_url):
    revision, _ = await rules_store.write(fleet.config, AB_WITH_SHADOW)
    assert (await router_status(fleet, revision)).error is None
    ids = [f"ab-{i}" for i in range(16)]
    results = await asyncio.gather(
        *(
            fleet.request({"id": i, "prompt": "Compare two designs", "task_type": "analysis", "complexity": 5})
            for i in ids
        )
    )
    assert all(r.success for r in results)
    assert {r.model for r in results} <= {"claude", "openai"}  # never the shadow's answer
    shadows = [await fleet.result(f"{i}-shadow") for i in ids]
    assert all(s.model == "gemini" and s.success for s in shadows)
    assert all(s.content != r.content or s.model != r.model for s, r in zip(shadows, results, strict=True))

    await fleet.watch.wait_for([*ids, *(f"{i}-shadow" for i in ids)])
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, selected_model, experiment, variant, shadow_of FROM routing_decisions"
            " WHERE experiment = 'ab' ORDER BY job_id"
        )
    finally:
        await conn.close()
    by_id = {r["job_id"]: r for r in rows}
    for i, result in zip(ids, results, strict=True):
        row = by_id[i]
        assert row["variant"] in ("control", "openai") and row["shadow_of"] is None
        assert (row["variant"] == "openai") == (result.model == "openai")
        shadow = by_id[f"{i}-shadow"]
        assert (shadow["variant"], shadow["shadow_of"], shadow["selected_model"]) == ("shadow", i, "gemini")
    assert {by_id[i]["variant"] for i in ids} == {"control", "openai"}  # 16 jobs: both arms used


def test_status_round_trips():
    status = rules_store.RulesStatus(router="r", revision=2, loaded_revision=1, error="line 3: bad")
    assert rules_store.status_decoder.decode(msgspec.json.encode(status)) == status
