"""Closed-loop request-reply steps of the load generator: the fleet, the floor, the direct call.

A plan with ``"closed_loop": true`` (``python -m fleet_bench.loadgen --plan ...``) runs, for
each number of jobs in flight and each target, ``in_flight`` loops that each send one job,
wait for its answer and send the next, for ``duration_s`` after ``warmup_s``:

    {"kind": "nats", "subject": "<p>.request"}   NATS request-reply (the fleet or the floor)
    {"kind": "http", "url": "<base>/v1"}         POST /chat/completions to the emulator

Per step: jobs/s (answers within the window), latency (answer - send), added latency
(latency - the provider call as the hop that made it timed it; 0 for the direct call),
and each process's CPU per job (the ``--pids`` processes, this one, and the PostgreSQL
backends of the case's database).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid

import msgspec

from fleet_bench.infra import proc_cpu_s
from fleet_bench.stats import percentile

#: what the load generator sends (the fleet routes it to local_mlx -> the lmstudio worker)
PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring."
MODEL = "qwen/qwen3-30b-a3b-2507"


class _Attempt(msgspec.Struct):
    latency_ms: float = 0.0


class _Answer(msgspec.Struct):
    success: bool
    attempts: list[_Attempt] = []


_answer = msgspec.json.Decoder(_Answer)


def pcts(values: list[float]) -> dict[str, float | None]:
    out = {f"p{q}": _r(percentile(values, q)) for q in (50, 90, 99)}
    out["mean"] = _r(sum(values) / len(values) if values else None)
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


async def pg_backends(database_url: str) -> list[int]:
    """Pids of the backends connected to the case's database (empty when unknown)."""
    if not database_url:
        return []
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
    except Exception:  # CPU of PostgreSQL is context only
        return []
    return [r["pid"] for r in rows]


def cpu_seconds(pids: dict[str, int], pg_pids: list[int]) -> dict[str, float]:
    out = {name: proc_cpu_s(pid) for name, pid in {**pids, "loadgen": os.getpid()}.items()}
    if pg_pids:
        out["postgres"] = sum(proc_cpu_s(pid) for pid in pg_pids)
    return out


class Sender:
    """One target: ``send()`` does one job and returns (success, provider call ms)."""

    def __init__(self, target: dict, nc, http, timeout_s: float) -> None:
        self.target = target
        self.nc = nc
        self.http = http
        self.timeout_s = timeout_s
        self.ids = itertools.count()
        self.tag = f"{target['name']}-{uuid.uuid4().hex[:6]}"
        if target["kind"] == "http":
            self.url = target["url"].rstrip("/") + "/chat/completions"
            body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}
            self.body = msgspec.json.encode(body)

    async def send(self) -> tuple[bool, float]:
        if self.target["kind"] == "http":
            headers = {"content-type": "application/json"}
            async with self.http.post(self.url, data=self.body, headers=headers) as r:
                await r.read()
                return r.status == 200, 0.0
        job = {"id": f"{self.tag}-{next(self.ids)}", "prompt": PROMPT, "task_type": "code_generation", "complexity": 2}
        msg = await self.nc.request(self.target["subject"], msgspec.json.encode(job), timeout=self.timeout_s)
        answer = _answer.decode(msg.data)
        return answer.success, sum(a.latency_ms for a in answer.attempts)


async def _loops(sender: Sender, in_flight: int, until: float, window_start: float) -> dict:
    latencies: list[float] = []
    added: list[float] = []
    stats = {"done": 0, "errors": 0, "failures": 0}

    async def one() -> None:
        while time.perf_counter() < until:
            t = time.perf_counter()
            try:
                ok, provider_ms = await sender.send()
            except Exception:
                stats["errors"] += 1
                continue
            end = time.perf_counter()
            stats["done"] += 1
            if not ok:
                stats["failures"] += 1
            elif window_start <= t and end <= until:
                ms = (end - t) * 1000
                latencies.append(ms)
                added.append(ms - provider_ms if provider_ms else 0.0)

    await asyncio.gather(*(one() for _ in range(in_flight)))
    return {"latencies": latencies, "added": added, **stats}


async def run_step(sender: Sender, in_flight: int, warmup_s: float, duration_s: float, ctx: dict) -> dict:
    await _loops(sender, in_flight, time.perf_counter() + warmup_s, float("inf"))
    cpu0 = cpu_seconds(ctx["pids"], ctx["pg_pids"])
    t0 = time.perf_counter()
    got = await _loops(sender, in_flight, t0 + duration_s, t0)
    t1 = time.perf_counter()
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu_seconds(ctx["pids"], ctx["pg_pids"]).items()}
    # every job finished in [t0, t1] ran on the CPU measured over [t0, t1]
    finished = max(1, got["done"])
    timed = len(got["latencies"])
    return {
        "name": f"{sender.target['name']}-{in_flight}",
        "target": sender.target["name"],
        "in_flight": in_flight,
        "duration_s": round(duration_s, 3),
        "jobs": timed,
        "jobs_per_s": round(timed / duration_s, 1),
        "errors": got["errors"],
        "failures": got["failures"],
        "success_rate": round(1 - (got["errors"] + got["failures"]) / max(1, got["done"] + got["errors"]), 5),
        "latency_ms": pcts(got["latencies"]),
        "added_ms": pcts(got["added"]),
        "cpu_pct": {k: round(100 * v / (t1 - t0), 1) for k, v in cpu.items()},
        "cpu_ms_per_job": {k: round(1000 * v / finished, 4) for k, v in cpu.items()},
    }


async def run_closed(nc, plan: dict, pids: dict[str, int], database_url: str) -> dict:
    """Every (in_flight, target) step of ``plan``, targets interleaved within each level."""
    import aiohttp

    ctx: dict = {"pids": pids}
    timeout_s = float(plan.get("timeout_s", 10.0))
    steps = []
    connector = aiohttp.TCPConnector(limit=max(plan["in_flight"]), keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as http:
        senders = [Sender(t, nc, http, timeout_s) for t in plan["targets"]]
        for in_flight in plan["in_flight"]:
            for sender in senders:
                ctx["pg_pids"] = await pg_backends(database_url)  # pools grow: look again each step
                steps.append(await run_step(sender, in_flight, float(plan["warmup_s"]), float(plan["duration_s"]), ctx))
    return {"steps": steps}
