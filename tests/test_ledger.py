"""What the ledger writes, against a real nats-server and a real PostgreSQL (its operation:
outages, migrations, metrics, signals, is in test_ledger_ops.py).

Synchronisation is event-driven: a test subscribes to the ledger's commit notices (or to
JetStream's advisories) before publishing, then waits for them with a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from fleet_ledger.writer import Envelope, collapse
from fleet_shared.schema import Attempt, AttemptRecord, ErrorInfo
from tests.ledger_harness import (
    FAILED_LOCAL,
    OK_OPENAI,
    T0,
    WAIT_S,
    client,
    decision,
    fetch_row,
    new_job_id,
    publish_events,
    publish_result,
    result,
    row_when,
    running,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url)


async def test_decisions_attempts_then_result_fill_every_column(settings, subjects, database_url):
    job = new_job_id()
    before = time.time()
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_events(
            js,
            subjects,
            decision(job, 1, task_type_source="given", complexity_source="inferred"),
            AttemptRecord(job_id=job, attempt_no=1, attempt=FAILED_LOCAL, at=T0 + 121),
            decision(
                job,
                2,
                model="openai",
                provider="openai",
                reasoning="escalated: local failed",
                estimated_cost_usd=0.008,
                estimated_latency_ms=9000.0,
            ),
            AttemptRecord(job_id=job, attempt_no=2, attempt=OK_OPENAI, at=T0 + 124),
        )
        # one loop commits the events in stream order: attempt 2 noticed => decision 2 written
        await notices.wait(attempts=[(job, 2)])
        await publish_result(js, subjects, result(job, task_type_source="given", complexity_source="inferred"))
        await notices.wait(results=[job])
    row, attempts = await fetch_row(database_url, job)
    assert row.pop("id") > 0
    finished_at = row.pop("finished_at")
    assert before - 1 <= finished_at <= time.time() + 1
    assert row == {
        "timestamp": T0 + 1,
        "objective": "Write a Python function to sort a list",
        "task_type": "code_generation",
        "complexity": 3,
        "selected_model": "openai",
        "reasoning": "escalated after a local failure",
        "estimated_cost": 0.008,
        "actual_cost": 0.0075,
        "execution_time": 122.6,
        "estimated_time": 9.0,
        "success": True,
        "tokens_used": 1500,
        "job_id": job,
        "provider": "openai",
        "error_code": None,
        "error_message": None,
        "tokens_in": 1000,
        "tokens_out": 500,
        "attempts_count": 2,
        "decision_attempt_no": 2,
        "truncated": False,
        "api_key_name": None,  # sent over NATS, not through the HTTP gateway
        "experiment": None,  # in no A/B experiment
        "variant": None,
        "shadow_of": None,
        "task_type_source": "given",
        "complexity_source": "inferred",
    }
    assert [(a["attempt_no"], a["model"], a["success"], a["error_code"], a["at"]) for a in attempts] == [
        (1, "local_mlx", False, "timeout", T0 + 121),  # the AttemptRecord's time wins
        (2, "openai", True, None, T0 + 124),
    ]
    assert attempts[1]["cost_usd"] == 0.0075 and attempts[1]["latency_ms"] == 2500.0
    assert attempts[1]["estimated_cost_usd"] == OK_OPENAI.estimated_cost_usd
    assert (attempts[1]["ttft_ms"], attempts[1]["cached_tokens_in"]) == (OK_OPENAI.ttft_ms, OK_OPENAI.cached_tokens_in)


async def test_decisions_carried_in_the_attempt_record_and_the_result(settings, subjects, database_url):
    """As the fleet sends them: the decision of a failed attempt inside its AttemptRecord,
    the last one inside the Result; no Decision message of its own. Either order."""
    for result_first in (False, True):
        job = new_job_id()
        first = decision(job, 1, experiment="exp-a", variant="control")
        last = decision(job, 2, model="openai", provider="openai", reasoning="escalated", estimated_cost_usd=0.008)
        record = AttemptRecord(job_id=job, attempt_no=1, attempt=FAILED_LOCAL, at=T0 + 121, decision=first)
        async with client(settings, subjects) as (nc, js, notices), running(settings):
            if result_first:
                await publish_result(js, subjects, result(job, decision=last))
                await notices.wait(results=[job])
            await publish_events(js, subjects, record)
            await notices.wait(attempts=[(job, 1)])
            if not result_first:
                await publish_result(js, subjects, result(job, decision=last))
                await notices.wait(results=[job])
        row, attempts = await fetch_row(database_url, job)
        assert row["timestamp"] == T0 + 1, result_first  # when the job was first routed
        assert row["objective"] == "Write a Python function to sort a list"
        assert (row["decision_attempt_no"], row["selected_model"], row["estimated_cost"]) == (2, "openai", 0.008)
        assert (row["experiment"], row["variant"]) == ("exp-a", "control")
        assert [a["attempt_no"] for a in attempts] == [1, 2]


async def test_result_before_decision_keeps_the_final_fields(settings, subjects, database_url):
    job = new_job_id()
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_result(js, subjects, result(job, reasoning=""))
        await notices.wait(results=[job])
        row, attempts = await fetch_row(database_url, job)
        assert row["objective"] is None and row["selected_model"] == "openai" and row["finished_at"]
        assert [a["attempt_no"] for a in attempts] == [1, 2]  # from Result.attempts
        late = decision(job, 2, model="claude", provider="anthropic", reasoning="late decision")
        await publish_events(js, subjects, decision(job, 1))
        await row_when(database_url, job, lambda r: r["decision_attempt_no"] == 1)
        await publish_events(js, subjects, late)  # a later batch (one batch merges them: see collapse)
        row = await row_when(database_url, job, lambda r: r["decision_attempt_no"] == 2)
    assert row["objective"] == "Write a Python function to sort a list"  # filled by the decision
    assert row["timestamp"] == T0 + 1  # the decision's time replaces the estimate
    assert row["selected_model"] == "openai" and row["provider"] == "openai"  # not clobbered
    assert row["reasoning"] == "simple task (complexity 3 <= 3): local first"  # the result had none
    assert row["success"] is True and row["attempts_count"] == 2


async def test_duplicates_leave_one_row(settings, subjects, database_url):
    job = new_job_id()
    async with client(settings, subjects) as (nc, js, notices):
        # published before the ledger starts, so both copies arrive in one batch
        await publish_events(js, subjects, decision(job, 1), decision(job, 1), decision(job, 2, model="openai"))
        async with running(settings):
            await notices.wait(decisions=[job])
            await publish_result(js, subjects, result(job))
            await notices.wait(results=[job])
            first, _ = await fetch_row(database_url, job)
            await publish_result(js, subjects, result(job))  # a second copy, a later batch
            await publish_events(
                js, subjects, decision(job, 1), AttemptRecord(job_id=job, attempt_no=2, attempt=OK_OPENAI, at=T0 + 124)
            )
            # the attempt follows the decision in the stream: noticed => both are written
            await notices.wait(results=[job], times=2)
            await notices.wait(attempts=[(job, 2)])
    row, attempts = await fetch_row(database_url, job)
    assert row == first  # finished_at included: the first copy's time is kept
    assert row["decision_attempt_no"] == 2 and row["selected_model"] == "openai"
    assert [a["attempt_no"] for a in attempts] == [1, 2]


async def test_the_result_has_the_last_word_on_its_attempts(settings, subjects, database_url):
    # a worker recorded a failed call, died before escalating, and the redelivered job
    # succeeded on the same attempt number: the Result says what finally happened
    job = new_job_id()
    failed_openai = Attempt("openai", "openai", False, ErrorInfo("server_error", "500"), 900.0, 0, 0, 0.0)
    stale = AttemptRecord(job_id=job, attempt_no=2, attempt=failed_openai, at=T0 + 123)
    async with client(settings, subjects) as (nc, js, notices), running(settings):
        await publish_events(js, subjects, decision(job, 1), stale)
        await notices.wait(attempts=[(job, 2)])
        await publish_result(js, subjects, result(job))
        await notices.wait(results=[job])
        await publish_events(js, subjects, stale)  # redelivered once more, after the Result
        await notices.wait(attempts=[(job, 2)], times=2)
    _, attempts = await fetch_row(database_url, job)
    assert [(a["attempt_no"], a["success"], a["error_code"]) for a in attempts] == [
        (1, False, "timeout"),
        (2, True, None),
    ]
    assert attempts[1]["at"] == T0 + 123  # the recorded time of the call is kept


def test_collapse_keeps_the_newest_decision_and_the_earliest_time():
    job = new_job_id()
    batch = [
        Envelope(decision(job, 2, model="openai", at=T0 + 9), 5.0),
        Envelope(decision(job, 1, at=T0 + 1), 6.0),
        Envelope(decision(job, 2, model="openai", at=T0 + 9), 7.0),
    ]
    rows = collapse(batch)
    assert len(rows.decisions) == 1
    assert rows.decisions[0][:2] == (job, T0 + 1) and rows.decisions[0][5] == "openai"
    assert rows.decisions[0][12] == 2  # decision_attempt_no: the newest decision's


def test_collapse_carries_where_task_type_and_complexity_came_from():
    job, old = new_job_id(), new_job_id()
    rows = collapse(
        [
            Envelope(decision(job, 1, task_type_source="inferred", complexity_source="given"), 5.0),
            Envelope(result(job, task_type_source="inferred", complexity_source="given"), 6.0),
            Envelope(result(old), 6.0),  # a producer from before the fields: NULL, not a guess
        ]
    )
    assert rows.decisions[0][10:12] == ("inferred", "given")
    by_job = {row[0]: row for row in rows.results}
    assert by_job[job][-2:] == ("inferred", "given")
    assert by_job[old][-2:] == (None, None)


async def test_malformed_messages_are_terminated_and_the_loop_goes_on(settings, subjects, database_url):
    job = new_job_id()
    terminated = asyncio.Queue()
    async with client(settings, subjects) as (nc, js, notices):
        advisory = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"
        await nc.subscribe(f"{advisory}.{subjects.events_stream}.ledger-events", cb=terminated.put)
        await nc.subscribe(f"{advisory}.{subjects.results_stream}.ledger-results", cb=terminated.put)
        async with running(settings) as ledger:
            await js.publish(subjects.decision_event, b"not json")
            await js.publish(subjects.attempt_event, b'{"type": "decision", "job_id": "x"}')  # fields missing
            await js.publish(subjects.result("broken"), b'{"job_id": 7}')
            await publish_events(js, subjects, decision(job, 1))
            await publish_result(js, subjects, result(job))
            await notices.wait(results=[job], decisions=[job])
            for _ in range(3):
                await asyncio.wait_for(terminated.get(), WAIT_S)
            errors = ledger.metrics.counter("fleet_ledger_errors_total").get({"consumer": "events", "kind": "decode"})
            assert errors == 2
            for stream, durable in (
                (subjects.events_stream, "ledger-events"),
                (subjects.results_stream, "ledger-results"),
            ):
                info = await js.consumer_info(stream, durable)
                assert info.num_ack_pending == 0 and info.num_redelivered == 0
    row, _ = await fetch_row(database_url, job)
    assert row["success"] is True and row["objective"]


async def test_a_row_postgres_refuses_is_dead_lettered_alone(settings, subjects, database_url):
    good, nul, huge = new_job_id(), new_job_id(), new_job_id()
    terminated = asyncio.Queue()
    async with client(settings, subjects) as (nc, js, notices):
        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{subjects.results_stream}.ledger-results"
        await nc.subscribe(advisory, cb=terminated.put)
        await publish_result(js, subjects, result(nul, reasoning="nul \x00 byte"))  # TEXT can't hold NUL
        await publish_result(js, subjects, result(good))
        await publish_result(js, subjects, result(huge, tokens_in=3_000_000_000))  # > INTEGER
        async with running(settings):
            await notices.wait(results=[good, nul])
            await asyncio.wait_for(terminated.get(), WAIT_S)
        dead = await js.get_last_msg(subjects.deadletter_stream, subjects.deadletter(subjects.results_stream))
    assert json.loads(dead.data)["job_id"] == huge
    assert dead.headers["Fleet-Dead-Reason"] == "refused by PostgreSQL"
    assert dead.headers["Fleet-Dead-Subject"] == subjects.result(huge)
    await fetch_row(database_url, good)
    row, _ = await fetch_row(database_url, nul)
    assert row["reasoning"] == "nul \ufffd byte"  # stored, with the NUL replaced
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM routing_decisions WHERE job_id = $1", huge) == 0
    finally:
        await conn.close()


async def test_narrowed_array_checks_keep_every_array_value_the_writer_sends(database_url):
    from fleet_ledger import pg_arrays

    assert pg_arrays.narrow() and pg_arrays.narrow()  # idempotent
    conn = await asyncpg.connect(database_url)
    try:
        texts, floats, ints, bools = ["a", "", None, "ü\ufffd"], [1.5, None, 0.1 + 0.2], [3, None, -1], [True, None]
        got = await conn.fetchrow(
            "SELECT $1::text[] AS t, $2::float8[] AS f, $3::int[] AS i, $4::bool[] AS b, $5::int[] AS grid",
            texts,
            floats,
            ints,
            bools,
            [[1, 2], [3, 4]],
        )
        assert (got["t"], got["f"], got["i"], got["b"]) == (texts, floats, ints, bools)
        assert got["grid"] == [[1, 2], [3, 4]]  # a list of lists is still two dimensions
        assert await conn.fetchval("SELECT $1::text[]", ("x", "y")) == ["x", "y"]  # a tuple is an array
        with pytest.raises(asyncpg.DataError, match="sized iterable"):  # what narrowing gives up: other iterables
            await conn.fetchval("SELECT $1::text[]", {"x"})
    finally:
        await conn.close()
