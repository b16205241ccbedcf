"""What the fleet looks like now, for ``modelrouter status`` and ``modelrouter models``.

Read-only: the health board (KV bucket ``<STEM>_HEALTH``: availability and served context
window per model), the NATS micro services answering ``$SRV.PING`` (router, ledger,
``fleet-worker-<provider>``), and the JetStream consumers' backlogs (jobs waiting for the
router, dispatches waiting per provider). Nothing here creates a stream or a bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from fleet_shared.availability import KEY_PREFIX, WINDOW_PREFIX, Availability
from fleet_shared.registry import Registry
from fleet_shared.subjects import PROVIDERS, Subjects

#: How long a ``$SRV.PING`` round collects answers.
PING_WINDOW_S = 0.5

_availability = msgspec.json.Decoder(Availability)


async def ping_services(nc: NATS, window_s: float = PING_WINDOW_S) -> list[dict[str, Any]]:
    """Every micro service answering ``$SRV.PING`` within ``window_s`` (name, id, metadata)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[dict[str, Any]] = []
    try:
        await nc.publish("$SRV.PING", b"", reply=inbox)
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:  # nats TimeoutError: the window is over
                break
            with contextlib.suppress(ValueError):
                body = json.loads(msg.data)
                if isinstance(body, dict) and "name" in body:
                    found.append(body)
    finally:
        await sub.unsubscribe()
    return found


async def model_health(nc: NATS, subjects: Subjects, registry: Registry) -> dict[str, dict[str, Any]] | None:
    """Per registry model: phase (up, cooling, ramping, down), reason, until, served window;
    None when the fleet has no health board yet."""
    try:
        kv = await nc.jetstream().key_value(subjects.health_bucket)
    except (BucketNotFoundError, NotFoundError):
        return None
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for model in registry.models:
        value = Availability()
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(KEY_PREFIX + model)
            if entry.value:
                value = _availability.decode(entry.value)
        window = None
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(WINDOW_PREFIX + model)
            if entry.value and entry.value.isdigit():
                window = int(entry.value)
        out[model] = {
            "phase": value.phase(now),
            "reason": value.reason,
            "until": value.until or None,
            "admitted_share": value.admitted_share(now),
            "served_context_window": window,
        }
    return out


async def _backlog(nc: NATS, stream: str, durable: str) -> dict[str, int] | None:
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
    except NotFoundError:
        return None
    return {"waiting": info.num_pending or 0, "in_progress": info.num_ack_pending or 0}


async def fleet_status(nc: NATS, subjects: Subjects, registry: Registry) -> dict[str, Any]:
    """Services, workers and queue depth per provider, router backlog, model health."""
    services, health = await asyncio.gather(ping_services(nc), model_health(nc, subjects, registry))
    names = Counter(s["name"] for s in services)
    providers = {}
    for provider in PROVIDERS:
        providers[provider] = {
            "workers": names.get(f"fleet-worker-{provider}", 0),
            "queue": await _backlog(nc, subjects.dispatch_stream, f"worker-{provider}"),
            "models": [m for m, spec in registry.models.items() if spec.provider == provider],
        }
    return {
        "prefix": subjects.prefix,
        "services": dict(sorted(names.items())),
        "routers": names.get("fleet-router", 0),
        "ledgers": names.get("fleet-ledger", 0),
        "jobs_queue": await _backlog(nc, subjects.jobs_stream, "router-jobs"),
        "providers": providers,
        "models": health,
    }


def models_table(registry: Registry, health: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The registry (this client's models.toml / prices.toml) with each model's health."""
    rows = []
    for model_id, spec in registry.models.items():
        rows.append(
            {
                "id": model_id,
                "provider": spec.provider,
                "provider_model": spec.provider_model,
                "context_window": spec.context_window,
                "input_per_mtok": spec.input_per_mtok,
                "output_per_mtok": spec.output_per_mtok,
                "tokens_per_s": spec.tokens_per_s,
                "health": (health or {}).get(model_id, {}).get("phase", "unknown"),
                "health_reason": (health or {}).get(model_id, {}).get("reason", ""),
            }
        )
    return rows
