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

Holding many calls in flight changes the picture: a worker waiting on a 1.5 s provider with
thousands of calls open keeps every call's objects (its task and coroutine frames, the
HTTP request and response, timers) alive across collections. Its net allocation count then
swings by thousands of calls' worth of objects as calls start in bursts and end, so a
threshold below that swing runs generation-0 collections that find nothing and promote
everything they walk, then generation-1 ones that walk it again (measured: a quarter of such
a worker's CPU). So a process that knows how much it holds raises the threshold above it
(``tune_gc(gen0_threshold)``). And a timed collection walks every young object still alive,
all the calls in flight of the last seconds: ~0.15 s for a worker with ~2,000 open, every 5 s.
So ``collect_young`` waits at least ``YOUNG_COLLECTION_COST`` times as long as its last
collection took (1 % of the process's time at most), up to ``YOUNG_COLLECTION_MAX_S``; an idle
process's collections take well under a millisecond and still come every ``YOUNG_COLLECTION_S``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable

#: allocations between two generation-0 collections
GEN0_THRESHOLD = 50_000
#: Seconds between two collections of the young generations whatever the count ...
YOUNG_COLLECTION_S = 5.0
#: ... or this many times as long as the last one took ...
YOUNG_COLLECTION_COST = 100
#: ... but never more than this.
YOUNG_COLLECTION_MAX_S = 60.0


def tune_gc(gen0_threshold: int = GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Tune the collector for this process; returns the thresholds to restore (``untune_gc``).

    ``gen0_threshold``: allocations between two generation-0 collections (never below
    ``GEN0_THRESHOLD``): above what the process holds at once, when it holds much."""
    gc.freeze()  # what start-up built is never garbage: keep the collector off it
    before = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gen0_threshold), before[1], before[2])
    return before


def untune_gc(before: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*before)


async def collect_young(every_s: float = YOUNG_COLLECTION_S, max_s: float = YOUNG_COLLECTION_MAX_S) -> None:
    """Collect generations 0 and 1 every ``every_s`` seconds, for ever (cancel to stop); less
    often while collections are slow (``next_young_wait_s``)."""
    wait_s = every_s
    while True:
        await asyncio.sleep(wait_s)
        started = time.perf_counter()
        gc.collect(1)
        wait_s = next_young_wait_s(time.perf_counter() - started, every_s=every_s, max_s=max_s)


def next_young_wait_s(
    took_s: float, *, every_s: float = YOUNG_COLLECTION_S, max_s: float = YOUNG_COLLECTION_MAX_S
) -> float:
    """The wait before the next timed collection, after one that took ``took_s`` (the event
    loop waited for it): ``YOUNG_COLLECTION_COST`` times that, within [every_s, max_s]."""
    return min(max_s, max(every_s, took_s * YOUNG_COLLECTION_COST))


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
