"""``make soak``: the fleet at half its measured capacity for a set time (not in CI).

    python -m fleet_bench.soak [--minutes 10] [--latency-ms 20] [--json out.json]
    make soak SOAK_MINUTES=3

What runs: a private nats-server, PostgreSQL (the one at DATABASE_URL, else 127.0.0.1:5432,
else an embedded one) with a fresh database, the LM Studio emulator, and the fleet's own
processes as ``make up`` runs them: one router, one LM Studio worker, one ledger. Jobs are
simple code tasks (the policy's ``simple_local`` rule: the LM Studio worker answers), sent
as requests over NATS.

1. capacity: a closed-loop burst (``--burst`` jobs, ``--clients`` at once) measures the jobs
   a second this fleet answers on this machine;
2. soak: an open loop at half that rate (Poisson arrivals, so queueing is real) for
   ``--minutes``; each job's latency is request -> Result;
3. report, per minute: jobs sent, answered, errors (a failed Result or no answer in time),
   latency p50 / p99 / max, the p99 of each part of a job's latency its Result tells apart
   (the provider call, inside the fleet around it, the edge: ``Parts``), and the cores each
   process used (nats-server, PostgreSQL's backends for the soak's database, and "other":
   the rest of the machine, which tells a slow minute's cause on a shared machine); per
   process: RSS at the end of the first minute (after warm-up) and at the end. Targets (the
   issue's): RSS growth <= 10 % after warm-up, p99 of the last minute within 20 % of the
   second minute. Exit 0 when both hold, 1 otherwise. ``--rate N`` runs at N jobs/s instead
   of half the measured capacity.

The machine may be shared: the figures are one run's, not a benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats

from fleet_bench.cpu_meter import CpuMeter
from fleet_bench.infra import proc_rss_kb
from fleet_bench.stats import percentile
from fleet_local.embedded import NatsServer, PostgresServer, free_port, postgres_answers, wait_for_port
from fleet_shared.registry import PROVIDER_ENV
from fleet_shared.schema import result_decoder

#: RSS growth allowed after warm-up, and p99 drift of the last minute against the second.
RSS_GROWTH_MAX = 0.10
P99_DRIFT_MAX = 0.20
JOB = {"prompt": "Write hello world in Python", "task_type": "code_generation", "complexity": 2}


@dataclass
class Minute:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: each answered job's latency in three parts (``Parts``): where a tail grows
    calls_ms: list[float] = field(default_factory=list)
    inside_ms: list[float] = field(default_factory=list)
    edges_ms: list[float] = field(default_factory=list)
    #: cores used on average in this minute, by process (``fleet_bench.cpu_meter``)
    cpu: dict[str, float] = field(default_factory=dict)
    #: RSS (KiB) by process at the minute's end
    rss_kb: dict[str, int] = field(default_factory=dict)

    def row(self, index: int) -> dict:
        lat = self.latencies_ms
        return {
            "minute": index + 1,
            "sent": self.sent,
            "answered": self.ok,
            "errors": self.errors,
            "p50_ms": round(percentile(lat, 50) or 0.0, 1),
            "p99_ms": round(percentile(lat, 99) or 0.0, 1),
            "max_ms": round(max(lat, default=0.0), 1),
            "p99_parts_ms": {
                "call": round(percentile(self.calls_ms, 99) or 0.0, 1),
                "inside": round(percentile(self.inside_ms, 99) or 0.0, 1),
                "edge": round(percentile(self.edges_ms, 99) or 0.0, 1),
            },
            "cpu_cores": self.cpu,
            "rss_kb": self.rss_kb,
        }


class Fleet:
    """The processes of the soak, started with ``start`` and stopped with ``stop``."""

    def __init__(self, root: Path, latency_ms: float) -> None:
        self.root = root
        self.latency_ms = latency_ms
        self.nats = NatsServer(root / "nats")
        self.pg: PostgresServer | None = None
        self.admin_dsn = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
        self.database = f"soak_{uuid.uuid4().hex[:8]}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.prefix = f"soak{uuid.uuid4().hex[:6]}"

    async def start(self) -> None:
        self.nats.start()
        if not await postgres_answers(self.admin_dsn):
            self.pg = PostgresServer(self.root / "pg").start()
            self.admin_dsn = self.pg.url
        await self._admin(f'CREATE DATABASE "{self.database}"')
        port = free_port()
        self._spawn("emulator", "fleet_emulators", "--provider", "lmstudio", "--port", str(port),
                    "--latency-ms", str(self.latency_ms))  # fmt: skip
        wait_for_port(port, proc=self.procs["emulator"])
        url_var, _, _ = PROVIDER_ENV["lmstudio"]
        env = {
            "NATS_URL": self.nats.url,
            "DATABASE_URL": self.admin_dsn.rsplit("/", 1)[0] + f"/{self.database}",
            "FLEET_SUBJECT_PREFIX": self.prefix,
            url_var: f"http://127.0.0.1:{port}/v1",
            "FLEET_LOG_LEVEL": "WARNING",
        }
        self._spawn("ledger", "fleet_ledger", env=env)
        self._spawn("router", "fleet_router", env=env)
        self._spawn("worker-lmstudio", "fleet_workers", "--provider", "lmstudio", env=env)

    def _spawn(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module, *args], env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def rss(self) -> dict[str, int]:
        return {name: proc_rss_kb(p.pid) for name, p in self.procs.items() if p.poll() is None}

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.stop()
        with contextlib.suppress(Exception):
            await self._admin(f'DROP DATABASE IF EXISTS "{self.database}"')
        if self.pg is not None:
            self.pg.stop()

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@dataclass(frozen=True)
class Parts:
    """A job's latency (ms) as its Result tells it apart: the provider ``call`` (its
    attempts), ``inside`` the fleet around it (the router accepting the job -> the worker
    building the Result, less the call: queues, routing, dispatch), and the ``edge`` (the
    request reaching the router, the reply reaching the requester, the requester's loop)."""

    call: float
    inside: float
    edge: float


async def one_job(nc: nats.NATS, subject: str, timeout_s: float) -> tuple[bool, float, Parts | None]:
    """(answered successfully, latency ms, its parts when answered)."""
    started = time.perf_counter()
    parts = None
    try:
        msg = await nc.request(subject, json.dumps(JOB).encode(), timeout=timeout_s)
        latency_ms = (time.perf_counter() - started) * 1000
        result = result_decoder.decode(msg.data)
        ok = result.success
        call = sum(a.latency_ms for a in result.attempts)
        parts = Parts(call, max(0.0, result.latency_ms - call), max(0.0, latency_ms - result.latency_ms))
    except Exception:
        ok, latency_ms = False, (time.perf_counter() - started) * 1000
    return ok, latency_ms, parts


async def wait_until_routed(nc: nats.NATS, subject: str, timeout_s: float = 60.0) -> None:
    """Until a job is answered: every process is up and consuming."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ok, _, _ = await one_job(nc, subject, 5.0)
        if ok:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the fleet answered no job within 60 s (see the logs in the run dir)")


async def capacity(nc: nats.NATS, subject: str, *, jobs: int, clients: int) -> float:
    """Jobs a second answered by a closed loop of ``clients`` concurrent requesters."""
    left = jobs

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one_job(nc, subject, 30.0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return jobs / (time.perf_counter() - started)


async def soak(nc: nats.NATS, subject: str, fleet: Fleet, *, rate: float, minutes: int) -> tuple[list[Minute], dict]:
    """Open-loop arrivals at ``rate`` jobs/s for ``minutes``; RSS after minute 1 and at the end."""
    buckets = [Minute() for _ in range(minutes)]
    tasks: set[asyncio.Task[None]] = set()
    rss: dict[str, dict[str, int]] = {"start": fleet.rss()}

    started = time.monotonic()
    pids = {name: proc.pid for name, proc in fleet.procs.items()} | {"nats-server": fleet.nats.pid}
    meter = CpuMeter(
        pids, lambda t: min(minutes - 1, int((t - started) // 60)), admin_dsn=fleet.admin_dsn, database=fleet.database
    )
    sampling = asyncio.create_task(meter.run())

    async def job(bucket: Minute) -> None:
        ok, latency_ms, parts = await one_job(nc, subject, 30.0)
        if ok:
            bucket.ok += 1
            bucket.latencies_ms.append(latency_ms)
            if parts is not None:
                bucket.calls_ms.append(parts.call)
                bucket.inside_ms.append(parts.inside)
                bucket.edges_ms.append(parts.edge)
        else:
            bucket.errors += 1

    end = started + minutes * 60
    next_at = started
    while (now := time.monotonic()) < end:
        index = int((now - started) // 60)
        if index >= 1 and "warm" not in rss:
            rss["warm"] = fleet.rss()
        if index >= 1 and not buckets[index - 1].rss_kb:  # each minute's end: a leak climbs, churn levels off
            buckets[index - 1].rss_kb = fleet.rss()
        buckets[index].sent += 1
        task = asyncio.create_task(job(buckets[index]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += random.expovariate(rate)
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if tasks:
        await asyncio.wait(set(tasks), timeout=60)
    buckets[-1].rss_kb = fleet.rss()
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    for index, bucket in enumerate(buckets):
        bucket.cpu = meter.shares(index, 60.0)
    rss["end"] = fleet.rss()
    return buckets, rss


def verdict(rows: list[dict], rss: dict) -> dict:
    warm, end = rss.get("warm") or rss["start"], rss["end"]
    growth = {n: round((end[n] - warm[n]) / warm[n], 4) for n in end if warm.get(n)}
    p99_second = rows[1]["p99_ms"] if len(rows) > 1 else rows[0]["p99_ms"]
    p99_last = rows[-1]["p99_ms"]
    drift = (p99_last - p99_second) / p99_second if p99_second else 0.0
    return {
        "rss_growth_after_warmup": growth,
        "rss_ok": all(g <= RSS_GROWTH_MAX for g in growth.values()),
        "p99_drift_last_vs_second": round(drift, 4),
        "p99_ok": drift <= P99_DRIFT_MAX,
        "errors": sum(r["errors"] for r in rows),
    }


def print_report(report: dict) -> None:
    print(f"\ncapacity {report['capacity_jobs_s']:.1f} jobs/s; soak at {report['rate_jobs_s']:.1f} jobs/s")
    names = list(report["minutes"][0].get("cpu_cores", {}))
    head = " ".join(f"{n[:9]:>9}" for n in names)
    print(
        f"{'MIN':>3} {'SENT':>7} {'ANSWERED':>9} {'ERRORS':>7} {'P50 ms':>8} {'P99 ms':>8} {'MAX ms':>8} "
        f"{'p99 call/inside/edge':>21}  cores: {head}"
    )
    for r in report["minutes"]:
        cores = " ".join(f"{r.get('cpu_cores', {}).get(n, 0.0):>9.2f}" for n in names)
        parts = r.get("p99_parts_ms") or {}
        split = "/".join(f"{parts.get(k, 0.0):.1f}" for k in ("call", "inside", "edge"))
        print(
            f"{r['minute']:>3} {r['sent']:>7} {r['answered']:>9} {r['errors']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r['max_ms']:>8} {split:>21}  cores: {cores}"
        )
    print(f"\n{'PROCESS':<16} {'RSS start':>10} {'after 1 min':>12} {'end':>10} {'growth':>8}")
    rss, v = report["rss_kb"], report["verdict"]
    for name, end in rss["end"].items():
        warm = rss.get("warm", rss["start"]).get(name, 0)
        growth = v["rss_growth_after_warmup"].get(name, 0.0)
        print(f"{name:<16} {rss['start'].get(name, 0):>10} {warm:>12} {end:>10} {growth:>+8.1%}")
        by_minute = " ".join(f"{r.get('rss_kb', {}).get(name, 0) / 1024:.1f}" for r in report["minutes"])
        print(f"{'':<16} MiB at each minute's end: {by_minute}")
    print(
        f"\nRSS growth after warm-up <= {RSS_GROWTH_MAX:.0%}: {'yes' if v['rss_ok'] else 'NO'}; "
        f"p99 last minute vs second {v['p99_drift_last_vs_second']:+.1%} (<= {P99_DRIFT_MAX:.0%}): "
        f"{'yes' if v['p99_ok'] else 'NO'}; errors {v['errors']}"
    )


async def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    fleet = Fleet(root, args.latency_ms)
    try:
        await fleet.start()
        nc = await nats.connect(fleet.nats.url)
        subject = f"{fleet.prefix}.request"
        try:
            await wait_until_routed(nc, subject)
            if args.rate:  # a set rate: no capacity measurement (to compare runs at the same load)
                measured, rate = 0.0, args.rate
            else:
                measured = await capacity(nc, subject, jobs=args.burst, clients=args.clients)
                rate = measured * args.load
            buckets, rss = await soak(nc, subject, fleet, rate=rate, minutes=args.minutes)
        finally:
            await nc.drain()
        rows = [b.row(i) for i, b in enumerate(buckets)]
        report = {
            "minutes": rows,
            "capacity_jobs_s": measured,
            "rate_jobs_s": rate,
            "rss_kb": rss,
            "verdict": verdict(rows, rss),
            "dead_processes": fleet.dead(),
            "run_dir": str(root),
        }
    finally:
        await fleet.stop()
    return report


def finish(report: dict, json_path: str | None) -> int:
    print_report(report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    v = report["verdict"]
    return 0 if v["rss_ok"] and v["p99_ok"] and not report["dead_processes"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=int(os.environ.get("SOAK_MINUTES") or 10))
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured capacity to run at")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the emulator's answer time")
    parser.add_argument("--burst", type=int, default=2000, help="jobs of the capacity measurement")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs/s to run at instead of --load x capacity")
    parser.add_argument("--clients", type=int, default=64, help="concurrent requesters while measuring")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes: at least 2 (the first minute is the warm-up)")
    return finish(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
