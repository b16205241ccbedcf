"""Processes the local cluster started: run dir, pid files that survive pid reuse, stopping.

A pid file holds the pid *and* the process's start time from /proc, so a recycled pid is
never taken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

_REPO = Path(__file__).resolve().parent.parent
#: Stopped in this order by `down`; everything else (the fleet) goes between.
_FIRST, _LAST = ("supervisor",), ("postgres", "nats")


class ClusterError(RuntimeError):
    """`up` could not bring the fleet up; the message says what and shows the log tail."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def default(cls) -> RunDir:
        base = _REPO if (_REPO / "pyproject.toml").exists() else Path.cwd()
        return cls(Path(os.environ.get("FLEET_RUN_DIR") or base / ".run").resolve())

    def __post_init__(self) -> None:
        for sub in ("logs", "pids"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.json"

    def file(self, name: str) -> Path:
        return self.root / name


# -- our processes -----------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()  # the command name may hold spaces and parens
    return fields[0], fields[19]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Alive and, when ``start`` is given, the very process that was recorded."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own dead child
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and (start is None or stat[1] == start)


def write_pid(run: RunDir, name: str, pid: int, **info: Any) -> None:
    stat = _proc_stat(pid)
    record = {"pid": pid, "start": stat[1] if stat else None, **info}
    tmp = run.pid_file(name).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(run.pid_file(name))  # atomic: a reader never sees half a pid file


def read_pids(run: RunDir) -> dict[str, dict[str, Any]]:
    """Every pid file, in start order: supervisor, servers, emulators, services."""
    found = {}
    for path in (run.root / "pids").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):  # removed or half-written meanwhile
            found[path.stem] = json.loads(path.read_text())
    rank = {n: i for i, n in enumerate(_FIRST + _LAST[::-1] + ("emulator", "ledger", "router", "worker"))}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0].split("-")[0], 99), kv[0])))


def _alive(info: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    if not info:
        return False
    return pid_alive(info["pid"], info.get("start"))


def stop_processes(infos: list[dict[str, Any]], grace_s: float) -> None:
    """Send each live one its stop signal (default SIGTERM), wait ``grace_s``, then SIGKILL.

    Raises:
        ClusterError: some process outlived SIGKILL (e.g. stuck in the kernel).
    """
    live = _signal([i for i in infos if _alive(i)], None)
    live = _wait_gone(live, grace_s)
    live = _wait_gone(_signal(live, signal.SIGKILL), 5.0)
    if live:
        raise ClusterError(f"could not stop pids {[i['pid'] for i in live]}")


def _signal(infos: list[dict[str, Any]], sig: signal.Signals | None) -> list[dict[str, Any]]:
    for info in infos:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], sig or signal.Signals[info.get("signal", "SIGTERM")])
    return infos


def _wait_gone(infos: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    """Poll until none is alive or ``timeout_s`` passed; the ones still alive."""
    deadline = time.monotonic() + timeout_s
    while infos and time.monotonic() < deadline:
        time.sleep(0.05)
        infos = [i for i in infos if _alive(i)]
    return infos


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
