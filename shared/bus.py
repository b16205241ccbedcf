"""NATS connection and JetStream topology: the only place that knows stream settings.

Streams (names from ``Subjects``):
    JOBS      <p>.submit             work queue, discard-new, file storage, dedup window
    DISPATCH  <p>.dispatch.*         work queue; one durable consumer per provider
    ESCALATE  <p>.escalate.*         work queue; the router's consumer
    RESULTS   <p>.result.*           limits (kept for result_max_age_s), one per job id
    EVENTS    <p>.events.>           work queue; the ledger's consumer
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api
from nats.js.errors import BadRequestError

from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 120.0
MAX_QUEUE_MSGS = 1_000_000


async def connect(settings: Settings, *, name: str, **options: Any) -> NATS:
    """Connect with unbounded reconnects: a fleet process outlives NATS restarts."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        servers=[s.strip() for s in settings.nats_url.split(",")],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **options,
    )


def stream_configs(subjects: Subjects, settings: Settings) -> list[api.StreamConfig]:
    work = dict(
        retention=api.RetentionPolicy.WORK_QUEUE,
        discard=api.DiscardPolicy.NEW,
        storage=api.StorageType.FILE,
        duplicate_window=DEDUP_WINDOW_S,
        max_msgs=MAX_QUEUE_MSGS,
    )
    return [
        api.StreamConfig(name=subjects.jobs_stream, subjects=[subjects.submit], **work),
        api.StreamConfig(name=subjects.dispatch_stream, subjects=[subjects.dispatch_all], **work),
        api.StreamConfig(name=subjects.escalate_stream, subjects=[subjects.escalate_all], **work),
        api.StreamConfig(name=subjects.events_stream, subjects=[subjects.events_all], **work),
        api.StreamConfig(
            name=subjects.results_stream,
            subjects=[subjects.result_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=settings.result_max_age_s,
            max_msgs_per_subject=1,
            duplicate_window=DEDUP_WINDOW_S,
            allow_direct=True,
        ),
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects, settings: Settings) -> None:
    """Create or update every stream; safe to run from every process at start-up."""
    for config in stream_configs(subjects, settings):
        for attempt in range(20):
            try:
                try:
                    await js.add_stream(config)
                except BadRequestError:
                    await js.update_stream(config)
                break
            except Exception as exc:  # JetStream not ready yet (fresh server, leader election)
                if attempt == 19:
                    raise
                log.info("waiting for JetStream (%s)", exc)
                await asyncio.sleep(0.25)


async def ensure_pull_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subject: str,
    ack_wait_s: float,
    max_deliver: int,
    max_ack_pending: int,
) -> JetStreamContext.PullSubscription:
    """A durable, explicit-ack pull consumer shared by every process of one kind."""
    config = api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        filter_subject=filter_subject,
    )
    return await js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)
