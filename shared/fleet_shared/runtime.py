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
(``tune_gc(gen0_threshold)``), and ``collect_young`` waits longer after each timed collection
that found no garbage, up to ``YOUNG_COLLECTION_MAX_S`` (back to ``YOUNG_COLLECTION_S`` as soon
as one finds some).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable

#: allocations between two generation-0 collections
GEN0_THRESHOLD = 50_000
#: Seconds between two collections of the young generations whatever the count ...
YOUNG_COLLECTION_S = 5.0
#: ... and at most, once collections in a row found no garbage (each waits twice as long).
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
    """Collect generations 0 and 1 every ``every_s`` seconds, for ever (cancel to stop);
    after a collection that found no garbage, wait twice as long as before (``max_s`` at most):
    it only walked live objects, which a process with many calls in flight has plenty of."""
    wait_s = every_s
    while True:
        await asyncio.sleep(wait_s)
        wait_s = next_young_wait_s(wait_s, gc.collect(1), every_s=every_s, max_s=max_s)


def next_young_wait_s(
    wait_s: float, found: int, *, every_s: float = YOUNG_COLLECTION_S, max_s: float = YOUNG_COLLECTION_MAX_S
) -> float:
    """The wait before the next timed collection, after one that waited ``wait_s`` and found
    ``found`` unreachable objects."""
    return every_s if found else min(max_s, 2 * wait_s)


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
