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


async def test_poor_feedback_on_one_models_answers_makes_both_routers_prefer_another(make_settings):
    """Scores are published after the answers; a router started afterwards replays both
    streams from its look-back and reaches the same verdict."""
    from fleet_shared.schema import Feedback, encoder
    from fleet_shared.subjects import Subjects

    tag = uuid.uuid4().hex[:6]
    settings = make_settings(adaptive_half_life_s=600.0, adaptive_lookback_s=600.0)
    ask = Job(prompt="Write a function that reverses a list", task_type=TaskType.CODE_GENERATION, complexity=5)
    ask_id = unprobed_job_id(tag)
    async with provider_fleet(settings, ledger=False) as (fleet, _, _e):
        router = fleet.services["router"]
        assert router.policy.route(ask, state=router.live_state(), job_id=ask_id).model.id == "local_mlx"

        # Given local_mlx answers eight code jobs, and their users score every answer 1/5
        answered = await run_wave(fleet, [code_job(f"{tag}-fb-{n}", fault=False) for n in range(8)])
        assert all(r.success and r.model == "local_mlx" for r in answered)
        feedback = Subjects(settings.subject_prefix).feedback
        for r in answered:
            await fleet.nc.publish(feedback, encoder.encode(Feedback(job_id=r.job_id, score=1.0)))
        await fleet.nc.flush()

        def demoted(r):
            d = r.policy.route(ask, state=r.live_state(), job_id=ask_id)
            return d if d.model.id != "local_mlx" else None

        # Then the router prefers another model for code generation, and says why
        d = await eventually(lambda: demoted(router), timeout_s=20)
        assert "local_mlx demoted for code_generation: feedback 1.0/5 over 8" in d.reasoning
        # And a router started now replays the answers and the scores to the same verdict
        async with second_router(settings) as other:
            late = await eventually(lambda: demoted(other), timeout_s=20)
            assert "local_mlx demoted for code_generation: feedback 1.0/5 over 8" in late.reasoning
        # While a task type the scores were not about still goes to local_mlx
        poem = Job(prompt="Write a haiku about rain", task_type=TaskType.CREATIVE, complexity=2)
        assert router.policy.route(poem, state=router.live_state(), job_id=ask_id).model.id == "local_mlx"
