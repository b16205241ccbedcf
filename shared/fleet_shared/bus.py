"""NATS connection and JetStream topology: the only place that knows stream settings.

Streams (names from ``Subjects``):
    JOBS        <p>.submit             work queue, discard-new, file storage, dedup window
    DISPATCH    <p>.dispatch.*         work queue; one durable consumer per provider
    ESCALATE    <p>.escalate.*         work queue; the router's consumer
    RESULTS     <p>.result.*           limits (kept for result_max_age_s), one per job id
    EVENTS      <p>.events.>           work queue; the ledger's consumer
    ADVISORIES  $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<JOBS|DISPATCH|ESCALATE>.*
                                       work queue; the router's dead-letter handler
    DEADLETTER  <p>.deadletter.<stream>  limits; what was given up, kept for inspection

Consumers are durable, explicit-ack pull consumers whose redeliveries back off
(``redelivery_backoff_s``); ``ensure_pull_consumer`` returns a self-repairing ``PullSource``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from fleet_shared.config import Settings
from fleet_shared.pull import PullSource
from fleet_shared.ratelimit import BUCKET_TTL_S as RATES_TTL_S
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

#: Window in which a second publish with the same Nats-Msg-Id is dropped (seconds).
DEDUP_WINDOW_S = 120.0
#: Work queues refuse new messages (discard-new) beyond this many.
MAX_QUEUE_MSGS = 1_000_000
#: Redelivery delays grow from ack_wait by this factor per delivery, up to the cap.
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 300.0
#: Entries in a backoff list (the last one repeats for later deliveries).
BACKOFF_STEPS = 6


async def connect(settings: Settings, *, name: str, **options: Any) -> NATS:
    """Connect with unbounded reconnects (a fleet process outlives NATS restarts) and the
    credentials in ``settings`` (user/password, token, creds file, nkey seed, TLS)."""

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
        **credentials(settings),
        **options,
    )


def credentials(settings: Settings) -> dict[str, Any]:
    """nats.connect() keyword arguments for the configured credentials. Secrets are passed
    as callbacks, so the client object never holds them as plain attributes."""
    out: dict[str, Any] = {}
    if settings.nats_user:
        out["user"] = settings.nats_user
    if settings.nats_password:
        out["password"] = settings.nats_password.reveal
    if settings.nats_token:
        out["token"] = settings.nats_token.reveal
    if settings.nats_creds:
        out["user_credentials"] = settings.nats_creds
    if settings.nats_nkey_seed:
        out["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_tls_ca or settings.nats_tls_cert:
        out["tls"] = tls_context(settings)
    return out


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the server against NATS_TLS_CA (else the system CAs); present a client
    certificate when NATS_TLS_CERT is set."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca)
    if settings.nats_tls_cert:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


def stream_configs(subjects: Subjects, settings: Settings) -> list[api.StreamConfig]:
    # two templates, each stream a copy with its name and subjects (replace() keeps the typing)
    work = api.StreamConfig(
        retention=api.RetentionPolicy.WORK_QUEUE,
        discard=api.DiscardPolicy.NEW,
        storage=api.StorageType.FILE,
        duplicate_window=DEDUP_WINDOW_S,
        max_msgs=MAX_QUEUE_MSGS,
        num_replicas=settings.stream_replicas,
    )
    kept = api.StreamConfig(
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=DEDUP_WINDOW_S,
        max_age=settings.result_max_age_s,
        num_replicas=settings.stream_replicas,
    )
    advisories = [subjects.max_deliveries_advisory(s) for s in subjects.redelivered_streams]
    return [
        replace(work, name=subjects.jobs_stream, subjects=[subjects.submit]),
        replace(work, name=subjects.dispatch_stream, subjects=[subjects.dispatch_all]),
        replace(work, name=subjects.escalate_stream, subjects=[subjects.escalate_all]),
        replace(work, name=subjects.events_stream, subjects=[subjects.events_all]),
        replace(work, name=subjects.advisories_stream, subjects=advisories),
        replace(
            kept,
            name=subjects.results_stream,
            subjects=[subjects.result_all],
            max_msgs_per_subject=1,
            allow_direct=True,
        ),
        replace(kept, name=subjects.deadletter_stream, subjects=[subjects.deadletter_all]),
        replace(kept, name=subjects.feedback_stream, subjects=[subjects.feedback]),
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects, settings: Settings) -> None:
    """Create or update every stream and KV bucket; safe to run from every process at start-up."""
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
    await ensure_buckets(js, subjects, settings)


#: Versions of each configuration key kept (``modelrouter rules history`` / ``revert``).
CONFIG_HISTORY = 16


def bucket_configs(subjects: Subjects, settings: Settings) -> list[api.KeyValueConfig]:
    """The fleet's KV buckets (history 1; see ``fleet_shared.kv``), replicated like the streams."""
    replicas = settings.stream_replicas
    return [
        api.KeyValueConfig(bucket=subjects.health_bucket, history=1, replicas=replicas),
        api.KeyValueConfig(bucket=subjects.leases_bucket, history=1, replicas=replicas),
        api.KeyValueConfig(bucket=subjects.rates_bucket, history=1, ttl=RATES_TTL_S, replicas=replicas),
        # no TTL: a period's spend must outlive any quiet spell (keys name their day or month)
        api.KeyValueConfig(bucket=subjects.budgets_bucket, history=1, replicas=replicas),
        # history: ``modelrouter rules revert`` goes back to an earlier version of the rules
        api.KeyValueConfig(bucket=subjects.config_bucket, history=CONFIG_HISTORY, replicas=replicas),
    ]


async def ensure_buckets(js: JetStreamContext, subjects: Subjects, settings: Settings) -> None:
    """Create every KV bucket, so that ``kv.open_bucket`` binds to it with these settings; a
    bucket created earlier with another replica count is re-replicated (its stream updated)."""
    for config in bucket_configs(subjects, settings):
        try:
            await js.create_key_value(config)
        except BadRequestError:  # exists with another configuration
            info = await js.stream_info(f"KV_{config.bucket}")
            if info.config.num_replicas != config.replicas:
                await js.update_stream(replace(info.config, num_replicas=config.replicas))


def redelivery_backoff_s(ack_wait_s: float, max_deliver: int) -> list[float] | None:
    """Delays before each redelivery: ack_wait, then growing by BACKOFF_FACTOR, capped.

    JetStream takes the first entry as the ack wait, and wants fewer entries than
    max_deliver; None when only one delivery is allowed or deliveries are unlimited.
    """
    if max_deliver < 0:
        # nats-server 2.9 refuses a backoff list unless max_deliver > its length
        return None
    steps = min(BACKOFF_STEPS, max_deliver - 1)
    if steps < 1:
        return None
    return [min(BACKOFF_CAP_S, max(ack_wait_s, ack_wait_s * BACKOFF_FACTOR**i)) for i in range(steps)]


def consumer_config(
    *, durable: str, filter_subject: str | None, ack_wait_s: float, max_deliver: int, max_ack_pending: int
) -> api.ConsumerConfig:
    """A durable, explicit-ack consumer whose redeliveries back off; ``max_deliver=-1``
    means never give up (the ledger: its records must all land)."""
    return api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        backoff=redelivery_backoff_s(ack_wait_s, max_deliver),
        max_ack_pending=max_ack_pending,
        filter_subject=filter_subject,
    )


async def ensure_pull_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subject: str | None,
    ack_wait_s: float,
    max_deliver: int,
    max_ack_pending: int,
    stall_check_s: float = 10.0,
) -> PullSource:
    """Create (or update) a durable pull consumer shared by every process of one kind and
    return its self-repairing subscription.

    Parameters:
        max_ack_pending: messages in flight across every process of this kind; size it
            to their summed concurrency (a process only fetches what it can start).
    """
    config = consumer_config(
        durable=durable,
        filter_subject=filter_subject,
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    return await PullSource(js, stream=stream, config=config, stall_check_s=stall_check_s).open()
