"""Helpers for the client tests (seed API, CLI, batch): a database of a test's own, the
environment a client process needs, and running the CLI in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys

from fleet_shared.config import Settings
from tests.databases import fresh_database  # noqa: F401 (the client tests take it from here)


def client_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a client process talking to the fleet of ``settings``."""
    env = {**os.environ, "NATS_URL": settings.nats_url, "FLEET_SUBJECT_PREFIX": settings.subject_prefix}
    env.pop("FLEET_DAILY_BUDGET_USD", None)
    env.update(extra)
    return env


class CliRun:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliRun(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


async def cli(*argv: str, settings: Settings, stdin_text: str | None = None) -> CliRun:
    """``modelrouter ARGV`` in a thread of this process (its own event loop, so the test's
    in-process fleet keeps running), with stdout / stderr captured."""
    from modelrouter.cli import main

    connection = ["--nats-url", settings.nats_url, "--prefix", settings.subject_prefix]
    full = [*argv, *connection] if "--help" not in argv else list(argv)

    def run() -> CliRun:
        out, err = io.StringIO(), io.StringIO()
        stdin = sys.stdin
        if stdin_text is not None:
            sys.stdin = io.StringIO(stdin_text)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(full)
        finally:
            sys.stdin = stdin
        return CliRun(code, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(run)


async def cli_process(*argv: str, settings: Settings, **options) -> asyncio.subprocess.Process:
    """``modelrouter ARGV`` started as its own process (the console script's module), with
    the fleet's NATS_URL and prefix in its environment; stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelrouter",
        *argv,
        env=client_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **options,
    )
