"""Publishing helpers shared by the router and the workers."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from fleet_shared.schema import Result, encode
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

#: Header carrying the core-NATS inbox of an ``llm.request`` caller through the fleet.
REPLY_TO_HEADER = "Fleet-Reply-To"
MSG_ID_HEADER = "Nats-Msg-Id"


async def js_publish(js: JetStreamContext, subject: str, payload: bytes, *, msg_id: str, attempts: int = 5):
    """Publish to a stream with de-duplication; retry no-responders (leader elections) with the same id."""
    for attempt in range(1, attempts + 1):
        try:
            return await js.publish(subject, payload, headers={MSG_ID_HEADER: msg_id})
        except (NoRespondersError, NatsTimeoutError, asyncio.TimeoutError):
            if attempt == attempts:
                raise
            await asyncio.sleep(0.1 * 2**attempt)


async def publish_result(
    nc: NATS, js: JetStreamContext, subjects: Subjects, result: Result, reply_to: str | None
) -> None:
    """Store the final Result (kept by job id), then answer a waiting requester if any."""
    payload = encode(result)
    await js_publish(js, subjects.result(result.job_id), payload, msg_id=f"result:{result.job_id}")
    if reply_to:
        await nc.publish(reply_to, payload)
