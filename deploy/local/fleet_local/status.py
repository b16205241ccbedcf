"""What ``make up`` and ``make status`` print about a running local cluster: the plan, the
endpoints, readiness (every service answers), and each process's health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet_local.probes import PING_WINDOW_S, health, ops_health, ops_url, redact, serves_dashboard
from fleet_local.procs import ClusterError, RunDir, _alive, _tail, read_pids

#: where the gateway listens unless the plan says otherwise
GATEWAY_HOST = "127.0.0.1"


def load_state(run: RunDir) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(run.file("state.json").read_text())
    return {}


def gateway_url(state: Mapping[str, Any]) -> str | None:
    env = state.get("env", {})
    if "GATEWAY_PORT" not in env:
        return None
    return f"http://{env.get('GATEWAY_HOST', GATEWAY_HOST)}:{env['GATEWAY_PORT']}"


def cluster_note(state: Mapping[str, Any]) -> str | None:
    nodes = state.get("nats", {}).get("nodes", 1)
    replicas = state.get("env", {}).get("FLEET_STREAM_REPLICAS", "1")
    return f"({nodes} clustered nodes; streams and KV buckets at R{replicas})" if nodes > 1 else None


def print_plan(state: Mapping[str, Any]) -> None:
    print(f"  {'COMPONENT':<10} {'MODE':<9} URL")
    rows = [(n, "embedded" if state[n]["embedded"] else "external", state[n]["url"]) for n in ("nats", "postgres")]
    rows += [(p, m["mode"], m["url"]) for p, m in state["providers"].items()]
    for name, mode, url in rows:
        print(f"  {name:<10} {mode:<9} {redact(url)}")
    if nodes := cluster_note(state):
        print(f"  {'':<10} {'':<9} {nodes}")
    gateway = gateway_url(state)
    if gateway:
        print(f"  {'gateway':<10} {'http':<9} {gateway}  (OpenAI: {gateway}/v1, Anthropic: {gateway})")
        print(f"  {'dashboard':<10} {'http':<9} {gateway}/dashboard")


async def print_endpoints(run: RunDir, state: Mapping[str, Any]) -> None:
    """Each service's metrics URL, and the gateway's dashboard when it serves one."""
    procs = json.loads(run.file("fleet.json").read_text())["procs"]
    urls = [(p["name"], f"http://127.0.0.1:{p['metrics_port']}/metrics") for p in procs if "metrics_port" in p]
    if urls:
        print("metrics (also /healthz, /readyz):")
        for name, url in urls:
            print(f"  {name:<18} {url}")
    gateway = gateway_url(state)
    if gateway and await serves_dashboard(gateway):
        print(f"dashboard: {gateway}/dashboard")


# -- readiness ---------------------------------------------------------------------------


async def wait_ready(run: RunDir, nats_url: str, timeout_s: float) -> None:
    expected = [p["name"] for p in json.loads(run.file("fleet.json").read_text())["procs"]]
    deadline = time.monotonic() + timeout_s
    while True:
        round_started = time.monotonic()
        checks = await health(run, nats_url)
        missing = [n for n in expected if not checks.get(n)]
        if not missing:
            return
        if not _alive(read_pids(run).get("supervisor")):
            raise ClusterError(f"the supervisor died:\n{_tail(run.log('supervisor'))}")
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {run.log(n)} ---\n{_tail(run.log(n))}" for n in missing)
            raise ClusterError(f"not up after {timeout_s:.0f}s: {', '.join(missing)}\n\n{logs}")
        # a ping round already took PING_WINDOW_S unless it was skipped (no service yet)
        await asyncio.sleep(max(0.0, PING_WINDOW_S - (time.monotonic() - round_started)))


# -- status and down ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStatus:
    name: str
    pid: int
    alive: bool
    #: its /healthz answers (a fleet service), else it answers a ping or listens (None: n/a)
    healthy: bool | None
    #: its /readyz answers 200 (None: no ops endpoint)
    ready: bool | None = None
    metrics_url: str | None = None


async def _checks(run: RunDir, nats_url: str | None) -> tuple[dict[str, bool | None], dict[str, tuple[bool, bool]]]:
    return await asyncio.gather(health(run, nats_url), ops_health(run))


def status(run: RunDir) -> list[ProcStatus]:
    state = load_state(run)
    checks, ops = asyncio.run(_checks(run, state.get("nats", {}).get("url")))
    rows = []
    for name, info in read_pids(run).items():
        url = ops_url(info)
        live, ready = ops.get(name, (None, None))
        healthy = live if url else checks.get(name)
        rows.append(ProcStatus(name, info["pid"], _alive(info), healthy, ready, url and f"{url}/metrics"))
    return rows


def print_status(run: RunDir) -> None:
    state = load_state(run)
    for name in ("nats", "postgres"):
        if name in state:
            where = "embedded" if state[name]["embedded"] else "external"
            print(f"{name:<10} {where:<9} {redact(state[name]['url'])}")
    if nodes := cluster_note(state):
        print(f"{'':<10} {'':<9} {nodes}")
    gateway = gateway_url(state)
    if gateway:
        print(f"{'gateway':<10} {'http':<9} {gateway}")
        print(f"{'dashboard':<10} {'http':<9} {gateway}/dashboard")
    rows = status(run)
    if not rows:
        print(f"no processes running (run dir {run.root})")
        return
    print(f"\n{'NAME':<20} {'PID':>8}  {'ALIVE':<6} {'HEALTHY':<8} {'READY':<6} METRICS")
    for r in rows:
        print(
            f"{r.name:<20} {r.pid:>8}  {'yes' if r.alive else 'NO':<6} {_yes_no(r.healthy):<8} {_yes_no(r.ready):<6} "
            f"{r.metrics_url or '-'}"
        )


def _yes_no(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")
