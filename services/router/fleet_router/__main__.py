"""python -m fleet_router: run one router process (NATS_URL, FLEET_* settings)."""

from fleet_router.service import Router
from fleet_shared.config import Settings
from fleet_shared.runner import main

if __name__ == "__main__":
    main(lambda: Router(Settings.from_env()))
