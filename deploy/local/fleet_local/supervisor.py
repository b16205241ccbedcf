"""The supervisor: owns the fleet processes and restarts any that exits, with capped
exponential backoff (a Kubernetes pod's ``restartPolicy: Always``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from fleet_local.procs import RunDir, write_pid

log = logging.getLogger("fleet.supervisor")

#: A child that ran this long before exiting starts its backoff afresh.
STABLE_AFTER_S = 30.0
#: Restart delays: 0.5 s, 1 s, 2 s ... capped at 30 s.
BASE_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0
#: Time a fleet process gets between SIGTERM and SIGKILL.
GRACE_S = 10.0
#: Stop order: the gateway stops taking HTTP requests first, the router stops routing,
#: workers finish their calls while the emulators still answer, the ledger drains the
#: events last, then the emulators go.
_STOP_ORDER = ("gateway", "router", "worker", "ledger")


async def supervise(run: RunDir) -> None:
    """Run every process in fleet.json until SIGTERM/SIGINT, restarting any that exits;
    then stop them tier by tier (``_STOP_ORDER``, everything else last)."""
    procs = json.loads(run.file("fleet.json").read_text())["procs"]
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    log.info("supervising %s", ", ".join(p["name"] for p in procs))
    stops = {p["name"]: asyncio.Event() for p in procs}
    tasks = {p["name"]: asyncio.ensure_future(_keep_running(run, p, stops[p["name"]])) for p in procs}
    await signalled.wait()

    def tier(name: str) -> int:
        kind = name.split("-")[0]
        return _STOP_ORDER.index(kind) if kind in _STOP_ORDER else len(_STOP_ORDER)

    for level in sorted({tier(n) for n in tasks}):
        names = [n for n in tasks if tier(n) == level]
        for name in names:
            stops[name].set()
        await asyncio.gather(*(tasks[n] for n in names))
    log.info("all children stopped; supervisor exits")


async def _keep_running(run: RunDir, spec: dict[str, Any], stop: asyncio.Event) -> None:
    name, failures = spec["name"], 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            child = await _spawn(run, spec)
        except OSError as exc:  # e.g. the interpreter vanished: back off like a crash
            log.error("cannot start %s: %s", name, exc)
            failures += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), MAX_BACKOFF_S)
            continue
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await _stop_child(child, name)
            break
        stopping.cancel()
        failures = 0 if time.monotonic() - started >= STABLE_AFTER_S else failures + 1
        delay = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** max(failures - 1, 0))
        log.warning("%s (pid %d) exited with %s; restarting in %.1fs", name, child.pid, child.returncode, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    run.pid_file(name).unlink(missing_ok=True)


async def _spawn(run: RunDir, spec: dict[str, Any]) -> asyncio.subprocess.Process:
    with open(run.log(spec["name"]), "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(spec['argv'][1:])}\n".encode())
        out.flush()
        child = await asyncio.create_subprocess_exec(
            *spec["argv"], stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **spec.get("env", {})},  # e.g. its own FLEET_METRICS_PORT
            start_new_session=True,  # our SIGTERM is the only one it gets; `down` can find it alone
        )  # fmt: skip
    info = {k: spec[k] for k in ("service", "port", "metrics_port") if k in spec}
    write_pid(run, spec["name"], child.pid, **info)
    log.info("started %s (pid %d)", spec["name"], child.pid)
    return child


async def _stop_child(child: asyncio.subprocess.Process, name: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    try:
        await asyncio.wait_for(child.wait(), GRACE_S)
    except TimeoutError:
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", name, child.pid, GRACE_S)
        child.kill()
        await child.wait()
    log.info("stopped %s (pid %d, exit %s)", name, child.pid, child.returncode)
