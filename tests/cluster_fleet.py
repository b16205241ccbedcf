"""A fleet on a NATS cluster, for the high-availability tests (tests/test_cluster_ha.py).

* a three-node nats-server cluster on loopback (``NatsCluster``), every stream and KV
  bucket at R3; a node can be SIGKILLed and started again;
* the router, the ledger and N workers per provider as real ``python -m`` subprocesses
  (what ``make up NODES=3 WORKERS=N`` runs), each restartable one by one;
* a counting emulator per provider: every chat call is counted by job id (the id is in the
  prompt) and by the worker that made it (each worker process gets its own API key).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
from aiohttp import web

from fleet_emulators import BASE_PATH, create_app
from fleet_local.nats_cluster import NatsCluster, wait_for_jetstream
from fleet_shared.registry import PROVIDER_ENV
from tests.chaos.fleet import CHAOS_ENV, ChaosFleet
from tests.chaos.load import JobSpec

#: How a job id looks in the prompts of these tests (``make_forced_jobs``).
JOB_ID = re.compile(rb"ha-[a-z]+-\d+-[0-9a-f]{8}")
#: How a worker's API key names its process (``worker_key``).
WORKER_KEY = re.compile(r"worker-[a-z]+-\d+")


def worker_key(name: str) -> str:
    return f"sk-cluster-{name}"


def make_forced_jobs(n: int, tag: str, models: list[str]) -> list[JobSpec]:
    """``n`` jobs, job ``i`` forced to ``models[i % len(models)]``, the job id in the prompt."""
    import uuid

    jobs = []
    for i in range(n):
        job_id = f"ha-{tag}-{i}-{uuid.uuid4().hex[:8]}"
        payload = {"id": job_id, "prompt": f"cluster job {job_id}", "context": {"force_model": models[i % len(models)]}}
        jobs.append(JobSpec(job_id, payload, "submit"))
    return jobs


@dataclass
class CallCounts:
    """Chat calls the emulator served: (job id, worker name) -> count."""

    calls: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def per_job(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for (job, _), n in self.calls.items():
            out[job] += n
        return out

    def per_worker(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for (_, worker), n in self.calls.items():
            out[worker] += n
        return out


@contextlib.asynccontextmanager
async def counting_emulator(provider: str, counts: CallCounts, latency_ms: float) -> AsyncIterator[str]:
    """``provider``'s emulator, counting each chat call carrying a job id; yields its base URL."""

    @web.middleware
    async def count(request: web.Request, handler):
        if request.method == "POST":
            body = await request.read()  # cached: the handler reads it again
            job = JOB_ID.search(body)
            keys = " ".join(request.headers.get(h, "") for h in ("Authorization", "x-api-key", "x-goog-api-key"))
            worker = WORKER_KEY.search(keys)
            if job:
                counts.calls[(job.group().decode(), worker.group() if worker else "?")] += 1
        return await handler(request)

    app = create_app(provider, latency_ms=latency_ms)
    app.middlewares.append(count)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{BASE_PATH[provider]}"
    finally:
        await runner.cleanup()


class ClusterFleet(ChaosFleet):
    """Use as ``async with ClusterFleet(...) as fleet``.

    Parameters:
        workdir: nats-server stores and every process's log.
        database_url: the ledger's database.
        prefix: subject prefix (unique per test).
        workers: provider -> worker processes (only these providers get workers and emulators).
        nodes: nats-servers in the cluster (streams at R<nodes>).
        env: settings on top of ``CHAOS_ENV``.
        latency_ms: the emulators' latency per call.
    """

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        *,
        prefix: str,
        workers: dict[str, int],
        nodes: int = 3,
        env: dict[str, str] | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        super().__init__(workdir, database_url, prefix=prefix, env={"FLEET_STREAM_REPLICAS": str(nodes), **(env or {})})
        self.cluster = NatsCluster(self.workdir / "nats", nodes, log_dir=self.workdir)
        self.workers = workers
        self.latency_ms = latency_ms
        self.counts = CallCounts()
        self.urls: dict[str, str] = {}
        self.result_times: list[tuple[float, str]] = []  # (monotonic time, job id) per Result seen

    def names(self) -> list[str]:
        workers = [f"worker-{p}-{i}" for p, n in self.workers.items() for i in range(1, n + 1)]
        return ["ledger", *workers, "router"]

    async def __aenter__(self) -> ClusterFleet:
        await asyncio.to_thread(self.cluster.start)
        self.env["NATS_URL"] = self.cluster.url
        for provider in self.workers:
            self.urls[provider] = await self._stack.enter_async_context(
                counting_emulator(provider, self.counts, self.latency_ms)
            )
        self.nc = await nats.connect(
            servers=self.cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2
        )
        await wait_for_jetstream(self.nc)
        self.js = self.nc.jetstream()
        await self.nc.subscribe(self.subjects.result_all, cb=self._on_result)
        self.subprocesses = set(self.names())
        for name in self.names():  # one at a time: the first creates the streams
            await self.start(name)
        return self

    async def __aexit__(self, *exc) -> None:
        for name in reversed(self.names()):  # router, workers, ledger
            if name in self.procs:
                await self.stop(name)
        with contextlib.suppress(Exception):
            await self.nc.close()
        await self._stack.aclose()
        await asyncio.to_thread(self.cluster.stop)

    async def _on_result(self, msg) -> None:
        self.result_times.append((time.monotonic(), msg.subject.rsplit(".", 1)[1]))

    # -- processes ------------------------------------------------------------------

    def process_env_of(self, name: str) -> dict[str, str]:
        """The environment of process ``name``: a worker's API key names it."""
        env = {**os.environ, **self.env}
        for provider, (url_var, key_var, _) in PROVIDER_ENV.items():
            env.pop(key_var, None)
            env.pop(f"{key_var}_FILE", None)
            if provider in self.urls:
                env[url_var] = self.urls[provider]
                env[key_var] = worker_key(name)
        return env

    async def _spawn(self, name: str) -> None:
        if name.startswith("worker-"):
            provider = name.split("-")[1]
            argv, service = ["fleet_workers", "--provider", provider], f"fleet-worker-{provider}"
        else:
            argv, service = [f"fleet_{name}"], f"fleet-{name}"
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *argv], env=self.process_env_of(name), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.procs[name] = proc
        await self.wait_ready(service, proc)

    async def restart(self, name: str) -> None:
        """Stop ``name`` gracefully (SIGTERM), start it again, until it answers."""
        await self.stop(name)
        await self.start(name)

    # -- the NATS cluster -----------------------------------------------------------

    async def stream_leader(self, stream: str, timeout_s: float = 30.0) -> str:
        """The server name leading ``stream`` (polled until there is one, bounded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):  # no leader (an election) or reconnecting
                info = await self.js.stream_info(stream)
                if info.cluster and info.cluster.leader:
                    return info.cluster.leader
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream} has no leader after {timeout_s}s")
            await asyncio.sleep(0.05)

    async def replicas_current(self, stream: str) -> bool:
        info = await self.js.stream_info(stream)
        replicas = (info.cluster.replicas or []) if info.cluster else []
        return len(replicas) == len(self.cluster.nodes) - 1 and all(r.current for r in replicas)


__all__ = ["CHAOS_ENV", "ClusterFleet", "make_forced_jobs", "worker_key"]
