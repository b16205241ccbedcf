"""The fleet's web dashboard, served by the gateway: ``GET /dashboard`` (one self-contained
page: inline CSS and JS that draws its own SVG charts, no build step, nothing fetched from
elsewhere) and the JSON it polls, ``GET /dashboard/api/<panel>.json``.

Where each figure comes from (the gateway keeps no state of its own):
    overview, models, escalations, decisions   the ledger's reports over NATS
                                               (``<p>.analytics.<report>``): PostgreSQL's
                                               numbers, so the page agrees with the ledger
    health                                     the health board (the gateway's KV watch)
    queues                                     JetStream consumer info of the work queues
    budgets (in overview)                      the budgets bucket in NATS KV (routers' spend)

"Today" is the UTC day, as in the ledger and the budgets. With gateway keys configured the
JSON needs a key like the API does (the page asks for it once and keeps it in the tab's
sessionStorage); the page itself holds no data.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from fleet_gateway.errors import ApiError
from fleet_gateway.web_io import Context, context, json_response
from fleet_shared.budget import Spend, charges
from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.gateway.dashboard")

#: The page's charts of recent activity: this span, in buckets this wide.
WINDOW_S = 600.0
BUCKET_S = 10.0
#: How many of the newest decisions the page lists.
DECISIONS_SHOWN = 15
#: A ledger report slower than this is answered as unavailable (the page polls again).
LEDGER_TIMEOUT_S = 5.0
SECONDS_PER_DAY = 86_400

_spend_decoder = msgspec.json.Decoder(Spend)


def _page() -> bytes:
    return importlib.resources.files("fleet_gateway").joinpath("dashboard.html").read_bytes()


def today_start(now: float) -> float:
    return (now // SECONDS_PER_DAY) * SECONDS_PER_DAY


class DashboardData:
    """The figures behind each panel, read when the page asks."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings: Settings = ctx.settings.fleet
        self.subjects = Subjects(self.settings.subject_prefix)
        self._budgets_kv: KeyValue | None = None

    async def ledger(self, report: str, **query: Any) -> Any:
        """One ledger report.

        Raises:
            ApiError: 503 when no ledger answers (in time), or its database is down; 500 else.
        """
        body = msgspec.json.encode(query) if query else b""
        try:
            msg = await self.ctx.fleet.nc.request(self.subjects.analytics(report), body, timeout=LEDGER_TIMEOUT_S)
        except NoRespondersError:
            raise ApiError("unavailable", "no ledger is running to answer", code="no_ledger") from None
        except (NatsTimeoutError, TimeoutError):
            raise ApiError("unavailable", f"the ledger did not answer within {LEDGER_TIMEOUT_S:g}s") from None
        answer = msgspec.json.decode(msg.data)
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            kind = "unavailable" if error.get("code") == "unavailable" else "internal"
            raise ApiError(kind, f"ledger: {error.get('message', 'error')}", code=f"ledger_{error.get('code')}")
        return answer

    async def overview(self) -> dict[str, Any]:
        now = time.time()
        activity, budget = await asyncio.gather(
            self.ledger("activity", since=today_start(now), window_s=WINDOW_S, bucket_s=BUCKET_S, now=now),
            self.ledger("budget", daily_budget_usd=self.settings.daily_budget_usd, now=now),
        )
        return {"now": now, "activity": activity, "budget": budget, "budgets": await self.budgets(now)}

    async def models(self) -> dict[str, Any]:
        now = time.time()
        performance = await self.ledger("performance", since=today_start(now))
        models = []
        for model, spec in self.ctx.catalog.registry.models.items():
            row = performance.pop(model, None) or {"attempts": 0, "successes": 0, "total_cost": 0.0}
            models.append({"model": model, "provider": spec.provider, **row})
        # models the ledger saw that the registry no longer names
        models += [{"model": model, **row} for model, row in performance.items()]
        for row in models:
            row["failures"] = row["attempts"] - row["successes"]
        return {"since": today_start(now), "models": models}

    async def escalations(self) -> dict[str, Any]:
        since = today_start(time.time())
        return {"since": since, "paths": await self.ledger("escalations", since=since)}

    async def decisions(self) -> dict[str, Any]:
        return {"decisions": await self.ledger("decisions", limit=DECISIONS_SHOWN)}

    def health(self) -> dict[str, Any]:
        now = time.time()
        board = self.ctx.fleet.board
        models = []
        for model, spec in self.ctx.catalog.registry.models.items():
            availability = board.get(model) if board is not None else None
            phase = availability.phase(now) if availability else "unknown"
            models.append(
                {
                    "model": model,
                    "provider": spec.provider,
                    "phase": phase,
                    "reason": availability.reason if availability else "",
                    "until": availability.until if availability and phase in ("cooling", "ramping") else None,
                    "admitted_share": availability.admitted_share(now) if availability else None,
                }
            )
        return {"now": now, "models": models}

    async def queues(self) -> dict[str, Any]:
        js = self.ctx.fleet.nc.jetstream()
        s = self.subjects
        consumers: list[tuple[str, str, str, str | None]] = [("router: new jobs", s.jobs_stream, "router-jobs", None)]
        consumers.append(("router: escalations", s.escalate_stream, "router-escalations", None))
        consumers += [
            (f"worker: {p}", s.dispatch_stream, f"worker-{p}", p) for p in self.ctx.catalog.registry.providers
        ]

        async def one(label: str, stream: str, durable: str, provider: str | None) -> dict[str, Any]:
            row: dict[str, Any] = {"queue": label, "provider": provider, "stream": stream, "consumer": durable}
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                return {**row, "pending": None, "in_flight": None, "redelivered": None}
            return {
                **row,
                "pending": info.num_pending or 0,
                "in_flight": info.num_ack_pending or 0,
                "redelivered": info.num_redelivered or 0,
            }

        rows = await asyncio.gather(*(one(*c) for c in consumers))
        try:
            dead = (await js.stream_info(s.deadletter_stream)).state.messages
        except NotFoundError:
            dead = None
        return {"now": time.time(), "queues": rows, "deadletter": dead}

    async def budgets(self, now: float) -> list[dict[str, Any]]:
        """Each configured budget's spend this day / month, as the routers booked it in KV."""
        try:
            pairs = self.settings.budgets().every_scope()
        except (OSError, msgspec.ValidationError) as exc:
            log.warning("dashboard: budgets unreadable: %s", exc)
            return []
        if self._budgets_kv is None:
            try:
                self._budgets_kv = await self.ctx.fleet.nc.jetstream().key_value(self.subjects.budgets_bucket)
            except NotFoundError:
                return []  # no router has started yet
        out = []
        for charge in charges(pairs, now):
            spend = Spend()
            try:
                entry = await self._budgets_kv.get(charge.key)
                if entry.value:
                    spend = _spend_decoder.decode(entry.value)
            except NotFoundError:
                pass  # nothing spent in this period yet
            out.append(
                {
                    "scope": charge.scope,
                    "period": charge.period,
                    "limit_usd": charge.limit_usd,
                    "spent_usd": spend.spent_usd,
                    "committed_usd": spend.committed(now),
                }
            )
        return out


DATA = web.AppKey("dashboard_data", DashboardData)


def _data(request: web.Request) -> DashboardData:
    ctx = context(request)
    ctx.keys.caller(request.headers)  # raises 401 when keys are configured and none fits
    return request.app[DATA]


async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(),
        content_type="text/html",
        charset="utf-8",
        headers={"cache-control": "no-store", "content-security-policy": CSP},
    )


#: Nothing but the page's own inline code, and fetches back to the gateway.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"


def _json(body: Any) -> web.Response:
    return json_response(body, headers={"cache-control": "no-store"})


async def overview(request: web.Request) -> web.Response:
    return _json(await _data(request).overview())


async def models(request: web.Request) -> web.Response:
    return _json(await _data(request).models())


async def escalations(request: web.Request) -> web.Response:
    return _json(await _data(request).escalations())


async def decisions(request: web.Request) -> web.Response:
    return _json(await _data(request).decisions())


async def health(request: web.Request) -> web.Response:
    return _json(_data(request).health())


async def queues(request: web.Request) -> web.Response:
    return _json(await _data(request).queues())


def add_to(app: web.Application, ctx: Context) -> None:
    """Register the dashboard's routes on the gateway's app."""
    app[DATA] = DashboardData(ctx)
    app.add_routes(
        [
            web.get("/dashboard", page),
            web.get("/dashboard/api/overview.json", overview),
            web.get("/dashboard/api/models.json", models),
            web.get("/dashboard/api/escalations.json", escalations),
            web.get("/dashboard/api/decisions.json", decisions),
            web.get("/dashboard/api/health.json", health),
            web.get("/dashboard/api/queues.json", queues),
        ]
    )
