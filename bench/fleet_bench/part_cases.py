"""The cases that time one part of the fleet on its own: the policy and inference (in
processes of their own), the ledger writer and the ledger service, one worker's provider
calls, and the machine's limits the ratios are taken against. Each takes the run's
``Bench`` and a ``Config`` and returns figures, like the fleet cases in ``cases``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from typing import Any

import msgspec

from fleet_bench import micro, profiling, router_case
from fleet_bench.cases import Config, wait_for_exit
from fleet_bench.infra import Bench, entry, spawn
from fleet_shared.schema import Decision

# -- 6: the ledger service from a pre-filled stream -----------------------------------


async def ledger_service(bench: Bench, cfg: Config) -> dict:
    """Fill the EVENTS and RESULTS streams, then start ``python -m fleet_ledger`` and time
    its commit notices until every message is written."""
    import nats

    async with bench.case("ledger") as env:
        await env.ensure_streams()
        subjects = env.subjects
        events, results = micro.ledger_messages(cfg.ledger_jobs, "s")
        nc = await nats.connect(env.nats.url, name="bench-ledger-fill")
        try:
            js = nc.jetstream(publish_async_max_pending=8000)
            t0 = time.perf_counter()
            for event in events:
                subject = subjects.decision_event if isinstance(event, Decision) else subjects.attempt_event
                await js.publish_async(subject, msgspec.json.encode(event))
            for result in results:
                await js.publish_async(subjects.result(result.job_id), msgspec.json.encode(result))
            await asyncio.wait_for(js.publish_async_completed(), 120)
            fill_s = time.perf_counter() - t0

            expected_rows = 4 * cfg.ledger_jobs
            seen = {"rows": 0, "first": 0.0, "last": 0.0, "first_rows": 0}
            complete = asyncio.Event()

            def count(rows: int) -> None:
                now = time.perf_counter()
                if not seen["first"]:
                    seen["first"], seen["first_rows"] = now, rows
                seen["rows"] += rows
                seen["last"] = now
                if seen["rows"] >= expected_rows:
                    complete.set()

            async def on_results(msg) -> None:
                count(2 * len(msgspec.json.decode(msg.data).get("job_ids", [])))  # result + its attempt

            async def on_events(msg) -> None:
                body = msgspec.json.decode(msg.data)
                count(len(body.get("decision_job_ids", [])) + len(body.get("attempts", [])))

            await nc.subscribe(subjects.ledger_committed, cb=on_results)
            await nc.subscribe(subjects.ledger_committed_events, cb=on_events)
            await nc.flush()
            started = time.perf_counter()
            env.procs.append(spawn("ledger-0", "ledger", entry("fleet_ledger"), env.base_env(), env.dir))
            try:
                await asyncio.wait_for(complete.wait(), timeout=max(60.0, cfg.ledger_jobs / 200))
                timed_out = False
            except TimeoutError:
                timed_out = True
        finally:
            await nc.close()
        steady_s = max(1e-9, seen["last"] - seen["first"])
        return {
            "ledger_service_rows_per_s": round((seen["rows"] - seen["first_rows"]) / steady_s, 1),
            "ledger_service_rows_per_s_incl_startup": round(seen["rows"] / max(1e-9, seen["last"] - started), 1),
            "ledger_service_rows": seen["rows"],
            "ledger_service_expected_rows": expected_rows,
            "ledger_service_timed_out": timed_out,
            "ledger_fill_msgs_per_s": round((len(events) + len(results)) / fill_s, 1),
        }


# -- 6 (writer) and the machine's limits ----------------------------------------------


async def ledger_writer(bench: Bench, cfg: Config) -> dict:
    async with bench.pg.fresh_database("writer") as dsn:
        return await micro.ledger_writer(dsn, jobs=cfg.ledger_jobs)


async def limits(bench: Bench, cfg: Config) -> dict:
    async with bench.case("limits") as env:
        n = 4000 if cfg.smoke else 40_000
        return await micro.nats_limits(env.nats.url, messages=n, max_s=1.0 if cfg.smoke else 5.0)


# -- 7: one worker's provider calls ---------------------------------------------------

_WORKERS_BENCH = """
import asyncio, inspect, json, sys
from fleet_bench.worker_calls import provider_calls_per_s as f
params = inspect.signature(f).parameters
kw = {"concurrency": int(sys.argv[2]), "duration_s": float(sys.argv[3])}
if "base_url" in params:
    kw["base_url"] = sys.argv[1]
kw = {k: v for k, v in kw.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
out = asyncio.run(f(**kw))
with open(sys.argv[4], "w") as fh:
    json.dump(out, fh)
"""


async def provider_calls(bench: Bench, cfg: Config) -> dict:
    """One worker process against the LM Studio emulator (another process), 64 in flight.
    Uses the issue-3 ``fleet_bench.worker_calls.provider_calls_per_s`` when it exists."""
    async with bench.case("provider") as env:
        base_url = env.start_emulator(0.0)
        out_path = env.dir / "provider-calls.json"
        env.dir.mkdir(parents=True, exist_ok=True)
        own = [
            *entry("fleet_bench.micro"),
            "provider-calls",
            "--base-url",
            base_url,
            "--concurrency",
            str(cfg.provider_concurrency),
            "--duration-s",
            str(cfg.provider_s),
            "--out",
            str(out_path),
        ]
        theirs = ["-c", _WORKERS_BENCH, base_url, str(cfg.provider_concurrency), str(cfg.provider_s), str(out_path)]
        result: dict = {}
        for source, args in (("fleet_bench.worker_calls", theirs), ("fleet_bench.micro", own)):
            if source == "fleet_bench.worker_calls" and importlib.util.find_spec("fleet_bench.worker_calls") is None:
                continue
            out_path.unlink(missing_ok=True)
            proc = spawn(f"provider-calls-{source}", "worker", args, env.base_env(), env.dir)
            env.procs.append(proc)
            profiles = {}
            if cfg.profile:
                await asyncio.sleep(1.5)  # past the warm-up second
                running = profiling.start(
                    [p for p in env.procs if p.alive()],
                    bench.root / "profiles",
                    min(cfg.profile_s, cfg.provider_s - 1),
                    "provider",
                )
                profiles = await asyncio.to_thread(profiling.finish, running, min(cfg.profile_s, cfg.provider_s - 1))
            rc = await asyncio.to_thread(wait_for_exit, proc, cfg.provider_s + 60)
            if rc == 0 and out_path.exists():
                got = json.loads(out_path.read_text())
                value = got.get("provider_calls_per_s", got.get("calls_per_s"))
                if isinstance(value, (int, float)):
                    result = {**got, "provider_calls_per_s": value, "provider_calls_source": source}
                    if profiles:
                        result["profiles"] = profiles
                    break
            result.setdefault("errors", []).append({source: proc.log_tail()})
        return result


# -- 1 ---------------------------------------------------------------------------------


async def inference(bench: Bench, cfg: Config) -> dict[str, Any]:
    """The router's inference: latency by prompt size, the policy's decisions/s with and
    without, accuracy (fleet_bench.inference_bench, in a process of its own like the policy
    case); then the router process's decisions per CPU second with and without
    (fleet_bench.router_case)."""
    args = ["--json", "--duration-s", str(cfg.inference_s), "--latency-jobs", str(cfg.inference_latency_jobs)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet_bench.inference_bench",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), cfg.inference_s * 4 + 120)
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace")[-500:]}
    figures: dict[str, Any] = json.loads(out)
    process = await router_case.router_decisions(
        bench, jobs_per_round=cfg.router_jobs_per_round, rounds=cfg.router_rounds
    )
    return figures | process


async def policy(bench: Bench, cfg: Config) -> dict:
    # pure CPU: run it in a fresh process of its own so nothing else shares its core
    # its limit (msgspec round trips) in the same process just before and after, so the
    # ratio compares the two on the same core in the same seconds (the machine's speed drifts)
    code = (
        "import json,sys; from fleet_bench.micro import router_decisions, _msgspec_limits as m; "
        "a = m()['limit_msgspec_result_roundtrips_per_s']; out = router_decisions(float(sys.argv[1])); "
        "b = m()['limit_msgspec_result_roundtrips_per_s']; "
        "print(json.dumps(out | {'router_limit_msgspec_roundtrips_per_s': round((a + b) / 2, 1)}))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(cfg.policy_s), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), cfg.policy_s * 2 + 60)
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace")[-500:]}
    return json.loads(out)
