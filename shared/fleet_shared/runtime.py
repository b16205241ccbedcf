"""Process-level tuning of every fleet process (and of the benchmarks): the event loop and the GC.

uvloop: every service is event-loop bound (NATS frames, HTTP calls, asyncpg); uvloop
roughly halves the loop's own share of the CPU. ``FLEET_EVENT_LOOP=asyncio`` opts out.

GC: a worker at full speed makes thousands of provider calls a second (a router routes as
many jobs), each allocating a few hundred short-lived objects; with CPython's default generation-0 threshold (700) the
collector then runs hundreds of times a second over the same long-lived heap. Freezing
the start-up heap and raising the threshold cuts that to a few times a second (measured:
~15 % less CPU per call). Reference cycles are still collected, and not only when the
threshold is reached: CPython counts *net* allocations (objects made less objects freed),
so a process whose live heap is steady reaches 50,000 only every several minutes, while
reference cycles pile up in between. nats-py leaves one behind at every fetch that times
out on an idle consumer (the Task's exception's traceback holds the frame that holds the
Task, ~2.5 kB with its coroutines and frames); the router has several idle consumers, and
in a 10-minute soak its RSS grew ~8 MB that way before a collection came. So
``collect_young`` also collects the two young generations every ``YOUNG_COLLECTION_S``:
a pass over the objects made since the last one, well under a millisecond at these heap
sizes.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable

#: allocations between two generation-0 collections
GEN0_THRESHOLD = 50_000
#: Seconds between two collections of the young generations whatever the count.
YOUNG_COLLECTION_S = 5.0


def tune_gc() -> tuple[int, int, int]:
    """Tune the collector for this process; returns the thresholds to restore (``untune_gc``)."""
    gc.freeze()  # what start-up built is never garbage: keep the collector off it
    before = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, before[1], before[2])
    return before


def untune_gc(before: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*before)


async def collect_young(every_s: float = YOUNG_COLLECTION_S) -> None:
    """Collect generations 0 and 1 every ``every_s`` seconds, for ever (cancel to stop)."""
    while True:
        await asyncio.sleep(every_s)
        gc.collect(1)


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` when uvloop is installed and not opted out, else None
    (asyncio's default)."""
    if os.environ.get("FLEET_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def use_uvloop() -> bool:
    """Make new event loops uvloop ones when ``uvloop_factory`` has one; True if so."""
    factory = uvloop_factory()
    if factory is None:
        return False
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
