"""Budgets that hold across the fleet: two routers, 300 paid jobs at once, a budget a tenth of
their cost; the spend stays within the budget plus one job, and a restarted router knows it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from fleet_router.service import Router
from fleet_shared.schema import BudgetAlert, budget_alert_decoder
from tests.provider_fleet import provider_fleet

pytestmark = pytest.mark.anyio

JOBS = 300


def paid_job(n: int, tag: str) -> dict:
    # complexity 8 -> Claude, then Gemini: paid models, unless no budget is left for them
    return {
        "id": f"{tag}-{n}",
        "prompt": f"Prove that queue {n} drains in finite time",
        "task_type": "reasoning",
        "complexity": 8,
        "max_tokens": 64,
    }


@contextlib.asynccontextmanager
async def second_router(settings):
    router = await Router(settings).__aenter__()
    task = asyncio.create_task(router.run())
    try:
        yield router
    finally:
        await router.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_wave(fleet, jobs: list[dict]) -> list:
    await asyncio.gather(*(fleet.submit(job, msg_id=job["id"]) for job in jobs))
    return await asyncio.gather(*(fleet.result(job["id"], timeout=60) for job in jobs))


def paid_cost(results) -> float:
    return sum(a.cost_usd for r in results for a in r.attempts)


async def test_two_routers_hold_a_budget_of_a_tenth_and_a_restart_keeps_the_spend(make_settings):
    tag = uuid.uuid4().hex[:6]
    # what one paid job costs here (the emulator answers the same length to the same prompt)
    probe_settings = make_settings(daily_budget_usd=1000.0)
    async with provider_fleet(probe_settings, ledger=False) as (fleet, _, _e):
        (one,) = await run_wave(fleet, [paid_job(0, f"{tag}probe")])
    job_cost = one.cost_usd
    assert one.success and job_cost > 0 and one.model == "claude"

    budget = JOBS * job_cost / 10
    settings = make_settings(daily_budget_usd=budget, budget_soft_fraction=0.5)
    alerts: list[BudgetAlert] = []
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e), second_router(settings):

        async def on_alert(msg) -> None:
            alerts.append(budget_alert_decoder.decode(msg.data))

        await fleet.nc.subscribe(fleet.subjects.budget_alerts, cb=on_alert)
        # Given 300 paid jobs at once, shared by two routers
        first = await run_wave(fleet, [paid_job(n, tag) for n in range(JOBS)])
        # Then every job is served, the paid share within the budget plus one job's cost
        assert all(r.success for r in first)
        assert paid_cost(first) <= budget + job_cost
        paid = [r for r in first if r.model in ("claude", "gemini")]
        local = [r for r in first if r.model in ("local_mlx", "local_devstral")]
        assert len(paid) >= JOBS // 20 and len(paid) + len(local) == JOBS
        assert any("budget left" in r.reasoning for r in local)
        await fleet.nc.flush()
        assert {a.level for a in alerts} >= {"soft", "exhausted"} and all(a.scope == "fleet" for a in alerts)
        spent_first = paid_cost(first)

    # When every router is restarted, the day's spend is still known: a second wave adds
    # at most what the budget had left
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        second = await run_wave(fleet, [paid_job(n, f"{tag}b") for n in range(50)])
    assert all(r.success for r in second)
    assert spent_first + paid_cost(second) <= budget + job_cost
