"""Process tuning (``fleet_shared.runtime``): reference cycles are collected on a timer, not
only when the raised generation-0 threshold is reached."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from fleet_shared.runtime import (
    GEN0_THRESHOLD,
    YOUNG_COLLECTION_COST,
    YOUNG_COLLECTION_MAX_S,
    YOUNG_COLLECTION_S,
    collect_young,
    next_young_wait_s,
    tune_gc,
    untune_gc,
)

pytestmark = pytest.mark.anyio


class _Node:
    """An object in a reference cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_collect_young_frees_a_cycle_the_threshold_would_keep() -> None:
    before = tune_gc()
    gc.disable()  # no automatic collection at all: only collect_young can free the cycle
    try:
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        freed = asyncio.Event()
        node = _Node()
        alive = weakref.ref(node)
        weakref.finalize(node, freed.set)
        del node
        assert alive() is not None  # refcounting alone does not free a cycle
        collector = asyncio.create_task(collect_young(0.01))
        try:
            await asyncio.wait_for(freed.wait(), 30)
        finally:
            collector.cancel()
        assert alive() is None
    finally:
        gc.enable()
        untune_gc(before)


async def test_a_timed_out_nats_fetch_leaves_a_cycle_behind(nats_url: str) -> None:
    """Why the timer exists: nats-py's fetch that times out leaves its Task in a cycle with
    its exception's traceback (seen in the router's heap); if nats-py stops doing so, this
    test says the timer may go."""
    import nats
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js import api

    nc = await nats.connect(nats_url)
    gc.disable()
    try:
        js = nc.jetstream()
        stream = f"CYCLE{id(nc)}"
        await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{stream.lower()}.x"]))
        sub = await js.pull_subscribe(f"{stream.lower()}.x", durable="idle", stream=stream)
        gc.collect()
        timed_out = False
        try:
            await sub.fetch(1, timeout=0.05)
        except NatsTimeoutError:
            timed_out = True  # the exception is not kept: what remains is only what cycles hold
        assert timed_out
        for _ in range(10):  # let the cancelled inner tasks finish (loop turns, not time)
            await asyncio.sleep(0)
        assert gc.collect() > 0  # the timed-out fetch left unreachable cycles
        await js.delete_stream(stream)
    finally:
        gc.enable()
        await nc.close()


def test_timed_collections_come_less_often_while_they_are_slow() -> None:
    assert next_young_wait_s(0.0005) == YOUNG_COLLECTION_S  # an idle process's: every 5 s
    assert next_young_wait_s(0.15) == pytest.approx(0.15 * YOUNG_COLLECTION_COST)  # 1 % of the time
    assert next_young_wait_s(3.0) == YOUNG_COLLECTION_MAX_S
    assert next_young_wait_s(0.15, every_s=0.01, max_s=1.0) == 1.0


def test_a_process_holding_much_raises_its_threshold_above_it() -> None:
    before = tune_gc(2_000_000)
    try:
        assert gc.get_threshold()[0] == 2_000_000
    finally:
        untune_gc(before)
    before = tune_gc(10)  # never below the fleet's default
    try:
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
    finally:
        untune_gc(before)
