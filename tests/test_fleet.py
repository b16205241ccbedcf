"""The fleet end to end, over a real nats-server and a real PostgreSQL, from a client that
knows only the public wire contract (raw JSON on <p>.request / <p>.submit)."""

from __future__ import annotations

import asyncpg
import pytest

from fleet_router.intake import FRESH_ID_HEADER
from fleet_router.policy import IntelligentModelRouter
from fleet_shared.schema import Result, TaskType, encode
from modelrouter.agent import create_routed_coder_agent
from modelrouter.client import UnifiedModelClient
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def fleet(make_settings, database_url):
    settings = make_settings(database_url=database_url, ack_wait_s=10.0)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        yield fleet


async def ledger_rows(database_url: str, job_ids: list[str]):
    conn = await asyncpg.connect(database_url)
    try:
        decisions = await conn.fetch("SELECT * FROM routing_decisions WHERE job_id = ANY($1::text[])", job_ids)
        attempts = await conn.fetch(
            "SELECT * FROM attempts WHERE job_id = ANY($1::text[]) ORDER BY job_id, attempt_no", job_ids
        )
    finally:
        await conn.close()
    return decisions, attempts


async def test_simple_code_job_is_served_locally(fleet):
    r = await fleet.request(
        {
            "prompt": "Write a Python function to sort a list",
            "task_type": "code_generation",
            "complexity": 2,
            "metadata": {"ticket": 42, "tags": ["a"]},
        }
    )
    assert r.success and r.error is None
    assert (r.model, r.provider) == ("local_mlx", "lmstudio")
    assert r.content and r.tokens_in > 0 and r.tokens_out > 0
    assert r.cost_usd == 0.0
    assert r.metadata == {"ticket": 42, "tags": ["a"]}
    assert "complexity 2 <= 3" in r.reasoning
    assert [a.model for a in r.attempts] == ["local_mlx"]


async def test_a_request_cannot_skip_the_look_up_of_an_earlier_result(fleet):
    """The intake alone marks an id as freshly made (no earlier Result possible): a client's
    own marker is dropped, so a job whose id already has a Result is answered from it."""
    earlier = Result(job_id="kept-1", success=True, content="the earlier answer")
    await fleet.js.publish(fleet.subjects.result("kept-1"), encode(earlier), headers={"Nats-Msg-Id": "result:kept-1"})
    forged = {FRESH_ID_HEADER: "kept-1"}
    r = await fleet.request({"id": "kept-1", "prompt": "Write hello world", "complexity": 1}, headers=forged)
    assert r.content == "the earlier answer" and r.attempts == []
    fresh = await fleet.request({"prompt": "Write hello world", "complexity": 1})  # no id: the intake makes one
    assert fresh.success and fresh.decision is not None and fresh.decision.job_id == fresh.job_id


async def test_complex_reasoning_goes_to_claude_and_is_priced(fleet):
    r = await fleet.request(
        {"prompt": "Analyze the pros and cons of microservices", "task_type": "reasoning", "complexity": 8}
    )
    assert r.success and r.model == "claude" and r.provider == "anthropic"
    spec = fleet.services["router"].policy.registry.models["claude"]
    assert r.cost_usd == pytest.approx(spec.cost_usd(r.tokens_in, r.tokens_out))
    assert r.cost_usd > 0


async def test_forced_model_is_honoured(fleet):
    r = await fleet.request(
        {
            "prompt": "Write hello world",
            "task_type": "code_generation",
            "complexity": 2,
            "context": {"force_model": "openai"},
        }
    )
    assert r.success and r.model == "openai"
    assert "force_model" in r.reasoning


async def test_local_failures_escalate_to_commercial(fleet, database_url):
    r = await fleet.request(
        {
            "id": "escalate-1",
            "prompt": "[emulate:lmstudio:error=500] sort a list",
            "task_type": "code_generation",
            "complexity": 2,
        }
    )
    assert r.success and r.model == "openai"
    assert [(a.model, a.success) for a in r.attempts] == [
        ("local_mlx", False),
        ("local_devstral", False),
        ("openai", True),
    ]
    assert r.attempts[0].error.code == "server_error"
    assert "2 local attempts failed" in r.reasoning
    await fleet.watch.wait_for(["escalate-1"])
    decisions, attempts = await ledger_rows(database_url, ["escalate-1"])
    assert len(decisions) == 1 and decisions[0]["selected_model"] == "openai" and decisions[0]["success"]
    assert [a["model"] for a in attempts] == ["local_mlx", "local_devstral", "openai"]


async def test_every_model_failing_lists_every_attempt(fleet):
    r = await fleet.request({"prompt": "[emulate:*:error=500] anything", "complexity": 5})
    assert not r.success and r.content is None
    assert len(r.attempts) == 5 and len({a.model for a in r.attempts}) == 5
    assert r.error.code == "all_models_failed"


async def test_submit_is_durable_and_result_readable_later(fleet):
    ack = await fleet.submit({"id": "sub-1", "prompt": "Summarise this", "complexity": 3}, msg_id="sub-1")
    assert ack.stream == fleet.subjects.jobs_stream and not ack.duplicate
    r = await fleet.result("sub-1")
    assert r.success and r.job_id == "sub-1" and r.model == "local_mlx"
    again = await fleet.result("sub-1")  # a client that comes later still reads it
    assert again == r


async def test_non_json_bytes_give_failed_result_with_header_id(fleet, database_url):
    await fleet.submit(b"\x00\xffnot json at all", msg_id="garbage-1")
    r = await fleet.result("garbage-1")
    assert not r.success and r.error.code == "invalid_json"
    assert "not valid JSON" in r.error.message
    ok = await fleet.request({"prompt": "still alive?", "complexity": 1})  # nothing crashed
    assert ok.success
    await fleet.watch.wait_for(["garbage-1"])
    decisions, _ = await ledger_rows(database_url, ["garbage-1"])
    assert len(decisions) == 1 and decisions[0]["success"] is False


@pytest.mark.parametrize(
    "payload,code,path",
    [
        ({"prompt": "x", "complexity": 11}, "invalid_job", "$.complexity"),
        ({"prompt": "x", "task_type": "poetry"}, "invalid_job", "$.task_type"),
        ({"complexity": 3}, "invalid_job", "prompt"),
        ({"prompt": "x", "context": {"force_model": "gpt-99"}}, "unknown_model", "gpt-99"),
    ],
)
async def test_invalid_fields_give_a_clear_failed_result(fleet, payload, code, path):
    r = await fleet.request(payload)
    assert not r.success and r.error.code == code and path in r.error.message
    assert (await fleet.request({"prompt": "next job", "complexity": 1})).success


async def test_exactly_one_ledger_row_per_job(fleet, database_url):
    ids = [f"row-{i}" for i in range(12)]
    for i, job_id in enumerate(ids):
        await fleet.submit(
            {"id": job_id, "prompt": f"job {i}", "complexity": 1 + i % 10, "task_type": list(TaskType)[i % 6].value},
            msg_id=job_id,
        )
    await fleet.submit({"id": ids[0], "prompt": "job 0 again"}, msg_id=ids[0])  # de-duplicated
    results = [await fleet.result(j) for j in ids]
    assert all(r.success for r in results)
    await fleet.watch.wait_for(ids)
    decisions, attempts = await ledger_rows(database_url, ids)
    assert sorted(d["job_id"] for d in decisions) == sorted(ids)
    by_id = {d["job_id"]: d for d in decisions}
    for r in results:
        row = by_id[r.job_id]
        assert row["selected_model"] == r.model and row["reasoning"] == r.reasoning
        assert row["task_type"] == r.task_type.value and row["complexity"] == r.complexity
        assert row["tokens_used"] == r.tokens_in + r.tokens_out
        assert row["actual_cost"] == pytest.approx(r.cost_usd)
        assert row["objective"].startswith("job ")
    assert len(attempts) == 12


async def test_python_client_and_routed_agent(fleet):
    async with UnifiedModelClient(
        IntelligentModelRouter(), nats_url=fleet.settings.nats_url, prefix=fleet.subjects.prefix, timeout_s=30
    ) as client:
        assert client.preview("Write hello world", TaskType.CODE_GENERATION, 2)["model"] == "local_mlx"
        result = await client.generate("Analyze the pros and cons of microservices", TaskType.REASONING, complexity=7)
        assert result["success"] and result["model"] == "claude"
        job_id = await client.submit(
            "Write hello world", TaskType.CODE_GENERATION, 2, context={"force_model": "local_devstral"}
        )
        later = await client.result(job_id)
        assert later["model"] == "local_devstral"
        agent = create_routed_coder_agent(client)
        response = await agent.generate_response("Write a Python function to sort a list", context={"complexity": 3})
        assert response["success"] and response["model"] == "local_mlx"
        assert response["metadata"] == {"agent": "coder"}
