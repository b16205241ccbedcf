"""Figures read at scrape time rather than counted as they happen.

Prometheus pulls; a figure that lives elsewhere (a consumer's lag in JetStream, a model's
phase on the health board, which moves with the clock) is read when it is scraped, so no
background task polls when nobody looks and a scrape is never older than its own reads.
Each source is registered with ``FleetMetrics.add_source`` and run by ``refresh()``.

Several processes of one kind report the same consumer: aggregate with ``max by (stream,
consumer)`` (the dashboard and alert rules in deploy/ do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from nats.js import JetStreamContext

from fleet_shared.availability import HealthBoard
from fleet_shared.budget import BudgetBook, charges
from fleet_shared.metrics import FleetMetrics, Source


def jetstream_source(
    metrics: FleetMetrics,
    js: JetStreamContext,
    *,
    consumers: Sequence[tuple[str, str]],
    streams: Sequence[str] = (),
) -> Source:
    """Lag, ack-pending and redelivered counts of each ``(stream, durable)`` consumer, and the
    message count of each of ``streams`` (e.g. the dead-letter stream).

    A consumer or stream that does not exist (yet) raises: the whole source counts as failed
    for this scrape and its figures stay as they were.
    """

    async def consumer(stream: str, durable: str) -> None:
        info = await js.consumer_info(stream, durable)
        metrics.set_consumer(
            stream,
            durable,
            pending=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
        )

    async def stream(name: str) -> None:
        info = await js.stream_info(name)
        metrics.set_stream(name, messages=info.state.messages)

    async def refresh() -> None:
        await asyncio.gather(*(consumer(s, d) for s, d in consumers), *(stream(s) for s in streams))

    return refresh


def health_source(metrics: FleetMetrics, board: HealthBoard, models: Sequence[str]) -> Source:
    """Each model's phase (up / ramping / cooling / down) and admitted share, from the
    process's live copy of the health board (no NATS round trip)."""

    async def refresh() -> None:
        now = time.time()
        for model in models:
            availability = board.get(model)
            metrics.set_model_health(
                model, phase=availability.phase(now), admitted_share=availability.admitted_share(now)
            )

    return refresh


def budget_source(metrics: FleetMetrics, book: BudgetBook) -> Source:
    """The fleet's daily budget, today's spend and what is left (open holds set aside), from
    the process's live copy of the budgets bucket (no NATS round trip). Nothing is set while
    the fleet has no daily limit."""

    async def refresh() -> None:
        now = time.time()
        limit = book.config.fleet
        if limit.daily_usd is None:
            return
        daily = [c for c in charges([("fleet", limit)], now) if c.period.startswith("d")]
        spend = book.values.get(daily[0].key) if daily else None
        left = book.remaining([("fleet", limit)], now).get("fleet", limit.daily_usd)
        metrics.record_budget(
            spent_usd=spend.spent_usd if spend else 0.0, daily_budget_usd=limit.daily_usd, remaining_usd=left
        )

    return refresh
