"""``python -m fleet_ledger``: run one ledger process until SIGTERM or SIGINT.

On either signal the ledger stops fetching, finishes the batch in hand, drains NATS and
exits 0. Settings come from the environment (see ``fleet_shared.config.Settings``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from fleet_ledger.service import Ledger
from fleet_shared.config import Settings


async def serve(settings: Settings) -> None:
    ledger = Ledger(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ledger.request_stop)
    await ledger.run()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(Settings.from_env()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
