"""The gateway case: the same chat request three ways, from the same load generator.

    direct   POST /v1/chat/completions to the LM Studio emulator itself
    nats     the Job on ``<p>.request`` (request-reply; router -> lmstudio worker -> emulator)
    gateway  POST /v1/chat/completions to ``python -m fleet_gateway`` (-> the nats path)

Each path is driven closed-loop (``in_flight`` requests always outstanding) for a fixed
time at 1 and at 64 in flight; the figures are requests/s, latency p50/p99, and the CPU ms
per request of every process (gateway, router, worker, ledger, emulator, load generator).
Targets (issue 10): the gateway adds <= 1 ms p50 over the nats path at 1 in flight, and
keeps >= 80 % of the nats path's throughput at 64 in flight.

    python -m fleet_bench.gateway_case [--duration-s 5] [--out gateway.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats

from fleet_bench.infra import Bench, CaseEnv, FleetSpec, entry, proc_cpu_s, spawn
from fleet_bench.loadgen import percentile
from fleet_local.embedded import free_port, wait_for_port
from fleet_shared.schema import Job, TaskType, encode

IN_FLIGHT = (1, 64)
PROMPT = "write a function that adds two numbers"
#: the router's rule simple_local sends this to local_mlx (the LM Studio emulator)
TASK_TYPE, COMPLEXITY = TaskType.CODE_GENERATION, 2

Call = Callable[[], Awaitable[None]]


async def closed_loop(call: Call, in_flight: int, duration_s: float) -> dict[str, Any]:
    """``in_flight`` callers, each calling again as soon as its call returns, for ``duration_s``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def caller() -> None:
        nonlocal errors
        while (started := time.perf_counter()) < deadline:
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
    }


def _ms(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


class Paths:
    """The three ways to send the request (one HTTP session, one NATS connection)."""

    def __init__(self, http: aiohttp.ClientSession, nc: Any, env: CaseEnv, emulator: str, gateway: str) -> None:
        self.http, self.nc, self.env = http, nc, env
        model = env.settings.registry().models["local_mlx"].provider_model
        self._direct_url = f"{emulator}/chat/completions"
        self._direct_body = msgspec.json.encode(
            {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}
        )
        self._gateway_url = f"{gateway}/v1/chat/completions"
        self._gateway_body = msgspec.json.encode(
            {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 256}
        )
        self._headers = {
            "content-type": "application/json",
            "authorization": "Bearer bench",
            "x-router-task-type": TASK_TYPE.value,
            "x-router-complexity": str(COMPLEXITY),
        }
        self._request_subject = env.subjects.request

    async def direct(self) -> None:
        async with self.http.post(self._direct_url, data=self._direct_body, headers=self._headers) as r:
            await r.read()
            r.raise_for_status()

    async def gateway(self) -> None:
        async with self.http.post(self._gateway_url, data=self._gateway_body, headers=self._headers) as r:
            await r.read()
            r.raise_for_status()

    async def nats(self) -> None:
        # a fresh id each time, as the gateway gives each request
        job = Job(prompt=PROMPT, id=uuid.uuid4().hex, max_tokens=256, task_type=TASK_TYPE, complexity=COMPLEXITY)
        reply = await self.nc.request(self._request_subject, encode(job), timeout=30)
        if b'"success":true' not in reply.data:
            raise RuntimeError("the job failed")


async def measure(env: CaseEnv, duration_s: float) -> dict[str, Any]:
    """Start the fleet and a gateway in ``env``; run the three paths at each in-flight level."""
    lmstudio_base_url = env.start_fleet(FleetSpec(worker_concurrency=128))
    port = free_port()
    gateway_env = {**env.base_env(), "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    gateway = spawn("gateway-0", "gateway", entry("fleet_gateway"), gateway_env, env.dir / "logs")
    env.procs.append(gateway)
    wait_for_port(port, timeout_s=30, proc=gateway.popen)
    nc = await nats.connect(env.nats.url, name="bench-gateway-loadgen")
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    figures: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            paths = Paths(http, nc, env, lmstudio_base_url, f"http://127.0.0.1:{port}")
            await _until_ready(paths.nats)
            await closed_loop(paths.gateway, 4, 1.0)  # warm-up: connections, caches, JIT load
            procs = [p for p in env.procs if p.alive()]
            for in_flight in IN_FLIGHT:
                for name, call in (("direct", paths.direct), ("nats", paths.nats), ("gateway", paths.gateway)):
                    cpu0 = {p.name: proc_cpu_s(p.pid) for p in procs}
                    own0 = time.process_time()
                    out = await closed_loop(call, in_flight, duration_s)
                    served = max(1, out["requests"])
                    cpu = {p.name: round((proc_cpu_s(p.pid) - cpu0[p.name]) * 1000 / served, 3) for p in procs}
                    cpu["loadgen"] = round((time.process_time() - own0) * 1000 / served, 3)
                    figures[f"{name}@{in_flight}"] = {**out, "cpu_ms_per_request": cpu}
    finally:
        await nc.close()
    return figures


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


async def gateway(bench: Bench, duration_s: float) -> dict[str, Any]:
    """The case as ``python -m fleet_bench --only gateway`` runs it: all figures, in a dict."""
    async with bench.case("gateway") as env:
        env.dir.mkdir(parents=True, exist_ok=True)
        case = await measure(env, duration_s)
    return {**gateway_figures(case), "paths": case}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.gateway_case", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per path and in-flight level")
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    root = Path(os.environ.get("FLEET_BENCH_DIR") or ".bench")
    root.mkdir(parents=True, exist_ok=True)

    async def run() -> dict[str, Any]:
        async with Bench(root, time.strftime("gateway-%Y%m%d-%H%M%S")) as bench:
            return await gateway(bench, args.duration_s)

    result = asyncio.run(run())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
