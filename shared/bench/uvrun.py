"""``python -m fleet_shared.bench.uvrun MODULE [ARGS...]``: run a fleet entry point on uvloop.

The bench's ``--loop uvloop`` experiment: it measures what uvloop would give the fleet
without changing a line of service code (the event loop policy is set before the entry
point's ``asyncio.run`` creates its loop). Needs ``pip install uvloop``.
"""

from __future__ import annotations

import asyncio
import runpy
import sys


def main() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
