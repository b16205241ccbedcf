"""A fleet a test can break: a private nats-server (file storage) it can restart, emulators
behind relays it can take down or make cut answers, and the router, the workers and the
ledger either in-process or as real ``python -m`` subprocesses it can SIGKILL and restart
(what a supervisor or Kubernetes does)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import nats

from fleet_emulators import BASE_PATH, running_emulator
from fleet_ledger import Ledger
from fleet_local.embedded import NatsServer
from fleet_router.service import Router
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.registry import PROVIDER_ENV
from fleet_shared.subjects import PROVIDERS, Subjects
from fleet_workers.service import Worker

#: Settings every chaos fleet runs with: short waits so failures show within seconds.
CHAOS_ENV = {
    "FLEET_ACK_WAIT_S": "2",
    "FLEET_MAX_DELIVER": "5",
    "FLEET_PROVIDER_TIMEOUT_S": "2",
    "FLEET_STREAM_STALL_S": "1",
    "FLEET_WORKER_CONCURRENCY": "32",
    "FLEET_ROUTER_CONCURRENCY": "64",
    "FLEET_NO_WORKER_ESCALATE_S": "30",
    "FLEET_COOLDOWN_S": "0.5",
    "FLEET_RAMP_S": "1",
    "FLEET_LEDGER_BATCH_SIZE": "200",
    "FLEET_LOG_LEVEL": "WARNING",
}
#: The key every worker gets (tests that look for leaks plant their own).
CHAOS_KEY = "sk-chaos-0123456789abcdef"
#: micro service name of each fleet process kind.
SERVICE = {
    "router": "fleet-router",
    "ledger": "fleet-ledger",
    **{f"worker-{p}": f"fleet-worker-{p}" for p in PROVIDERS},
}
READY_TIMEOUT_S = 60.0


class ChaosFleet:
    """Use as ``async with ChaosFleet(...) as fleet``.

    Parameters:
        workdir: where nats-server stores its files and subprocesses write their logs.
        database_url: the ledger's database.
        prefix: subject prefix (unique per test).
        subprocesses: process names run as ``python -m`` children (``router``, ``ledger``,
            ``worker-<provider>``); the others run in this process.
        env: settings on top of ``CHAOS_ENV``.
        cut: provider -> marker: requests to that provider containing the marker get their
            answer cut in the middle (see ``Relay``).
        key: the API key every worker gets.
        without: process names not to start (e.g. a provider with no worker).
        key_files: subprocesses read the key from ``<KEY_VAR>_FILE`` instead of the variable.
    """

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        *,
        prefix: str,
        subprocesses=(),
        env=None,
        cut: dict[str, bytes] | None = None,
        key: str = CHAOS_KEY,
        without=(),
        key_files: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.nats = NatsServer(self.workdir / "nats")
        self.subprocesses = set(subprocesses)
        self.without = set(without)
        self.key_files = key_files
        self.env = {**CHAOS_ENV, **(env or {}), "DATABASE_URL": database_url, "FLEET_SUBJECT_PREFIX": prefix}
        self.cut = cut or {}
        self.key = key
        self.subjects = Subjects(prefix)
        self.relays: dict = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.services: dict = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._stack = contextlib.AsyncExitStack()
        self.nc = None
        self.js = None

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def names(self) -> list[str]:
        names = ["ledger", *(f"worker-{p}" for p in PROVIDERS), "router"]
        return [n for n in names if n not in self.without]

    async def __aenter__(self) -> ChaosFleet:
        from tests.chaos.relay import Relay

        self.nats.start()
        self.env["NATS_URL"] = self.nats.url
        for provider in PROVIDERS:
            url = await self._stack.enter_async_context(running_emulator(provider))
            self.relays[provider] = await Relay(urlsplit(url).port, cut_marker=self.cut.get(provider)).up()
        self.nc = await nats.connect(self.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        self.js = self.nc.jetstream()
        await asyncio.gather(*(self.start(name) for name in self.names()))
        return self

    async def __aexit__(self, *exc) -> None:
        running = set(self.services) | set(self.procs)
        for name in sorted(running, key=lambda n: ("router", "worker", "ledger").index(n.split("-")[0])):
            await self.stop(name)
        with contextlib.suppress(Exception):
            await self.nc.close()
        for relay in self.relays.values():
            await relay.down()
        await self._stack.aclose()
        self.nats.stop()

    # -- processes ------------------------------------------------------------------

    def provider_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.relays[provider].port}{BASE_PATH[provider]}"

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        key_file = self.workdir / "provider.key"
        if self.key_files:
            key_file.write_text(self.key + "\n")
        for provider, (url_var, key_var, _) in PROVIDER_ENV.items():
            env[url_var] = self.provider_url(provider)
            env.pop(key_var, None)
            env.pop(f"{key_var}_FILE", None)
            if self.key_files:
                env[f"{key_var}_FILE"] = str(key_file)
            else:
                env[key_var] = self.key
        return env

    async def start(self, name: str) -> None:
        """Start ``name`` and return once it answers its micro service ping."""
        if name in self.subprocesses:
            await self._spawn(name)
            return
        settings = self.settings
        if name == "router":
            service = Router(settings)
        elif name == "ledger":
            service = Ledger(settings)
        else:
            provider = name.removeprefix("worker-")
            endpoint = ProviderEndpoint(provider, self.provider_url(provider), Secret(self.key))
            service = Worker(settings, provider, endpoint=endpoint)
        await service.start()
        self.services[name] = service
        self._tasks[name] = asyncio.create_task(service.run())

    async def stop(self, name: str) -> None:
        """Stop ``name`` gracefully (SIGTERM for a subprocess)."""
        if name in self.procs:
            proc = self.procs.pop(name)
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            return
        service, task = self.services.pop(name, None), self._tasks.pop(name, None)
        if service is not None:
            await service.stop()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def kill(self, name: str) -> None:
        """SIGKILL a subprocess: no goodbye, no acks, nothing flushed."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    async def restart_nats(self) -> None:
        """Stop nats-server and start it again on the same port and store."""
        self.nats.stop()
        self.nats = NatsServer(self.nats.store_dir, port=self.nats.port).start()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("*.log"))

    def alive(self) -> dict[str, bool]:
        """Whether every process of the fleet still runs (none crashed)."""
        status = {n: not t.done() for n, t in self._tasks.items()}
        status.update({n: p.poll() is None for n, p in self.procs.items()})
        return status

    async def _spawn(self, name: str) -> None:
        module = {"router": ["fleet_router"], "ledger": ["fleet_ledger"]}.get(name)
        argv = [sys.executable, "-m", *(module or ["fleet_workers", "--provider", name.removeprefix("worker-")])]
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, env=self.process_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.procs[name] = proc
        await self.wait_ready(SERVICE[name], proc)

    async def wait_ready(self, service: str, proc: subprocess.Popen) -> None:
        """Until the micro service ``service`` of process ``proc`` answers a ping."""
        answered = asyncio.Event()

        async def on_reply(msg) -> None:
            try:
                pid = (msgspec.json.decode(msg.data).get("metadata") or {}).get("pid")
            except msgspec.DecodeError:  # a no-responders status, before the service is up
                return
            if str(pid) == str(proc.pid):
                answered.set()

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_reply)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while not answered.is_set():
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}:\n{self.log_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} (pid {proc.pid}) not ready after {READY_TIMEOUT_S}s")
                await self.nc.publish(f"$SRV.PING.{service}", b"", reply=inbox)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(answered.wait(), 0.25)
        finally:
            await sub.unsubscribe()
