"""Batch pipelines: input forms, order, failures, dry runs, cost caps, the Python API, and
resuming a batch interrupted with SIGINT without running any job twice."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import asyncpg
import pytest

from modelrouter import UnifiedModelClient
from modelrouter.batch_input import derived_id, read_jsonl
from tests.client_harness import cli, cli_process
from tests.provider_fleet import eventually, provider_fleet

pytestmark = [pytest.mark.anyio]

KNOWN = {"local_mlx", "local_devstral", "claude", "openai", "gemini"}

LINES = [
    '{"prompt": "Write hello world", "complexity": 1}',
    '{"id": "given-id", "prompt": "Sort a list", "task_type": "code_generation", "complexity": 2}',
    '{"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief"},'
    ' {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_completion_tokens": 50}',
    '{"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",'
    ' "body": {"model": "local_devstral", "messages": [{"role": "user", "content": "Hello"}]}}',
    "not json",
    '{"prompt": "x", "complexity": 11}',
]


def test_each_input_form_becomes_a_job_or_a_clear_failure():
    items = list(read_jsonl(LINES, known_models=KNOWN))
    assert [i.line for i in items] == [1, 2, 3, 4, 5, 6]
    plain, given, openai, batch_line, not_json, invalid = items
    assert plain.job.prompt == "Write hello world" and plain.job_id == derived_id(1, LINES[0])
    assert given.job_id == given.job.id == "given-id"
    assert [(m.role, m.content) for m in openai.job.messages] == [("system", "Be brief"), ("user", "Hi")]
    assert openai.job.max_tokens == 50 and openai.job.metadata == {"requested_model": "gpt-4o"}
    assert openai.job.force_model is None  # gpt-4o is not a registry model: routed as usual
    assert batch_line.job_id == "req-1" and batch_line.job.force_model == "local_devstral"
    assert not_json.job is None and not_json.rejected.error.code == "invalid_json"
    assert "line 5" in not_json.rejected.error.message
    assert invalid.rejected.error.code == "invalid_job" and "$.complexity" in invalid.rejected.error.message
    # ids are stable across runs: the same input gives the same ids
    assert [i.job_id for i in read_jsonl(LINES, known_models=KNOWN)] == [i.job_id for i in items]


def test_progress_line_shows_counts_speed_eta_and_cost():
    from modelrouter.batch import BatchStats
    from modelrouter.progress import describe

    stats = BatchStats(total=100, done=40, failed=2, resumed=10, in_flight=8, cost_usd=0.0125)
    stats.started -= 4.0  # 32 jobs run by this run in 4 s
    line = describe(stats, bar=True)
    assert line.startswith("[" + "#" * 10 + "." * 14 + "] 42/100 done 40 failed 2 in flight 8 (resumed 10)")
    assert "| 8.0 jobs/s ETA 0:07 | $0.012500" in line
    assert describe(BatchStats(), bar=True).startswith("0 done 0")  # stdin: no total, no bar


@pytest.fixture
async def fleet(make_settings, own_database_url):
    settings = make_settings(database_url=own_database_url, ack_wait_s=10.0)
    async with provider_fleet(settings) as (fleet, watch, emulators):
        fleet.watch, fleet.emulators = watch, emulators
        yield fleet


def chat_calls(fleet) -> int:
    """Chat requests every provider's emulator served: the jobs sent to a provider."""
    return sum(handle.emulator.calls["chat"] for handle in fleet.emulators.values())


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
async def test_batch_run_writes_one_result_per_line_in_order(fleet, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out.jsonl"
    run = await cli("batch", "run", str(src), "-o", str(out), "--json", settings=fleet.settings)
    assert run.code == 1, run  # two lines were invalid
    results = read_lines(out)
    expected_ids = [i.job_id for i in read_jsonl(LINES, known_models=KNOWN)]
    assert [r["job_id"] for r in results] == expected_ids
    assert [r["success"] for r in results] == [True, True, True, True, False, False]
    assert results[3]["model"] == "local_devstral"
    failed = read_lines(tmp_path / "out.failed.jsonl")
    assert [r["error"]["code"] for r in failed] == ["invalid_json", "invalid_job"]
    summary = json.loads(run.out)
    assert (summary["done"], summary["failed"], summary["resumed"]) == (4, 2, 0)

    argv = ["batch", "run", str(src), "-o", str(out), "--unordered", "--rate", "1000", "--json"]
    again = await cli(*argv, settings=fleet.settings)
    assert json.loads(again.out)["resumed"] == 4  # read back by id, not run again
    assert sorted(r["job_id"] for r in read_lines(out)) == sorted(expected_ids)
    assert fleet.emulators["lmstudio"].emulator.calls["chat"] + fleet.emulators["openai"].emulator.calls["chat"] == 4


async def test_dry_run_routes_and_estimates_without_calling_anything(make_settings, tmp_path):
    from fleet_local.embedded import free_port

    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "Write hello world", "complexity": 2}\n{"prompt": "Prove it", "complexity": 9}\n')
    nowhere = make_settings(nats_url=f"nats://127.0.0.1:{free_port()}")  # nothing listens: nothing is called
    run = await cli("batch", "run", str(src), "--dry-run", "--json", settings=nowhere)
    assert run.code == 0, run
    rows = [json.loads(x) for x in run.out.splitlines()]
    assert [(r["line"], r["model"]) for r in rows] == [(1, "local_mlx"), (2, "claude")]
    assert rows[0]["estimated_cost_usd"] == 0.0 and rows[1]["estimated_cost_usd"] > 0
    assert "estimated cost $" in run.err and "local_mlx: 1, claude: 1" in run.err


@pytest.mark.integration
async def test_max_cost_stops_submitting_before_the_cap(fleet, tmp_path):
    from modelrouter import IntelligentModelRouter
    from modelrouter.batch_input import to_item

    jobs = [{"prompt": f"Prove theorem {i}", "complexity": 9} for i in range(6)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    estimate = IntelligentModelRouter().route(to_item(1, jobs[0]).job).estimated_cost_usd
    cap = estimate * 1.0001  # room for the first job's estimate; after it, spend + estimate > cap
    out = tmp_path / "out.jsonl"
    argv = ["batch", "run", str(src), "-o", str(out), "--max-cost", str(cap), "--max-in-flight", "1", "--json"]
    run = await cli(*argv, settings=fleet.settings)
    results = read_lines(out)
    assert [r["success"] for r in results] == [True] + [False] * 5, run
    assert all(r["error"]["code"] == "max_cost_reached" for r in results[1:])
    assert 0 < results[0]["cost_usd"] <= cap
    assert json.loads(run.out)["skipped_for_cost"] == 5
    assert fleet.emulators["anthropic"].emulator.calls["chat"] == 1
    assert len(read_lines(tmp_path / "out.failed.jsonl")) == 5


@pytest.mark.integration
async def test_python_api_batch(fleet):
    jobs = [{"prompt": f"Write function {i}", "complexity": 2} for i in range(20)] + ["Just a prompt"]
    async with UnifiedModelClient(settings=fleet.settings) as client:
        results = [r async for r in client.batch(jobs, max_in_flight=4)]
        unordered = [r async for r in client.batch(jobs, ordered=False)]
    assert len(results) == 21 and all(r["success"] for r in results)
    assert [r["job_id"] for r in results] == [
        derived_id(i + 1, json.dumps(j, sort_keys=True)) for i, j in enumerate(jobs[:20])
    ] + [results[-1]["job_id"]]
    assert sorted(r["job_id"] for r in unordered) == sorted(r["job_id"] for r in results)
    assert chat_calls(fleet) == 21  # the second batch ran nothing again


#: Jobs in the interrupted batch (the issue's 5,000; emulators answer at once).
RESUME_JOBS = 5000


async def ledger_counts(database_url: str, ids: list[str]) -> tuple[dict[str, int], int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, count(*) AS n FROM routing_decisions WHERE job_id = ANY($1::text[]) GROUP BY job_id", ids
        )
        attempts = await conn.fetchval("SELECT count(*) FROM attempts WHERE job_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    return {r["job_id"]: r["n"] for r in rows}, attempts


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_batch_interrupted_by_sigint_resumes_and_runs_each_job_once(fleet, tmp_path, own_database_url):
    lines = [
        json.dumps({"prompt": f"Job {i}: write function number {i}", "complexity": 1 + i % 3})
        for i in range(RESUME_JOBS)
    ]
    src = tmp_path / "jobs.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.submitted"
    argv = ["batch", "run", str(src), "-o", str(out), "--max-in-flight", "64", "--progress-interval", "1"]

    first = await cli_process(*argv, settings=fleet.settings)
    # mid-way: a fifth of the jobs submitted (the journal is appended as JetStream acks them)
    await eventually(lambda: journal.exists() and journal.read_text().count("\n") >= RESUME_JOBS // 5, timeout_s=120)
    first.send_signal(signal.SIGINT)
    _, first_err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 130, first_err.decode()
    assert "interrupted" in first_err.decode() and "Traceback" not in first_err.decode()
    assert len(out.read_text().splitlines()) < RESUME_JOBS  # it really stopped mid-way

    second = await cli_process(*argv, "--json", settings=fleet.settings)
    second_out, second_err = await asyncio.wait_for(second.communicate(), 240)
    assert second.returncode == 0, second_err.decode()
    summary = json.loads(second_out)
    assert summary["resumed"] >= RESUME_JOBS // 5 and summary["done"] == RESUME_JOBS
    print(
        "\nfirst run:",
        first_err.decode().strip().splitlines()[-2:],
        "\nsecond run:",
        second_err.decode().strip().splitlines()[-1:],
    )

    expected = [item.job_id for item in read_jsonl(lines)]
    results = read_lines(out)
    assert [r["job_id"] for r in results] == expected  # every line once, in input order
    assert all(r["success"] for r in results)
    await fleet.watch.wait_for(expected, timeout=120)
    decisions, attempts = await ledger_counts(own_database_url, expected)
    assert len(decisions) == RESUME_JOBS and set(decisions.values()) == {1}  # one ledger row per job
    assert attempts == RESUME_JOBS
    assert chat_calls(fleet) == RESUME_JOBS  # no job was sent to a provider twice
