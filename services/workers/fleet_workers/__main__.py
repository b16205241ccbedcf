"""python -m fleet_workers --provider P: run one worker process for provider P."""

import argparse

from fleet_shared.config import Settings
from fleet_shared.runner import main
from fleet_shared.subjects import PROVIDERS
from fleet_workers.service import Worker, gen0_threshold

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fleet_workers")
    parser.add_argument(
        "--provider", required=True, help=f"{', '.join(PROVIDERS)}, or a [providers.<name>] of the models file"
    )
    parser.add_argument("--concurrency", type=int, help="calls in flight (default FLEET_WORKER_CONCURRENCY)")
    args = parser.parse_args()
    overrides = {"worker_concurrency": args.concurrency} if args.concurrency else {}
    settings = Settings.from_env(**overrides)
    main(lambda: Worker(settings, args.provider), gen0_threshold=gen0_threshold(settings))
