"""Private servers, the fleet's subprocesses and /proc sampling for the benchmark.

Nothing here touches a server it did not start: NATS is always a private nats-server on a
free loopback port; PostgreSQL is the one at DATABASE_URL (else 127.0.0.1:5432), on which a
fresh database is created per case and dropped after, or an embedded one when none answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats

from fleet_local.embedded import NatsServer, PostgresServer, free_port, postgres_answers, wait_for_port
from fleet_shared import bus
from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects

#: Seconds a fleet process gets between SIGTERM and SIGKILL (the bench never needs a
#: graceful drain: every case has drained its jobs before it stops the fleet).
STOP_GRACE_S = 8.0
#: /proc sampling period for RSS.
SAMPLE_EVERY_S = 0.2
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def default_admin_dsn() -> str:
    return os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


class Postgres:
    """The PostgreSQL server of this run: the machine's, else an embedded one under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.admin_dsn = default_admin_dsn()
        self._embedded: PostgresServer | None = None

    async def start(self) -> Postgres:
        if not await postgres_answers(self.admin_dsn):
            self._embedded = PostgresServer(self.root / "pg", fsync=True).start()
            self.admin_dsn = self._embedded.url
        return self

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def fresh_database(self, tag: str) -> AsyncIterator[str]:
        """Create ``fleet_bench_<tag>_<hex>``, yield its DSN, drop it (even on error)."""
        name = f"fleet_bench_{tag}_{uuid.uuid4().hex[:8]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        base, _, _ = self.admin_dsn.rpartition("/")
        try:
            yield f"{base}/{name}"
        finally:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes ------------------------------------------------------------------------


def proc_rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds used by ``pid`` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Proc:
    """One subprocess we started: its role (router, worker, ...) and log file."""

    name: str
    role: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float = STOP_GRACE_S) -> None:
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, role: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Proc(name, role, popen, log_path)


def stop_all(procs: Iterable[Proc]) -> None:
    procs = list(procs)
    for p in procs:
        p.stop()
    for p in procs:
        p.wait_or_kill()


class Sampler:
    """Samples RSS of a set of processes in a thread; keeps the peak of their sum."""

    def __init__(self, procs: list[Proc], every_s: float = SAMPLE_EVERY_S) -> None:
        self.procs = procs
        self.every_s = every_s
        self.peak_total_kb = 0
        self.peak_by_proc_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self.procs:
                kb = proc_rss_kb(p.pid)
                total += kb
                self.peak_by_proc_kb[p.name] = max(self.peak_by_proc_kb.get(p.name, 0), kb)
            self.peak_total_kb = max(self.peak_total_kb, total)
            self._stop.wait(self.every_s)


class CpuMeter:
    """CPU seconds each process used between ``start()`` and ``stop()``, as % of one core."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {p.name: proc_cpu_s(p.pid) for p in self.procs}

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._t0)
        return {p.name: round(100.0 * (proc_cpu_s(p.pid) - self._cpu0.get(p.name, 0.0)) / wall, 1) for p in self.procs}


# -- one case's world -----------------------------------------------------------------


@dataclass
class FleetSpec:
    """What to start for one end-to-end case."""

    #: processes of each fleet service (router, lmstudio worker, ledger)
    procs_per_service: int = 1
    #: provider calls in flight per worker process (FLEET_WORKER_CONCURRENCY)
    worker_concurrency: int = 64
    #: the emulator's latency before every answer
    emulator_latency_ms: float = 0.0
    #: extra environment for the fleet processes
    extra_env: dict[str, str] = field(default_factory=dict)


def entry(module: str) -> list[str]:
    """Arguments that run ``python -m module`` (its event loop: see ``fleet_shared.runtime``)."""
    return ["-m", module]


@dataclass
class CaseEnv:
    """A private nats-server, a fresh database and a subject prefix for one case."""

    name: str
    #: where the case's process logs, load plans and reports go
    dir: Path
    nats: NatsServer
    database_url: str
    prefix: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.from_env({}, nats_url=self.nats.url, database_url=self.database_url, subject_prefix=self.prefix)

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    def base_env(self) -> dict[str, str]:
        # FLEET_EVENT_LOOP passes through: the bench's --loop sets it for every process
        env = {
            k: v
            for k, v in os.environ.items()
            if k == "FLEET_EVENT_LOOP" or not k.startswith(("FLEET_", "NATS_", "DATABASE_"))
        }
        env.update(
            NATS_URL=self.nats.url,
            DATABASE_URL=self.database_url,
            FLEET_SUBJECT_PREFIX=self.prefix,
            FLEET_LOG_LEVEL="WARNING",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        return env

    def fleet(self, role: str) -> list[Proc]:
        return [p for p in self.procs if p.role == role]

    @property
    def fleet_procs(self) -> list[Proc]:
        """The fleet proper: routers, workers, ledgers (not the emulator, not the load generator)."""
        return [p for p in self.procs if p.role in ("router", "worker", "ledger")]

    async def ensure_streams(self) -> None:
        nc = await nats.connect(self.nats.url, name="bench-setup")  # no reconnect/log callbacks
        try:
            await bus.ensure_streams(nc.jetstream(), self.subjects, self.settings)
        finally:
            await nc.close()

    def start_emulator(self, latency_ms: float, provider: str = "lmstudio") -> str:
        port = free_port()
        # --report-processing-ms: its own time per answer, subtracted from e2e latency as "overhead"
        args = [
            "-m",
            "fleet_emulators",
            "--provider",
            provider,
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--report-processing-ms",
        ]
        proc = spawn(f"emulator-{provider}", "emulator", args, self.base_env(), self.dir / "logs")
        self.procs.append(proc)
        wait_for_port(port, timeout_s=30, proc=proc.popen)
        return f"http://127.0.0.1:{port}/v1" if provider in ("lmstudio", "openai") else f"http://127.0.0.1:{port}"

    def start_fleet(self, spec: FleetSpec) -> str:
        """Emulator (LM Studio protocol), then ledger, router and lmstudio worker processes;
        returns the emulator's base URL."""
        base_url = self.start_emulator(spec.emulator_latency_ms)
        env = self.base_env()
        env.update(
            LMSTUDIO_BASE_URL=base_url,
            FLEET_WORKER_CONCURRENCY=str(spec.worker_concurrency),
            **spec.extra_env,
        )
        logs = self.dir / "logs"
        worker_args = ["--provider", "lmstudio", "--concurrency", str(spec.worker_concurrency)]
        for i in range(spec.procs_per_service):
            self.procs.append(spawn(f"ledger-{i}", "ledger", entry("fleet_ledger"), env, logs))
            self.procs.append(spawn(f"router-{i}", "router", entry("fleet_router"), env, logs))
            self.procs.append(spawn(f"worker-{i}", "worker", entry("fleet_workers") + worker_args, env, logs))
        return base_url

    def start_floor(self, base_url: str, concurrency: int = 64) -> str:
        """The bare reference pipeline (``fleet_bench.floor``) on this case's nats-server and
        database, calling the emulator at ``base_url``; returns its subject prefix."""
        prefix = f"{self.prefix}_floor"
        common = ["-m", "fleet_bench.floor", "--nats", self.nats.url, "--prefix", prefix]
        roles = {
            "intake": ["--concurrency", str(concurrency)],
            "worker": ["--concurrency", str(concurrency), "--base-url", base_url],
            # the writer takes what is there in batches, as the ledger does
            "writer": ["--concurrency", "1024", "--database-url", self.database_url],
        }
        for role, extra in roles.items():
            self.procs.append(
                spawn(f"floor-{role}", "floor", [*common, "--role", role, *extra], self.base_env(), self.dir / "logs")
            )
        return prefix

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive()]


class Bench:
    """One benchmark run: its directory and PostgreSQL; hands out CaseEnvs."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.tmp = root / "tmp" / run_id
        self.pg = Postgres(self.tmp)

    async def __aenter__(self) -> Bench:
        self.tmp.mkdir(parents=True, exist_ok=True)
        await self.pg.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / "tmp").rmdir()

    @contextlib.asynccontextmanager
    async def case(self, name: str) -> AsyncIterator[CaseEnv]:
        """A fresh nats-server + database + prefix; every process started in it is stopped after."""
        case_dir = self.tmp / name
        nats_server = NatsServer(case_dir / "nats", log_file=self.root / "logs" / self.run_id / f"{name}-nats.log")
        nats_server.start()
        try:
            async with self.pg.fresh_database(name.replace("-", "_")) as dsn:
                logs = self.root / "logs" / self.run_id / name
                env = CaseEnv(name, logs, nats_server, dsn, prefix=f"bench_{name.replace('-', '_')}")
                try:
                    yield env
                finally:
                    # stop the fleet before dropping its database (DROP ... FORCE would kill it anyway)
                    await asyncio.to_thread(stop_all, env.procs)
        finally:
            nats_server.stop()
            shutil.rmtree(case_dir, ignore_errors=True)
