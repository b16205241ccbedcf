"""The ``modelrouter`` CLI, every command through a real fleet (emulators, router, workers,
ledger on a private nats-server and PostgreSQL). Commands run via ``main(argv)`` in a thread
with their output captured, or as a process where a test must watch them live."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import msgspec
import nats
import pytest

from fleet_shared.schema import Decision, Result, encode
from fleet_shared.subjects import Subjects
from modelrouter.cli import build_parser
from modelrouter.commands import followed_decision
from tests.client_harness import cli, cli_process, fresh_database
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

COMMANDS = [
    [],
    ["ask"],
    ["submit"],
    ["result"],
    ["wait"],
    ["status"],
    ["models"],
    ["analytics"],
    ["decisions"],
    ["feedback"],
    ["report"],
    ["batch"],
    ["batch", "run"],
]


@pytest.fixture(scope="module")
def own_database_url(postgres_admin_dsn):
    with fresh_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture
async def fleet(make_settings, own_database_url):
    settings = make_settings(database_url=own_database_url, daily_budget_usd=4.0)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        yield fleet


def test_every_command_has_help(capsys):
    from modelrouter.cli import main

    for command in COMMANDS:
        assert main([*command, "--help"]) == 0, command
        out = capsys.readouterr().out
        assert out.startswith("usage: modelrouter") and "--help" in out, command
        if command and command != ["batch"]:
            assert "--json" in out, command
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert build_parser().prog == "modelrouter"


async def test_ask_streams_the_answer_then_model_cost_and_reasoning(fleet):
    run = await cli("ask", "Write hello world", "-t", "code_generation", "-c", "2", settings=fleet.settings)
    assert run.code == 0, run
    answer, _, footer = run.out.partition("\n---\n")
    assert answer.strip()  # the streamed tokens
    assert "model:     local_mlx (lmstudio)" in footer
    assert "cost:      $0.000000" in footer and "reasoning: complexity 2 <= 3" in footer

    forced = await cli("ask", "-", "-m", "claude", "--json", settings=fleet.settings, stdin_text="Explain CAP")
    result = json.loads(forced.out)
    assert forced.code == 0 and result["model"] == "claude" and result["cost_usd"] > 0
    assert "force_model" in result["reasoning"]


async def test_submit_result_and_wait(fleet):
    submitted = await cli("submit", "Summarise this", "-c", "3", "--id", "cli-sub-1", settings=fleet.settings)
    assert submitted.code == 0 and submitted.out.strip() == "cli-sub-1"
    waited = await cli("wait", "cli-sub-1", "--json", settings=fleet.settings)
    assert waited.code == 0 and json.loads(waited.out)["job_id"] == "cli-sub-1"
    read = await cli("result", "cli-sub-1", settings=fleet.settings)
    assert read.code == 0 and "job:       cli-sub-1" in read.out and "model:" in read.out
    missing = await cli("result", "no-such-job", settings=fleet.settings)
    assert missing.code == 3 and "no Result for no-such-job" in missing.err
    late = await cli("wait", "no-such-job", "--timeout", "0.3", settings=fleet.settings)
    assert late.code == 1 and late.err.count("\n") == 1 and "within 0.3s" in late.err


async def test_status_shows_services_workers_and_queues(fleet):
    run = await cli("status", "--json", settings=fleet.settings)
    report = json.loads(run.out)
    assert run.code == 0, run
    assert report["routers"] == 1 and report["ledgers"] == 1
    for provider, p in report["providers"].items():
        assert p["workers"] == 1, provider
        assert p["queue"] == {"waiting": 0, "in_progress": 0}
    assert report["jobs_queue"] == {"waiting": 0, "in_progress": 0}
    assert set(report["models"]) == {"local_mlx", "local_devstral", "claude", "openai", "gemini"}
    human = await cli("status", settings=fleet.settings)
    assert "1 router(s), 1 ledger(s)" in human.out and "lmstudio" in human.out


async def test_models_lists_registry_prices_and_health(fleet):
    run = await cli("models", "--json", settings=fleet.settings)
    body = json.loads(run.out)
    by_id = {m["id"]: m for m in body["models"]}
    assert run.code == 0 and set(by_id) == {"local_mlx", "local_devstral", "claude", "openai", "gemini"}
    assert by_id["local_mlx"]["input_per_mtok"] == 0.0 and by_id["claude"]["output_per_mtok"] > 0
    assert all(m["health"] in {"up", "ramping", "cooling", "down"} for m in body["models"])
    human = await cli("models", settings=fleet.settings)
    assert "claude" in human.out and "prices as of" in human.out


async def test_analytics_reports(fleet):
    done = await fleet.request({"id": "cli-an-1", "prompt": "Explain CAP", "complexity": 8})
    assert done.success and done.cost_usd > 0
    await fleet.watch.wait_for(["cli-an-1"])
    performance = json.loads((await cli("analytics", "performance", "--json", settings=fleet.settings)).out)
    assert performance["claude"]["attempts"] >= 1
    cost = json.loads((await cli("analytics", "cost", "--since", "1h", "--json", settings=fleet.settings)).out)
    assert cost["total_cost"] >= done.cost_usd
    budget = json.loads((await cli("analytics", "budget", "--json", settings=fleet.settings)).out)
    assert budget["budget"] == 4.0 and budget["spent"] >= done.cost_usd
    recs = await cli("analytics", "recommendations", "--json", settings=fleet.settings)
    assert recs.code == 0 and isinstance(json.loads(recs.out), list)
    human = await cli("analytics", "cost", settings=fleet.settings)
    assert human.out.startswith("Total cost: $")
    bad = await cli("analytics", "cost", "--since", "yesterday", settings=fleet.settings)
    assert bad.code == 1 and "expected a number and a unit" in bad.err


async def test_decisions_follow_tails_the_routers_decisions(fleet):
    proc = await cli_process("decisions", "--follow", "--count", "1", "--json", settings=fleet.settings)
    assert proc.stderr is not None and proc.stdout is not None
    ready = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"following decisions on" in ready  # subscribed: the job below cannot be missed
    result = await fleet.request({"id": "cli-dec-1", "prompt": "Write hello world", "complexity": 2})
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    decision = json.loads(line)
    assert decision["job_id"] == "cli-dec-1" and decision["model"] == result.model == "local_mlx"
    assert decision["reasoning"] and decision["type"] == "decision"


def test_followed_decisions_are_read_where_they_travel():
    """A Dispatch's decision is shown; a Result's only when no attempt followed it (the
    others were shown from their Dispatch); one on <p>.events.decision as it is."""
    routed = Decision(
        job_id="d1", attempt_no=1, objective="o", task_type="chat", complexity=1, model="m", provider="p", reasoning="r"
    )
    unrouted = msgspec.structs.replace(routed, model=None, provider=None, reasoning="rejected: invalid_json")

    def seen(subject: str, data: bytes) -> Decision | None:
        return followed_decision(subject, data, Subjects("llm"))

    assert seen("llm.dispatch.lmstudio", msgspec.json.encode({"job_id": "d1", "decision": routed})) == routed
    assert seen("llm.result.d1", encode(Result(job_id="d1", success=True, decision=routed))) is None
    assert seen("llm.result.d1", encode(Result(job_id="d1", success=False, decision=unrouted))) == unrouted
    assert seen("llm.result.d1", encode(Result(job_id="d1", success=True))) is None
    assert seen("llm.events.decision", encode(routed)) == routed
    assert seen("llm.dispatch.lmstudio", b"not json") is None


async def test_feedback_lands_in_the_ledger(fleet, own_database_url):
    got: asyncio.Queue = asyncio.Queue()
    sub = await fleet.nc.subscribe(fleet.subjects.ledger_committed_feedback, cb=got.put)
    await fleet.nc.flush()
    run = await cli("feedback", "cli-sub-1", "4", "--comment", "good answer", "--json", settings=fleet.settings)
    out = json.loads(run.out)
    assert run.code == 0 and out["stored"] is True
    notice = await asyncio.wait_for(got.get(), 10)
    assert json.loads(notice.data)["feedback"] == [out["id"]]
    conn = await asyncpg.connect(own_database_url)
    try:
        row = await conn.fetchrow("SELECT job_id, score, comment FROM feedback WHERE msg_id = $1", out["id"])
    finally:
        await conn.close()
    assert dict(row) == {"job_id": "cli-sub-1", "score": 4.0, "comment": "good answer"}
    await sub.unsubscribe()
    bad = await cli("feedback", "cli-sub-1", "9", settings=fleet.settings)  # refused before publishing
    assert bad.code == 1 and "$.score" in bad.err and bad.err.count("\n") == 1


async def test_errors_are_one_line_and_a_nonzero_status(make_settings):
    from fleet_local.embedded import free_port

    nowhere = make_settings(nats_url=f"nats://127.0.0.1:{free_port()}")
    for argv in (["status"], ["ask", "hi"], ["analytics", "cost"], ["batch", "run", "-", "-o", "/dev/null"]):
        run = await cli(*argv, settings=nowhere)
        assert run.code == 1, (argv, run)
        assert run.err.startswith("modelrouter: error: NATS is not reachable") and run.err.count("\n") == 1
        assert "Traceback" not in run.err and run.out == ""
    invalid = await cli("ask", "hi", "-c", "11", settings=nowhere)  # refused before connecting
    assert invalid.code == 1 and "$.complexity" in invalid.err and invalid.err.count("\n") == 1


async def test_console_script_runs_as_a_process(fleet):
    proc = await cli_process("ask", "Write hello world", "-c", "1", "--json", settings=fleet.settings)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert json.loads(out)["success"] is True
    assert nats  # the fleet's NATS stayed up for the process
