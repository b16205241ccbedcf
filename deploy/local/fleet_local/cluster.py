"""The local cluster: ``python -m fleet_local.cluster up|down|status`` (``make up``).

up         Use NATS (with JetStream) and PostgreSQL where they answer, else start embedded
           ones; use a real provider where it answers (LM Studio) or has a key, else start
           its emulator. Write the run dir, start one detached supervisor, wait until every
           service answers ``$SRV.PING``, then run the demo. Safe to run twice.
supervise  (internal) owns the fleet processes and restarts any that exits, with capped
           exponential backoff: a Kubernetes pod's ``restartPolicy: Always``.
down       SIGTERM the supervisor (it stops the fleet gracefully), then anything of ours
           left behind, then the embedded servers.
status     every process we started: pid, alive, healthy (``/healthz`` of a fleet service,
           else a ping or an open port), ready (``/readyz``), its metrics URL; the NATS and
           PostgreSQL URLs.

Every fleet service gets a free loopback port for its ops endpoint (FLEET_METRICS_PORT,
``/metrics`` ``/healthz`` ``/readyz``); ``up`` prints them.

Run dir (default ``<repo>/.run``): ``pids/<name>.json``, ``logs/<name>.log``,
``cluster.env`` (the URLs the fleet uses: ``set -a; . .run/cluster.env``), ``state.json``,
``fleet.json`` (the supervisor's process list). Keys are never written there nor printed.
A pid file holds the pid *and* the process's start time from /proc, so a recycled pid is
never taken for ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet_local import demo as demo_client
from fleet_local.embedded import NatsServer, PostgresServer, free_port, postgres_answers
from fleet_local.nats_cluster import start_detached_cluster
from fleet_local.probes import (
    ensure_database,
    lmstudio_answers,
    nats_has_jetstream,
    port_open,
    redact,
)
from fleet_local.procs import (  # noqa: F401 (re-exported for callers of the cluster API)
    _FIRST,
    _LAST,
    ClusterError,
    RunDir,
    _alive,
    _tail,
    pid_alive,
    read_pids,
    stop_processes,
    write_pid,
)
from fleet_local.status import (  # noqa: F401 (status, ProcStatus: the cluster API)
    GATEWAY_HOST,
    ProcStatus,
    cluster_note,
    gateway_url,
    load_state,
    print_endpoints,
    print_plan,
    print_status,
    status,
    wait_ready,
)
from fleet_local.supervisor import _STOP_ORDER, GRACE_S, supervise
from fleet_shared.config import Settings, read_secret
from fleet_shared.registry import PROVIDER_ENV
from fleet_shared.subjects import PROVIDERS

log = logging.getLogger("fleet.cluster")

_DEFAULTS = Settings.from_env({})
#: where `up` starts the HTTP gateway (GATEWAY_HOST / GATEWAY_PORT override)
GATEWAY_PORT = 4000


# -- bringing it up ----------------------------------------------------------------------


def _embedded_port(url: str, default: int) -> int:
    """The URL's loopback port (e.g. 4222) when it is free, else any free port."""
    parts = urlsplit(url.split(",")[0])
    port = parts.port or default
    if parts.hostname in ("127.0.0.1", "localhost") and not port_open(port):
        return port
    return free_port()


@contextlib.contextmanager
def _embedding(what: str) -> Iterator[None]:
    try:
        yield
    except (OSError, RuntimeError, TimeoutError) as exc:  # no binary, no port, crashed at start
        raise ClusterError(f"cannot start an embedded {what}: {exc}") from exc


def _kind(name: str) -> str:
    """A pid file's kind: ``nats-2`` is a nats node, ``worker-openai-3`` a worker."""
    return name.split("-")[0]


def _our_nats(run: RunDir) -> dict[str, dict[str, Any]]:
    return {n: i for n, i in read_pids(run).items() if _kind(n) == "nats"}


async def _nats_backend(run: RunDir, env: Mapping[str, str], nodes: int) -> tuple[str, int | None]:
    """(NATS_URL, nodes we started, or None for a NATS that answered already).

    One node is ``nats``; a cluster's are ``nats-1`` .. ``nats-N`` (each JetStream-clustered
    with the others over loopback routes), and NATS_URL lists them all.
    """
    ours = _our_nats(run)
    if ours and all(_alive(i) for i in ours.values()):  # an earlier `up` that did not finish
        return ",".join(f"nats://127.0.0.1:{i['port']}" for i in ours.values()), len(ours)
    stop_processes(list(ours.values()), GRACE_S)  # a cluster missing a node: start it afresh
    for name in ours:
        run.pid_file(name).unlink(missing_ok=True)
    url = env.get("NATS_URL") or _DEFAULTS.nats_url
    if await nats_has_jetstream(url):
        return url, None
    port = _embedded_port(url, 4222)
    if nodes == 1:
        server = NatsServer(run.root / "nats", port, log_file=run.log("nats"))
        with _embedding("nats-server"):
            server.start(detach=True)
        write_pid(run, "nats", server.pid, port=server.port)
        return server.url, 1
    with _embedding(f"{nodes}-node NATS cluster"):
        return await start_detached_cluster(run, nodes, first_port=port), nodes


async def _postgres_backend(run: RunDir, env: Mapping[str, str]) -> tuple[str, bool]:
    ours = read_pids(run).get("postgres")
    if _alive(ours):
        return await ensure_database(f"postgresql://postgres@127.0.0.1:{ours['port']}/postgres"), True
    url = env.get("DATABASE_URL") or _DEFAULTS.database_url
    if await postgres_answers(url):
        return await ensure_database(url), False
    server = PostgresServer(run.root / "pg", _embedded_port(url, 5432), log_file=run.log("postgres"))
    with _embedding("PostgreSQL"):
        server.start(detach=True)
    write_pid(run, "postgres", server.pid, port=server.port, signal="SIGINT")  # fast shutdown
    return await ensure_database(server.url), True


def _gateway_port() -> int:
    """GATEWAY_PORT's default (4000) when it is free, else any free port."""
    return GATEWAY_PORT if not port_open(GATEWAY_PORT) else free_port()


def _provider_plan(env: Mapping[str, str]) -> tuple[dict, dict, dict[str, int]]:
    """(provider -> real|emulated + URL, env overrides incl. dummy keys, provider -> port)."""
    modes, overrides, emulated = {}, {}, {}
    for provider in PROVIDERS:
        url_var, key_var, default_url = PROVIDER_ENV[provider]
        url = env.get(url_var) or default_url
        real = lmstudio_answers(url) if provider == "lmstudio" else bool(read_secret(key_var, env))
        if not real:
            emulated[provider] = port = free_port()
            url = f"http://127.0.0.1:{port}" + ("/v1" if provider in ("openai", "lmstudio") else "")
            overrides[key_var] = "emulator-key"
        overrides[url_var] = url
        modes[provider] = {"mode": "real" if real else "emulated", "url": url}
    return modes, overrides, emulated


def fleet_procs(emulated: Mapping[str, int], workers: int = 1, *, metrics: bool = True) -> list[dict[str, Any]]:
    """The supervisor's process list: emulators first, then the services; ``workers``
    processes per provider (``worker-<provider>``, or ``worker-<provider>-<i>`` for several),
    sharing its dispatch consumer; each service with a free loopback port for its ops
    endpoint (``metrics``: FLEET_METRICS_PORT)."""
    py = sys.executable
    procs: list[dict[str, Any]] = [
        {"name": f"emulator-{p}", "argv": [py, "-m", "fleet_emulators", "--provider", p, "--port", str(port)],
         "port": port}
        for p, port in emulated.items()
    ]  # fmt: skip
    procs.append({"name": "ledger", "argv": [py, "-m", "fleet_ledger"], "service": "fleet-ledger"})
    procs.append({"name": "router", "argv": [py, "-m", "fleet_router"], "service": "fleet-router"})
    for p in PROVIDERS:
        names = [f"worker-{p}"] if workers == 1 else [f"worker-{p}-{i}" for i in range(1, workers + 1)]
        procs += [{"name": name, "argv": [py, "-m", "fleet_workers", "--provider", p],
                   "service": f"fleet-worker-{p}"} for name in names]  # fmt: skip
    procs.append({"name": "gateway", "argv": [py, "-m", "fleet_gateway"], "service": "fleet-gateway"})
    if metrics:
        for proc in procs:
            if "service" in proc:
                proc["metrics_port"] = port = free_port()
                proc["env"] = {"FLEET_METRICS_PORT": str(port)}
    return procs


def start_supervisor(run: RunDir, env: Mapping[str, str]) -> subprocess.Popen:
    """Start `supervise` detached, for the processes in fleet.json."""
    argv = [sys.executable, "-m", "fleet_local.cluster", "supervise", "--run-dir", str(run.root)]
    with open(run.log("supervisor"), "ab") as out:
        proc = subprocess.Popen(
            argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `up`; a Ctrl-C in the terminal does not reach it
        )  # fmt: skip
    # the supervisor stops its children tier by tier, each given GRACE_S, before `down` kills it
    write_pid(run, "supervisor", proc.pid, grace_s=(len(_STOP_ORDER) + 1) * GRACE_S + 5)
    return proc


async def _bring_up(run: RunDir, env: Mapping[str, str], nodes: int = 1, workers: int = 1) -> dict[str, Any]:
    leftovers = {n: i for n, i in read_pids(run).items() if _kind(n) not in _LAST}  # a dead supervisor's
    stop_processes(list(leftovers.values()), GRACE_S)
    for name in leftovers:
        run.pid_file(name).unlink(missing_ok=True)
    nats_url, nats_nodes = await _nats_backend(run, env, nodes)
    db_url, pg_embedded = await _postgres_backend(run, env)
    modes, overrides, emulated = _provider_plan(env)
    urls = {"NATS_URL": nats_url, "DATABASE_URL": db_url,
            "FLEET_SUBJECT_PREFIX": env.get("FLEET_SUBJECT_PREFIX") or _DEFAULTS.subject_prefix,
            "FLEET_LMSTUDIO_EMULATED": "1" if "lmstudio" in emulated else "0",
            "GATEWAY_HOST": env.get("GATEWAY_HOST") or GATEWAY_HOST,
            "GATEWAY_PORT": env.get("GATEWAY_PORT") or str(_gateway_port())}  # fmt: skip
    if nats_nodes and nats_nodes > 1:  # every stream and KV bucket on every node
        urls["FLEET_STREAM_REPLICAS"] = str(nats_nodes)
    urls.update({k: v for k, v in overrides.items() if not k.endswith("_API_KEY")})
    state = {"nats": {"url": nats_url, "embedded": nats_nodes is not None, "nodes": nats_nodes or 1},
             "postgres": {"url": db_url, "embedded": pg_embedded},
             "providers": modes, "env": urls}  # fmt: skip
    run.file("state.json").write_text(json.dumps(state, indent=2))
    run.file("fleet.json").write_text(json.dumps({"procs": fleet_procs(emulated, workers)}, indent=2))
    env_file = run.file("cluster.env")
    env_file.write_text("".join(f"{k}={v}\n" for k, v in urls.items()))
    env_file.chmod(0o600)  # DATABASE_URL may carry a password
    start_supervisor(run, {**env, **overrides, **urls, "PYTHONUNBUFFERED": "1",
                           "FLEET_RUN_DIR": str(run.root)})  # fmt: skip
    return state


@contextlib.contextmanager
def _locked(run: RunDir) -> Iterator[None]:
    """Two `up`s at once would start two fleets: the second waits for the first."""
    with open(run.file("up.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


async def up(
    run: RunDir, env: Mapping[str, str], *, demo: bool = True, timeout_s: float = 60.0, nodes: int = 1, workers: int = 1
) -> int:
    """Bring the cluster up (or find it up), wait until it answers, run the demo.

    ``nodes``: nats-servers to start when none answers on NATS_URL (more than one: a
    JetStream cluster, with FLEET_STREAM_REPLICAS set to their number); ``workers``: worker
    processes per provider.

    Raises:
        ClusterError: a service did not answer within ``timeout_s`` (names it, with its log).
    """
    with _locked(run):
        supervisor, state = read_pids(run).get("supervisor"), load_state(run)
        if _alive(supervisor) and state:
            print(f"cluster already running (supervisor pid {supervisor['pid']})")
        else:
            state = await _bring_up(run, env, nodes, workers)
        print_plan(state)
        if nodes > 1 and not state["nats"]["embedded"]:
            print(f"note: NATS already answers at {redact(state['nats']['url'])}: no nodes started; "
                  "set FLEET_STREAM_REPLICAS to its cluster size")  # fmt: skip
        await wait_ready(run, state["env"]["NATS_URL"], timeout_s)
    print(f"fleet ready; logs in {run.root / 'logs'}")
    await print_endpoints(run, state)
    if not demo:
        return 0
    urls = state["env"]
    return await demo_client.run_demo(
        urls["NATS_URL"], urls["FLEET_SUBJECT_PREFIX"], inject_local_error=urls["FLEET_LMSTUDIO_EMULATED"] == "1"
    )


def down(run: RunDir) -> list[int]:
    """Stop everything we started, supervisor first, servers last. Returns the pids."""
    recorded = {i["pid"] for i in read_pids(run).values()}
    for stage in (_FIRST, None, _LAST):  # None: the fleet, i.e. every other pid file
        infos = read_pids(run)  # re-read: a supervisor that had to be killed left its children
        names = [n for n in infos if (_kind(n) in stage if stage else _kind(n) not in _FIRST + _LAST)]
        group = [infos[n] for n in names if n in infos]
        stop_processes(group, max((i.get("grace_s", GRACE_S) for i in group), default=0.0))
        for name in names:
            run.pid_file(name).unlink(missing_ok=True)
        recorded |= {i["pid"] for i in group}
    for name in ("cluster.env", "state.json", "fleet.json"):
        run.file(name).unlink(missing_ok=True)
    return sorted(recorded)


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_local.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "supervise"])
    parser.add_argument("--run-dir", type=Path, help="state dir (default: <repo>/.run, or FLEET_RUN_DIR)")
    parser.add_argument("--no-demo", action="store_true", help="up: skip the demo")
    parser.add_argument("--timeout", type=float, default=60.0, help="up: seconds to wait for the fleet")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        choices=range(1, 6),
        metavar="{1..5}",
        help="up: nats-servers to start (a JetStream cluster with R<nodes> streams) if none answers",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 33),
        metavar="{1..32}",
        help="up: worker processes per provider",
    )
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir.resolve()) if args.run_dir else RunDir.default()
    # the supervisor logs every start, exit and restart; the other commands print instead
    level = logging.INFO if args.command == "supervise" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "supervise":
        asyncio.run(supervise(run))
    elif args.command == "status":
        print_status(run)
    elif args.command == "down":
        pids = down(run)
        print(f"stopped {len(pids)} processes" if pids else "nothing to stop")
    else:
        try:
            return asyncio.run(up(run, os.environ, demo=not args.no_demo, timeout_s=args.timeout,
                                  nodes=args.nodes, workers=args.workers))  # fmt: skip
        except ClusterError as exc:
            print(
                f"up failed: {exc}\n(whatever did start keeps running: see `status`, stop it with `down`)",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
