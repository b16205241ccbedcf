"""Schema migrations: numbered .sql files shipped in this package, applied once, in order.

Every ledger process runs ``migrate`` at start-up. The whole run holds a transaction-level
advisory lock, so processes starting together apply each file exactly once: the others
wait on the lock, then find the versions already recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

#: Advisory lock key of the ledger's migrations (any constant shared by all ledger versions).
MIGRATION_LOCK_KEY = 0x6C65_6467_6572  # "ledger"

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every packaged migration, sorted by file name (``0001_init`` ...)."""
    folder = resources.files("fleet_ledger") / "migrations"
    found = [(p.name.removesuffix(".sql"), p.read_text("utf-8")) for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied by this call.

    Raises:
        asyncpg.PostgresError: a migration failed; nothing of this run is kept.
    """
    applied: list[str] = []
    async with conn.transaction():
        # Lock before touching anything, even CREATE TABLE IF NOT EXISTS: run concurrently
        # without the lock, that statement itself can fail on the catalog's unique index.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_VERSIONS)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    return applied
