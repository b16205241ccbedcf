"""``main()`` for every fleet process: logging, signals, and a clean stop.

A service is an async context manager with ``run()``; SIGTERM or SIGINT stops fetching,
lets in-flight work finish (the service's ``stop``), drains NATS and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from fleet_shared.runtime import GEN0_THRESHOLD, collect_young, tune_gc, use_uvloop


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("FLEET_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def serve(service: Any) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    collector = asyncio.create_task(collect_young())
    try:
        await _serve(service, stop)
    finally:
        collector.cancel()


async def _serve(service: Any, stop: asyncio.Event) -> None:
    async with service:
        run = asyncio.create_task(service.run())
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if run in done:
            run.result()  # a crashed main loop exits non-zero, so a supervisor restarts it
        else:
            logging.getLogger(__name__).info("signal received: stopping")
            await service.stop()  # stop fetching, let in-flight work finish
            await asyncio.wait({run}, timeout=30)
            run.cancel()


def main(make_service: Callable[[], Any], *, gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """``gen0_threshold``: see ``fleet_shared.runtime.tune_gc``."""
    configure_logging()
    use_uvloop()
    tune_gc(gen0_threshold)
    asyncio.run(serve(make_service()))
