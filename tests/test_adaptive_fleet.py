"""Adaptive routing, fleet tier: two routers replay the same attempt stream, so a model that
starts failing (emulator fault markers) is demoted for that task type on both, and promoted
back on both once it answers again. Conditions are polled with a bound, never slept on."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fleet_router.policy import admitted
from fleet_shared.schema import Job, TaskType
from tests.provider_fleet import eventually, provider_fleet
from tests.test_budget_fleet import second_router

pytestmark = pytest.mark.anyio

FAULT = "[emulate:lmstudio:error=500]"


def code_job(job_id: str, *, fault: bool) -> dict:
    return {
        "id": job_id,
        "prompt": f"Write a function that parses dates ({job_id}) {FAULT if fault else ''}",
        "task_type": "code_generation",
        "complexity": 5,
        "max_tokens": 16,
    }


def unprobed_job_id(tag: str) -> str:
    """A job id for which a demoted local_mlx is not kept in place as a probe."""
    return next(f"{tag}-ask-{i}" for i in range(100) if not admitted(f"{tag}-ask-{i}", "probe:local_mlx", 0.1))


async def run_wave(fleet, jobs: list[dict]) -> list:
    await asyncio.gather(*(fleet.submit(job, msg_id=job["id"]) for job in jobs))
    return await asyncio.gather(*(fleet.result(job["id"], timeout=60) for job in jobs))


async def test_two_routers_demote_a_failing_model_for_its_task_type_and_promote_it_back(make_settings):
    tag = uuid.uuid4().hex[:6]
    settings = make_settings(adaptive_half_life_s=2.0, adaptive_lookback_s=60.0)
    ask = Job(prompt="Write a function that reverses a list", task_type=TaskType.CODE_GENERATION, complexity=5)
    ask_id = unprobed_job_id(tag)
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e), second_router(settings) as other:
        routers = [fleet.services["router"], other]

        def decisions():
            return [r.policy.route(ask, state=r.live_state(), job_id=ask_id) for r in routers]

        # Given a healthy fleet, code generation at complexity 5 goes to local_mlx first
        assert all(d.model.id == "local_mlx" for d in decisions())

        # When local_mlx starts failing every call
        failing = await run_wave(fleet, [code_job(f"{tag}-bad-{n}", fault=True) for n in range(16)])
        assert all(r.success and r.model != "local_mlx" for r in failing)  # escalated elsewhere

        # Then both routers demote it for code generation, and say why
        def demoted():
            found = decisions()
            return found if all(d.model.id != "local_mlx" for d in found) else None

        for d in await eventually(demoted, timeout_s=20):
            assert "local_mlx demoted for code_generation: success 0% over the last" in d.reasoning
        # When it answers again, and jobs keep coming
        wave = 0

        async def promoted():
            nonlocal wave
            wave += 1
            await run_wave(fleet, [code_job(f"{tag}-ok-{wave}-{n}", fault=False) for n in range(6)])
            found = decisions()
            first = all(d.model.id == "local_mlx" and "demoted" not in d.reasoning for d in found)
            # recovered, not merely forgotten: its new successes outweigh the decayed failures
            recent = [r.live_state().task_stats["code_generation"]["local_mlx"] for r in routers]
            return found if first and all(s.success_rate >= 0.8 for s in recent) else None

        # Then both routers put it back first (the failures decay, the new successes count)
        back = await eventually(promoted, timeout_s=45, every_s=0.05)
        assert [d.model.id for d in back] == ["local_mlx", "local_mlx"]
        assert wave >= 1
