"""``POST /v1/feedback``: a user's score of a job's answer, ``{job_id, score, comment}``.

The body is validated here (``fleet_shared.schema.Feedback``: job_id a job id, score 1-5,
comment optional) and published on <p>.feedback through JetStream, so it is stored (the
FEEDBACK stream) before the gateway answers 202 with the message id. The ledger writes it
once per message id. Either key kind (``Authorization: Bearer`` or ``x-api-key``) is
accepted; a bad body is a 400 in OpenAI's error shape naming the field.
"""

from __future__ import annotations

import uuid

from aiohttp import web
from nats.errors import Error as NatsError

from fleet_gateway.errors import ApiError
from fleet_gateway.web_io import context, json_response, read_json
from fleet_shared.publish import MSG_ID_HEADER
from fleet_shared.schema import encode, feedback_decoder

#: How long JetStream has to store the message before the request fails with a 503.
PUBLISH_TIMEOUT_S = 5.0


async def feedback(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.keys.caller(request.headers)
    body = await read_json(request, feedback_decoder)
    msg_id = f"feedback-{uuid.uuid4().hex}"
    fleet = ctx.fleet
    try:
        await fleet.nc.jetstream().publish(
            fleet.subjects.feedback, encode(body), headers={MSG_ID_HEADER: msg_id}, timeout=PUBLISH_TIMEOUT_S
        )
    except (NatsError, TimeoutError) as exc:
        raise ApiError("unavailable", f"the feedback could not be stored: {exc}", code="not_stored") from None
    return json_response(
        {"id": msg_id, "object": "feedback", "job_id": body.job_id, "score": body.score, "status": "accepted"},
        status=202,
    )
