"""The gateway process: an aiohttp server whose handlers turn HTTP requests into Jobs.

``Gateway`` is the service ``fleet_shared.runner`` runs (``python -m fleet_gateway``):
``async with Gateway(settings)`` connects to NATS, registers the ``fleet-gateway`` micro
service (``make status`` pings it) and starts listening; ``run`` waits until ``stop``,
which stops accepting, lets requests in flight finish (``SHUTDOWN_GRACE_S``), then
drains NATS. It keeps no state of its own: run as many as you like behind a balancer.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from fleet_gateway import anthropic_messages, batches, dashboard, feedback, openai_chat, openai_responses
from fleet_gateway.access import KeyRing
from fleet_gateway.errors import ApiError
from fleet_gateway.fleet import FleetLink
from fleet_gateway.jobs import Catalog
from fleet_gateway.ops import serve_ops
from fleet_gateway.settings import GatewaySettings
from fleet_gateway.web_io import CONTEXT, JOB_ID, Context, json_response
from fleet_shared.ops_http import OpsServer

log = logging.getLogger("fleet.gateway")

#: Requests in flight get this long to finish on SIGTERM (within the supervisor's 10 s).
SHUTDOWN_GRACE_S = 8.0
#: OpenAI endpoints the fleet does not serve: 501, not 404, so a client knows it asked right.
NOT_IMPLEMENTED = (
    "/v1/embeddings",
    "/v1/completions",
    "/v1/images",
    "/v1/audio",
    "/v1/moderations",
    "/v1/fine_tuning",
    "/v1/assistants",
    "/v1/threads",
    "/v1/vector_stores",
    "/v1/uploads",
    "/v1/realtime",
)


def api_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_response(request: web.Request, error: ApiError) -> web.Response:
    headers = error.headers()
    job_id = request.get(JOB_ID)
    if job_id:
        headers["x-request-id"] = job_id
    return json_response(error.body(api_of(request.path)), status=error.status, headers=headers)


def _translate(request: web.Request, exc: web.HTTPException) -> ApiError:
    route = f"{request.method} {request.path}"
    if exc.status == 404:
        if request.path.startswith(NOT_IMPLEMENTED):
            return ApiError(
                "not_implemented", f"{route} is not served by this gateway (chat only)", code="not_implemented"
            )
        return ApiError("not_found", f"Unknown request URL: {route}", code="unknown_url")
    if exc.status == 405:
        return ApiError("method_not_allowed", f"{route} is not allowed", code="method_not_allowed")
    if exc.status == 413:
        return ApiError("too_large", "the request body is too large")
    return ApiError("invalid_request", exc.reason or "bad request")


@web.middleware
async def errors_in_api_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answered in the called API's error shape; never a traceback."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(request, error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, _translate(request, exc))
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(request, ApiError("internal", "internal error in the gateway", code="internal_error"))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def create_app(context: Context) -> web.Application:
    app = web.Application(middlewares=[errors_in_api_shape], client_max_size=context.settings.max_body_bytes)
    app[CONTEXT] = context
    app[batches.STORE] = batches.BatchStore()
    app.add_routes(
        [
            web.post("/v1/chat/completions", openai_chat.chat_completions),
            web.get("/v1/models", openai_chat.list_models),
            web.get("/v1/models/{model:.+}", openai_chat.get_model),
            web.post("/v1/responses", openai_responses.responses),
            web.post("/v1/messages", anthropic_messages.messages),
            web.post("/v1/messages/count_tokens", anthropic_messages.count_tokens),
            web.post("/v1/feedback", feedback.feedback),
            web.get("/healthz", healthz),
            *batches.routes(),
        ]
    )
    dashboard.add_to(app, context)
    return app


class Gateway:
    """One gateway process. ``url`` is where it listens once started."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.fleet = FleetLink(settings.fleet)
        self.url = ""
        #: /metrics, /healthz, /readyz on FLEET_METRICS_PORT (None: off)
        self.ops: OpsServer | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> Gateway:
        await self.fleet.__aenter__()
        try:
            self.ops = await serve_ops(self.settings.fleet, self.fleet)
            context = Context(
                settings=self.settings,
                fleet=self.fleet,
                keys=KeyRing(self.settings.keys),
                catalog=Catalog(self.settings.fleet.registry()),
            )
            self._runner = web.AppRunner(
                create_app(context),
                access_log=None,
                handler_cancellation=True,  # a client that hangs up cancels its handler
                keepalive_timeout=self.settings.keepalive_timeout_s,
                shutdown_timeout=SHUTDOWN_GRACE_S,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        keys = "open (loopback only, no keys)" if not self.settings.keys else f"{len(self.settings.keys)} keys"
        log.info("gateway listening on %s (%s)", self.url, keys)
        print(f"gateway listening on {self.url}", flush=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.ops is not None:
            await self.ops.stop()
        await self.fleet.__aexit__(None, None, None)
