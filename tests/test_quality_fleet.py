"""Quality checks through a running fleet: the first model's answer is bad (the emulator's
content faults), the job escalates and succeeds on the next model, and the ledger keeps the
failed attempt with its quality_<check> code, tokens and cost."""

from __future__ import annotations

import asyncpg
import pytest

from tests.fleet_harness import running_fleet

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fleet(make_settings, database_url):
    settings = make_settings(database_url=database_url, ack_wait_s=10.0)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        yield fleet


CASES = [
    ("q-empty", "[emulate:anthropic:fault=empty] weigh the options", None, "quality_empty"),
    ("q-refusal", "[emulate:anthropic:fault=refusal_text] weigh the options", None, "quality_refusal"),
    ("q-json", "[emulate:anthropic:fault=bad_json] weigh the options as JSON", {"type": "json_object"}, "quality_json"),
]


async def test_bad_answers_escalate_and_the_ledger_keeps_the_failed_attempt(fleet, database_url):
    for job_id, prompt, response_format, code in CASES:
        job = {"id": job_id, "prompt": prompt, "task_type": "reasoning", "complexity": 8}
        if response_format:
            job["response_format"] = response_format
        r = await fleet.request(job)
        assert r.success, (job_id, r.error)
        first, *_, last = r.attempts
        assert (first.model, first.success, first.error.code) == ("claude", False, code)
        assert first.tokens_out > 0 and first.cost_usd > 0  # the bad answer was paid for
        assert last.success and last.model != "claude" and r.model == last.model
        assert r.cost_usd == pytest.approx(sum(a.cost_usd for a in r.attempts))
    ids = [job_id for job_id, *_ in CASES]
    await fleet.watch.wait_for(ids)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, model, success, error_code, tokens_out, cost_usd FROM attempts"
            " WHERE job_id = ANY($1::text[]) AND attempt_no = 1 ORDER BY job_id",
            ids,
        )
    finally:
        await conn.close()
    got = {row["job_id"]: (row["model"], row["success"], row["error_code"]) for row in rows}
    assert got == {job_id: ("claude", False, code) for job_id, _, _, code in CASES}
    assert all(row["tokens_out"] > 0 and row["cost_usd"] > 0 for row in rows)


async def test_a_code_answer_that_does_not_parse_escalates(fleet):
    r = await fleet.request(
        {"prompt": "[emulate:lmstudio:fault=bad_code] write a sort", "task_type": "code_generation", "complexity": 2}
    )
    assert r.success
    assert [a.error.code for a in r.attempts if not a.success] == ["quality_code"] * (len(r.attempts) - 1)
    assert r.attempts[0].provider == "lmstudio" and r.provider != "lmstudio"


async def test_a_truncated_answer_escalates_only_when_the_job_rejects_it(fleet):
    base = {"prompt": "[emulate:anthropic:fault=long_answer] explain", "task_type": "reasoning", "complexity": 8}
    kept = await fleet.request({**base, "max_tokens": 20})
    assert kept.success and kept.model == "claude" and kept.truncated
    strict = await fleet.request({**base, "max_tokens": 20, "context": {"reject_truncated": True}})
    assert strict.success and strict.model != "claude" and not strict.truncated
    assert strict.attempts[0].error.code == "quality_truncated"
