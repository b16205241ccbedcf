"""The gateway case: the same chat request three ways, from the same load generator.

    direct   POST /v1/chat/completions to the LM Studio emulator itself
    nats     the Job on ``<p>.request`` (request-reply; router -> lmstudio worker -> emulator)
    gateway  POST /v1/chat/completions to ``python -m fleet_gateway`` (-> the nats path)

Each path is driven closed-loop (``in_flight`` requests always outstanding) for a fixed
time at 1 and at 64 in flight (nats and gateway in two alternating halves: ``SCHEDULE``);
the figures are requests/s, latency p50/p99, the CPU ms per request of every process
(gateway, router, worker, ledger, emulator, nats-server, load generator) and the share of
the machine's CPU that was busy meanwhile (anyone's: near 1.0, the cores were saturated).
Targets (issue 10): the gateway adds <= 1 ms p50 over the nats path at 1 in flight, and
keeps >= 80 % of the nats path's throughput at 64 in flight.

    python -m fleet_bench.gateway_case [--duration-s 5] [--out gateway.json] [--profile-gateway gw.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats

from fleet_bench.cpu_meter import machine_cpu_s
from fleet_bench.http_load import LeanClient, prepare
from fleet_bench.infra import Bench, CaseEnv, FleetSpec, entry, proc_cpu_s, spawn
from fleet_bench.stats import percentile
from fleet_local.embedded import free_port, wait_for_port
from fleet_shared import requests
from fleet_shared.schema import Job, TaskType, encode

IN_FLIGHT = (1, 64)
PROMPT = "write a function that adds two numbers"
#: the router's rule simple_local sends this to local_mlx (the LM Studio emulator)
TASK_TYPE, COMPLEXITY = TaskType.CODE_GENERATION, 2

Call = Callable[[], Awaitable[None]]
#: (path, share of ``duration_s``) in the order run at each in-flight level: the nats and
#: gateway paths alternate (ABBA), so a change in the machine's load (other work on it)
#: during the level weighs on both alike instead of on whichever ran second
SCHEDULE = (("direct", 1.0), ("nats", 0.5), ("gateway", 0.5), ("gateway", 0.5), ("nats", 0.5))


async def closed_loop(call: Call, in_flight: int, duration_s: float) -> dict[str, Any]:
    """``in_flight`` callers, each calling again as soon as its call returns, for ``duration_s``."""
    tally = Tally()
    await tally.run(call, in_flight, duration_s)
    return tally.figures()


@dataclass
class Tally:
    """One path's calls at one in-flight level, over one or more timed segments."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    async def run(self, call: Call, in_flight: int, duration_s: float) -> None:
        deadline = time.perf_counter() + duration_s

        async def caller() -> None:
            while (started := time.perf_counter()) < deadline:
                try:
                    await call()
                except Exception:
                    self.errors += 1
                    continue
                self.latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        self.elapsed_s += time.perf_counter() - started

    def figures(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "errors": self.errors,
            "requests_per_s": round(len(self.latencies) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": _ms(percentile(self.latencies, 50)),  # q in 0..100 (0.50 would be the 0.5th)
            "p99_ms": _ms(percentile(self.latencies, 99)),
        }


def _ms(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


class Paths:
    """The three ways to send the request (one HTTP session, one NATS connection)."""

    def __init__(self, http: LeanClient, nc: Any, env: CaseEnv, emulator: str, gateway: str) -> None:
        self.http, self.nc, self.env = http, nc, env
        model = env.settings.registry().models["local_mlx"].provider_model
        headers = {
            "content-type": "application/json",
            "authorization": "Bearer bench",
            "x-router-task-type": TASK_TYPE.value,
            "x-router-complexity": str(COMPLEXITY),
        }
        self._direct = prepare(
            f"{emulator}/chat/completions",
            msgspec.json.encode({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}),
            headers,
        )
        self._gateway = prepare(
            f"{gateway}/v1/chat/completions",
            msgspec.json.encode(
                {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}
            ),
            headers,
        )
        self._request_subject = env.subjects.request
        # both clients lean alike: the NATS path's is the fleet's own request-reply
        self._replies = requests.for_connection(nc)

    async def direct(self) -> None:
        status, body = await self.http.post(self._direct)
        if status != 200:
            raise RuntimeError(f"direct call: HTTP {status} {body[:200]!r}")

    async def gateway(self) -> None:
        status, body = await self.http.post(self._gateway)
        if status != 200:
            raise RuntimeError(f"gateway: HTTP {status} {body[:200]!r}")

    async def nats(self) -> None:
        # a fresh id each time, as the gateway gives each request
        job = Job(prompt=PROMPT, id=uuid.uuid4().hex, max_tokens=256, task_type=TASK_TYPE, complexity=COMPLEXITY)
        reply = await self._replies.request(self._request_subject, encode(job), timeout=30)
        if b'"success":true' not in reply.data:
            raise RuntimeError("the job failed")


async def measure(env: CaseEnv, duration_s: float, profile_to: Path | None = None) -> dict[str, Any]:
    """Start the fleet and a gateway in ``env``; run the three paths at each in-flight level.
    With ``profile_to``, the gateway runs under cProfile and writes its stats there when it
    stops (its figures are then slower: only the shares of its time are meaningful)."""
    lmstudio_base_url = env.start_fleet(FleetSpec(worker_concurrency=128))
    port = free_port()
    gateway_env = {**env.base_env(), "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    args = entry("fleet_gateway")
    if profile_to is not None:
        args = ["-m", "cProfile", "-o", str(profile_to), *args]
    gateway = spawn("gateway-0", "gateway", args, gateway_env, env.dir / "logs")
    env.procs.append(gateway)
    wait_for_port(port, timeout_s=30, proc=gateway.popen)
    nc = await nats.connect(env.nats.url, name="bench-gateway-loadgen")
    http = LeanClient()  # the HTTP paths' client costs what nats-py's request-reply does
    figures: dict[str, Any] = {}
    try:
        paths = Paths(http, nc, env, lmstudio_base_url, f"http://127.0.0.1:{port}")
        await _until_ready(paths.nats)
        await closed_loop(paths.gateway, 4, 1.0)  # warm-up: connections, caches, JIT load
        pids = {p.name: p.pid for p in env.procs if p.alive()} | {"nats-server": env.nats.pid}
        calls = {"direct": paths.direct, "nats": paths.nats, "gateway": paths.gateway}
        for in_flight in IN_FLIGHT:
            tallies = {name: Tally() for name in calls}
            cpu_s = {name: dict.fromkeys([*pids, "loadgen"], 0.0) for name in calls}
            machine = {name: [0.0, 0.0] for name in calls}
            for name, share in SCHEDULE:
                cpu0 = {proc: proc_cpu_s(pid) for proc, pid in pids.items()}
                own0 = time.process_time()
                machine0 = machine_cpu_s()
                await tallies[name].run(calls[name], in_flight, duration_s * share)
                for proc, pid in pids.items():
                    cpu_s[name][proc] += proc_cpu_s(pid) - cpu0[proc]
                cpu_s[name]["loadgen"] += time.process_time() - own0
                machine1 = machine_cpu_s()
                machine[name][0] += machine1[0] - machine0[0]
                machine[name][1] += machine1[1] - machine0[1]
            for name, tally in tallies.items():
                served = max(1, len(tally.latencies))
                figures[f"{name}@{in_flight}"] = {
                    **tally.figures(),
                    "cpu_ms_per_request": {proc: round(sec * 1000 / served, 3) for proc, sec in cpu_s[name].items()},
                    "machine_busy_share": machine_busy_share((0.0, 0.0), (machine[name][0], machine[name][1])),
                }
    finally:
        http.close()
        await nc.close()
    return figures


def machine_busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two ``machine_cpu_s``:
    near 1.0, every process (ours and anyone else's) was competing for the cores."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(busy / total, 3) if total > 0 else 0.0


async def _until_ready(call: Call, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def gateway_figures(case: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and the targets' verdicts."""
    out: dict[str, Any] = {}
    one_gw, one_nats = case.get("gateway@1", {}), case.get("nats@1", {})
    many_gw, many_nats = case.get("gateway@64", {}), case.get("nats@64", {})
    if one_gw.get("p50_ms") is not None and one_nats.get("p50_ms") is not None:
        out["gateway_added_ms_p50"] = round(one_gw["p50_ms"] - one_nats["p50_ms"], 3)
    if one_gw.get("p99_ms") is not None and one_nats.get("p99_ms") is not None:
        out["gateway_added_ms_p99"] = round(one_gw["p99_ms"] - one_nats["p99_ms"], 3)
    if many_nats.get("requests_per_s"):
        out["gateway_throughput_share"] = round(many_gw.get("requests_per_s", 0) / many_nats["requests_per_s"], 3)
    out["gateway_targets_met"] = {
        "added_p50_le_1ms": out.get("gateway_added_ms_p50", float("inf")) <= 1.0,
        "throughput_ge_80pct": out.get("gateway_throughput_share", 0.0) >= 0.8,
    }
    return out


async def gateway(bench: Bench, duration_s: float, profile_to: Path | None = None) -> dict[str, Any]:
    """The case as ``python -m fleet_bench --only gateway`` runs it: all figures, in a dict."""
    async with bench.case("gateway") as env:
        env.dir.mkdir(parents=True, exist_ok=True)
        case = await measure(env, duration_s, profile_to)
    return {**gateway_figures(case), "paths": case}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.gateway_case", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per path and in-flight level")
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    parser.add_argument(
        "--profile-gateway",
        default=None,
        metavar="FILE",
        help="run the gateway under cProfile, stats to FILE (read with python -m pstats FILE)",
    )
    args = parser.parse_args(argv)
    root = Path(os.environ.get("FLEET_BENCH_DIR") or ".bench")
    root.mkdir(parents=True, exist_ok=True)

    profile_to = Path(args.profile_gateway).resolve() if args.profile_gateway else None

    async def run() -> dict[str, Any]:
        async with Bench(root, time.strftime("gateway-%Y%m%d-%H%M%S")) as bench:
            return await gateway(bench, args.duration_s, profile_to)

    result = asyncio.run(run())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
