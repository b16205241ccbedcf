"""Jobs for a chaos case, a client that keeps retrying until each is accepted, and the
invariants every case asserts once the fleet has settled:

* every accepted job has exactly one final Result stored (RESULTS kept no second one);
* every job has exactly one routing_decisions row, consistent with its Result, and an
  attempts row for each of the Result's attempts, as the Result tells it;
* no Result claims success for a failed or truncated answer: a success carries the whole
  answer (the emulators echo the prompt at its end), a failure a documented error code;
* every requester that got a reply got the job's final Result.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from fleet_shared.schema import Result, result_decoder

#: Error codes a failed Result may carry: the README's list, the dead-letter code, and the
#: attempt codes a job may fail with outright (e.g. invalid_request is not retried).
DOCUMENTED_CODES = frozenset(
    {
        "invalid_json",
        "invalid_job",
        "unknown_model",
        "too_large",
        "not_accepted",
        "no_model_available",
        "all_models_failed",
        "max_deliveries",
        "auth",
        "invalid_request",
        "context_length",
        "content_filtered",
    }
)
WAIT_S = 180.0
POLL_S = 0.1
#: A request unanswered this long is sent again (same id: the fleet answers it from the Result).
REQUEST_TIMEOUT_S = 10.0


@dataclass
class JobSpec:
    job_id: str
    payload: dict
    via: str = "submit"  # or "request"
    copies: int = 1  # the same job published this many times


@dataclass
class Outcome:
    """What the client saw and what the fleet stored."""

    results: dict[str, Result] = field(default_factory=dict)
    replies: dict[str, Result] = field(default_factory=dict)
    stored_results: int = 0
    rows: dict[str, dict] = field(default_factory=dict)
    row_counts: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, dict[int, bool]] = field(default_factory=dict)  # job -> attempt_no -> success


def make_jobs(n: int, tag: str, shape) -> list[JobSpec]:
    """``n`` jobs whose ids start with ``tag``; ``shape(i)`` gives (prompt extras, fields, via)."""
    jobs = []
    for i in range(n):
        job_id = f"{tag}-{i}-{uuid.uuid4().hex[:6]}"
        marker, fields, via = shape(i)
        payload = {"id": job_id, "prompt": f"{marker}chaos job {i} of {tag}".strip(), **fields}
        jobs.append(JobSpec(job_id, payload, via))
    return jobs


async def send(fleet, job: JobSpec, deadline_s: float = 90.0) -> Result | None:
    """Publish until accepted (a retry carries the same id, so it is never a second job).
    A request's reply (its final Result) is returned; a submission returns None."""
    data = json.dumps(job.payload).encode()
    headers = {"Nats-Msg-Id": job.job_id}
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if job.via == "request":
                reply = await fleet.nc.request(fleet.subjects.request, data, timeout=REQUEST_TIMEOUT_S, headers=headers)
                return result_decoder.decode(reply.data)
            await fleet.js.publish(fleet.subjects.submit, data, headers=headers, timeout=5)
            return None
        except (TimeoutError, NoRespondersError, NatsTimeoutError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{job.job_id} never accepted: {exc!r}") from exc
            await asyncio.sleep(0.2)  # a client's retry pause, not a synchronisation
        except Exception:  # e.g. the connection is reconnecting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def send_all(fleet, jobs: list[JobSpec], outcome: Outcome, concurrency: int = 64) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(job: JobSpec) -> None:
        async with slots:
            replies = await asyncio.gather(*(send(fleet, job) for _ in range(job.copies)))
        for reply in replies:
            if reply is not None:
                outcome.replies.setdefault(job.job_id, reply)

    await asyncio.gather(*(one(job) for job in jobs))


async def stored_count(fleet) -> int:
    for _ in range(50):
        try:
            return (await fleet.js.stream_info(fleet.subjects.results_stream)).state.messages
        except Exception:  # reconnecting after a restart
            await asyncio.sleep(POLL_S)
    raise AssertionError("RESULTS stream unreachable")


async def wait_for_results(fleet, n: int, timeout_s: float = WAIT_S) -> None:
    """Until ``n`` Results are stored (a bounded poll of an observable count)."""
    deadline = time.monotonic() + timeout_s
    while (count := await stored_count(fleet)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {count} of {n} Results after {timeout_s}s")
        await asyncio.sleep(POLL_S)


async def wait_for_ledger(database_url: str, job_ids: list[str], timeout_s: float = WAIT_S) -> None:
    """Until every job's row holds both its decision and its Result."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = 0
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
            try:
                done = await conn.fetchval(
                    "SELECT count(*) FROM routing_decisions WHERE job_id = ANY($1::text[])"
                    " AND finished_at IS NOT NULL AND decision_attempt_no IS NOT NULL",
                    job_ids,
                )
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            pass
        if done == len(job_ids):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {len(job_ids)} ledger rows complete after {timeout_s}s")
        await asyncio.sleep(POLL_S)


async def collect(fleet, database_url: str, jobs: list[JobSpec], outcome: Outcome) -> Outcome:
    ids = [j.job_id for j in jobs]
    info = await fleet.js.stream_info(fleet.subjects.results_stream)
    outcome.stored_results = info.state.last_seq
    for job_id in ids:
        msg = await fleet.js.get_last_msg(fleet.subjects.results_stream, fleet.subjects.result(job_id), direct=True)
        outcome.results[job_id] = result_decoder.decode(msg.data)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM routing_decisions WHERE job_id = ANY($1::text[])", ids)
        attempts = await conn.fetch(
            "SELECT job_id, attempt_no, success FROM attempts WHERE job_id = ANY($1::text[])", ids
        )
    finally:
        await conn.close()
    for row in rows:
        outcome.row_counts[row["job_id"]] = outcome.row_counts.get(row["job_id"], 0) + 1
        outcome.rows[row["job_id"]] = dict(row)
    for a in attempts:
        outcome.attempts.setdefault(a["job_id"], {})[a["attempt_no"]] = a["success"]
    return outcome


def check_invariants(jobs: list[JobSpec], outcome: Outcome) -> dict[str, int]:
    """Assert the promise; returns how many jobs succeeded and failed (for the case to check)."""
    ids = {j.job_id for j in jobs}
    assert set(outcome.results) == ids, "a job has no final Result"
    assert outcome.stored_results == len(ids), f"{outcome.stored_results} Results stored for {len(ids)} jobs"
    assert {j for j, c in outcome.row_counts.items() if c != 1} == set(), "a job has several ledger rows"
    assert set(outcome.rows) == ids, f"{len(ids - set(outcome.rows))} jobs have no ledger row"
    prompts = {j.job_id: " ".join(j.payload["prompt"].split()) for j in jobs}
    tally = {"success": 0, "failed": 0}
    for job_id, result in outcome.results.items():
        check_result(result, prompts[job_id])
        row = outcome.rows[job_id]
        assert row["success"] is result.success, (job_id, row, result)
        assert row["error_code"] == (result.error.code if result.error else None), (job_id, row, result)
        assert row["selected_model"] == result.model or not result.success, (job_id, row, result)
        recorded = outcome.attempts.get(job_id, {})
        assert [recorded.get(n) for n in range(1, len(result.attempts) + 1)] == [a.success for a in result.attempts], (
            job_id,
            recorded,
            result.attempts,
        )
        tally["success" if result.success else "failed"] += 1
    for job_id, reply in outcome.replies.items():
        assert (reply.job_id, reply.success) == (job_id, outcome.results[job_id].success), (
            reply,
            outcome.results[job_id],
        )
    return tally


def check_result(result: Result, prompt: str) -> None:
    if result.success:
        assert result.error is None and not result.truncated, result
        continued = next((a.partial_content for a in reversed(result.attempts[:-1]) if a.partial_content), None)
        if continued:  # a streamed answer cut mid-way, continued by the next model: what was sent, then the rest
            assert result.content and result.content.startswith(continued), f"not a continuation: {result}"
            assert len(result.content) > len(continued), f"nothing was added: {result}"
        else:  # the emulators answer with the prompt at the end: a whole answer ends with it
            assert result.content and result.content.endswith(prompt), f"incomplete answer: {result}"
        assert result.attempts and result.attempts[-1].success and result.model, result
    else:
        assert result.content is None, result
        assert result.error and result.error.code in DOCUMENTED_CODES, result
