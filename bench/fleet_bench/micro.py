"""Single-component cases: the routing policy, the ledger writer, one worker's provider
calls, and the machine's own limits (JetStream publish / fetch+ack, asyncpg insert paths).

Each function returns a flat dict of figures. Every loop is bounded by a count and a time.

``python -m fleet_bench.micro provider-calls --base-url URL ...`` is the one-worker
process of the provider-calls case (a separate process, like a real worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import msgspec

from fleet_bench.stats import percentile
from fleet_shared.schema import Attempt, AttemptRecord, Decision, Job, Result, TaskType

# -- 1. the routing policy ------------------------------------------------------------

#: One job per rule of the decision tree (local, task preference, complex, forced) and the
#: same job shapes the load generator sends.
_POLICY_JOBS = [
    Job(prompt="Write a Python function to sort a list", task_type=TaskType.CODE_GENERATION, complexity=2),
    Job(prompt="Summarise the trade-offs of event sourcing", task_type=TaskType.ANALYSIS, complexity=5),
    Job(prompt="Prove that the algorithm terminates", task_type=TaskType.REASONING, complexity=8),
    Job(prompt="Complete this sentence", complexity=None),
    Job(
        prompt="Refactor this class", task_type=TaskType.CODE_REFACTOR, complexity=4, context={"force_model": "claude"}
    ),
]


def router_decisions(duration_s: float = 3.0, max_decisions: int = 2_000_000) -> dict:
    """Decisions per second of ``IntelligentModelRouter.route`` on one core (no I/O),
    cycling over a mix of jobs, with an empty and a populated live state."""
    from fleet_router.policy import IntelligentModelRouter
    from fleet_router.state import LiveStateTracker

    policy = IntelligentModelRouter()
    tracker = LiveStateTracker()
    for i in range(40):  # a live state with stats for two models (what a running router has)
        tracker.observe(Attempt(model="local_mlx", provider="lmstudio", success=i % 10 != 0, latency_ms=5))
        tracker.observe(Attempt(model="claude", provider="anthropic", success=True, latency_ms=900, cost_usd=0.001))
    state = tracker.snapshot()
    jobs = _POLICY_JOBS
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    while n < max_decisions:
        for job in jobs:
            policy.route(job, state=state)
        n += len(jobs)
        if n % 1000 < len(jobs) and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    # the same with the per-job work the router service adds around route(): decode + snapshot
    from fleet_router.intake import decode_job, job_id_for

    raw = [msgspec.json.encode(j) for j in jobs]
    known = set(policy.registry.models)
    m = 0
    t1 = time.perf_counter()
    deadline = t1 + duration_s / 2
    while m < max_decisions:
        for data in raw:
            job_id_for(data, None, "s:1:0")
            job = decode_job(data, max_bytes=512 * 1024, known_models=known)
            policy.route(job, state=tracker.snapshot())
        m += len(raw)
        if m % 1000 < len(raw) and time.perf_counter() >= deadline:
            break
    elapsed2 = time.perf_counter() - t1
    return {
        "router_decisions_per_s": round(n / elapsed, 1),
        "router_decisions_with_intake_per_s": round(m / elapsed2, 1),
        "router_decisions_measured": n,
    }


# -- 6. the ledger writer on its own --------------------------------------------------


def ledger_messages(jobs: int, tag: str) -> tuple[list[Decision | AttemptRecord], list[Result]]:
    """(events, results) for ``jobs`` successful one-attempt jobs: a Decision, an
    AttemptRecord and a Result each (every kind of row the ledger writes; the fleet itself
    now carries the decision inside the Result and records only failed attempts apart)."""
    now = time.time()
    events: list[Decision | AttemptRecord] = []
    results: list[Result] = []
    for i in range(jobs):
        job_id = f"{tag}-{i}"
        attempt = Attempt(
            model="local_mlx",
            provider="lmstudio",
            success=True,
            latency_ms=3.2,
            tokens_in=25,
            tokens_out=40,
            cost_usd=0.0,
        )
        events.append(
            Decision(
                job_id=job_id,
                attempt_no=1,
                objective="Write a Python function that returns the n-th Fibonacci number",
                task_type="code_generation",
                complexity=2,
                model="local_mlx",
                provider="lmstudio",
                reasoning="complexity 2 <= 3 -> free local model: chose local_mlx (lmstudio/qwen/qwen3-30b-a3b-2507, est. $0.000000)",
                estimated_latency_ms=3000.0,
                at=now,
            )
        )
        events.append(AttemptRecord(job_id=job_id, attempt_no=1, attempt=attempt, at=now))
        results.append(
            Result(
                job_id=job_id,
                success=True,
                content="[lmstudio emulator] ok",
                model="local_mlx",
                provider="lmstudio",
                task_type=TaskType.CODE_GENERATION,
                complexity=2,
                reasoning="complexity 2 <= 3 -> free local model",
                attempts=[attempt],
                tokens_in=25,
                tokens_out=40,
                latency_ms=8.0,
                estimated_latency_ms=3000.0,
            )
        )
    return events, results


async def ledger_writer(database_url: str, *, jobs: int = 20_000, batch_size: int = 500, max_s: float = 60.0) -> dict:
    """Rows/s of ``fleet_ledger.writer.write_batch`` on one connection, batches as the two
    consumers form them (events: Decision + AttemptRecord; results: Result), with asyncpg's
    array checks narrowed as the ledger service narrows them at its start."""
    import asyncpg

    from fleet_ledger import pg_arrays
    from fleet_ledger.migrate import migrate
    from fleet_ledger.writer import Envelope, write_batch

    pg_arrays.narrow()

    events, results = ledger_messages(jobs, f"w{uuid.uuid4().hex[:6]}")
    now = time.time()
    event_envs = [Envelope(m, now) for m in events]
    result_envs = [Envelope(m, now) for m in results]
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        rows = 0
        batches = 0
        t0 = time.perf_counter()
        for start in range(0, len(event_envs), batch_size):
            rows += (await write_batch(conn, event_envs[start : start + batch_size])).count()
            batches += 1
            half = start // 2
            rows += (await write_batch(conn, result_envs[half : half + batch_size // 2])).count()
            batches += 1
            if time.perf_counter() - t0 > max_s:
                break
        elapsed = time.perf_counter() - t0
        table_rows = await conn.fetchval(
            "SELECT (SELECT count(*) FROM routing_decisions) + (SELECT count(*) FROM attempts)"
        )
        # the machine's ceilings on the same server: plain executemany and COPY of 12 columns
        limits = await _asyncpg_limits(conn, rows=min(100_000, 4 * jobs))
    finally:
        await conn.close()
    return {
        "ledger_rows_per_s": round(rows / elapsed, 1),
        "ledger_writer_jobs_per_s": round(
            rows / 4 / elapsed, 1
        ),  # 4 rows per job: decision, attempt, result, result attempt
        "ledger_writer_table_rows_per_s": round(table_rows / elapsed, 1),
        "ledger_writer_batches": batches,
        "ledger_writer_rows": rows,
        **limits,
    }


async def _asyncpg_limits(conn, *, rows: int) -> dict:
    await conn.execute(
        "CREATE TEMP TABLE bench_limits (job_id text, attempt_no int, model text, provider text, success bool,"
        " error_code text, error_message text, latency_ms float8, tokens_in int, tokens_out int,"
        " cost_usd float8, at float8)"
    )
    data = [(f"l-{i}", 1, "local_mlx", "lmstudio", True, None, None, 3.2, 25, 40, 0.0, 1.0) for i in range(rows)]
    t0 = time.perf_counter()
    async with conn.transaction():
        for start in range(0, rows, 1000):
            await conn.executemany(
                "INSERT INTO bench_limits VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)", data[start : start + 1000]
            )
    t_many = time.perf_counter() - t0
    await conn.execute("TRUNCATE bench_limits")
    t0 = time.perf_counter()
    async with conn.transaction():
        for start in range(0, rows, 1000):
            await conn.copy_records_to_table("bench_limits", records=data[start : start + 1000])
    t_copy = time.perf_counter() - t0
    return {
        "limit_asyncpg_executemany_rows_per_s": round(rows / t_many, 1),
        "limit_asyncpg_copy_rows_per_s": round(rows / t_copy, 1),
    }


# -- 7. one worker's provider calls ---------------------------------------------------


async def provider_calls(
    base_url: str, *, concurrency: int = 64, duration_s: float = 5.0, max_calls: int = 1_000_000
) -> dict:
    """Calls/s of the worker's own adapter and HTTP client (``make_adapter`` +
    ``http_client``) against an LM Studio emulator, ``concurrency`` calls in flight."""
    from fleet_shared.config import ProviderEndpoint, Settings
    from fleet_shared.schema import ChatMessage
    from fleet_workers.providers import make_adapter
    from fleet_workers.providers.base import ProviderRequest
    from fleet_workers.service import http_client

    settings = Settings.from_env({}, worker_concurrency=concurrency)
    adapter = make_adapter("lmstudio", ProviderEndpoint("lmstudio", base_url, None), http_client(settings))
    request = ProviderRequest(
        model="qwen/qwen3-30b-a3b-2507",
        max_tokens=256,
        messages=[ChatMessage("user", "Write a Python function to sort a list")],
    )
    latencies: list[float] = []
    errors = 0
    calls = 0

    async def one(deadline: float) -> None:
        nonlocal errors, calls
        while time.perf_counter() < deadline and calls < max_calls:
            calls += 1
            t = time.perf_counter()
            try:
                await adapter.call(request)
                latencies.append((time.perf_counter() - t) * 1000)
            except Exception:
                errors += 1

    try:
        await asyncio.gather(*(one(time.perf_counter() + 1.0) for _ in range(concurrency)))  # warm-up
        latencies.clear()
        errors = calls = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t0 + duration_s) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await adapter.aclose()
    return {
        "provider_calls_per_s": round(len(latencies) / elapsed, 1),
        "provider_calls_errors": errors,
        "provider_call_ms_p50": round(percentile(latencies, 50) or 0.0, 3),
        "provider_call_ms_p99": round(percentile(latencies, 99) or 0.0, 3),
        "provider_calls_source": "fleet_bench.micro (make_adapter + http_client)",
    }


# -- the machine's JetStream limits ---------------------------------------------------


async def nats_limits(nats_url: str, *, messages: int = 40_000, max_s: float = 5.0) -> dict:
    """One Python process: JetStream publishes with batched acks, publishes awaited one by
    one, and fetch + ack of a pull consumer (1 KB messages, a fresh work-queue stream)."""
    import nats
    from nats.js import api

    nc = await nats.connect(nats_url, name="bench-limits")
    js = nc.jetstream(publish_async_max_pending=4000)
    stream = f"BENCH_LIMITS_{uuid.uuid4().hex[:6]}"
    subject = f"benchlimits.{stream}"
    payload = b"x" * 1024
    out: dict = {}
    try:
        await js.add_stream(
            api.StreamConfig(
                name=stream, subjects=[subject], storage=api.StorageType.FILE, retention=api.RetentionPolicy.WORK_QUEUE
            )
        )
        t0 = time.perf_counter()
        sent = 0
        while sent < messages and time.perf_counter() - t0 < max_s:
            for _ in range(500):
                await js.publish_async(subject, payload)
            sent += 500
        await asyncio.wait_for(js.publish_async_completed(), 30)
        out["limit_js_publish_async_per_s"] = round(sent / (time.perf_counter() - t0), 1)

        t0 = time.perf_counter()
        awaited = 0
        while awaited < messages // 4 and time.perf_counter() - t0 < max_s / 2:
            await js.publish(subject, payload)
            awaited += 1
        out["limit_js_publish_awaited_per_s"] = round(awaited / (time.perf_counter() - t0), 1)

        sub = await js.pull_subscribe(subject, durable="limits", stream=stream)
        total = sent + awaited
        got = 0
        t0 = time.perf_counter()
        while got < total and time.perf_counter() - t0 < max_s * 2:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except Exception:
                break
            for m in msgs:
                await m.ack()
            got += len(msgs)
        out["limit_js_fetch_ack_per_s"] = round(got / (time.perf_counter() - t0), 1)
        await js.delete_stream(stream)
    finally:
        await nc.close()
    out.update(_msgspec_limits())
    return out


def _msgspec_limits(n: int = 50_000) -> dict:
    """Encode + decode of a realistic ~1 KB Result with the fleet's decoder."""
    from fleet_shared.schema import encode, result_decoder

    _, results = ledger_messages(1, "m")
    r = msgspec.structs.replace(results[0], content="x" * 700)
    data = encode(r)
    t0 = time.perf_counter()
    for _ in range(n):
        result_decoder.decode(encode(r))
    return {
        "limit_msgspec_result_roundtrips_per_s": round(n / (time.perf_counter() - t0), 1),
        "limit_msgspec_result_bytes": len(data),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.micro")
    sub = parser.add_subparsers(dest="cmd", required=True)
    pc = sub.add_parser("provider-calls", help="one worker process calling an emulator")
    pc.add_argument("--base-url", required=True)
    pc.add_argument("--concurrency", type=int, default=64)
    pc.add_argument("--duration-s", type=float, default=5.0)
    pc.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    report = asyncio.run(provider_calls(args.base_url, concurrency=args.concurrency, duration_s=args.duration_s))
    with open(args.out, "w") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
