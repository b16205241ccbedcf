"""``python -m fleet_ledger``: run one ledger process until SIGTERM or SIGINT.

On either signal the ledger stops fetching, finishes the batch in hand (or hands it back
while PostgreSQL is away), drains NATS and exits 0. Settings come from the environment
(see ``fleet_shared.config.Settings``); logging follows FLEET_LOG_LEVEL like every process.
"""

from __future__ import annotations

from fleet_ledger.service import Ledger
from fleet_shared.config import Settings
from fleet_shared.runner import main

if __name__ == "__main__":
    main(lambda: Ledger(Settings.from_env()))
