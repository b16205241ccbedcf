"""RouterAnalytics over NATS request-reply: <p>.analytics.<report>, as endpoints of the
ledger's micro service (so ``$SRV.INFO`` lists them; queue group ``fleet-ledger`` spreads
requests over the ledger processes).

Request: an optional JSON object (``AnalyticsQuery``); an empty body means the defaults.
Reply: the report as JSON, or ``{"error": {"code", "message"}}`` (plus the micro error
headers, code 400 / 503 / 500).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from nats.micro.request import Request
from nats.micro.service import Service

from fleet_ledger.analytics import SECONDS_PER_DAY, RouterAnalytics
from fleet_ledger.errors import is_transient
from fleet_shared.subjects import Subjects

log = logging.getLogger(__name__)

QUEUE_GROUP = "fleet-ledger"
#: The most buckets one activity report may hold (a bounded reply).
MAX_BUCKETS = 2_000


class AnalyticsQuery(Struct, frozen=True, kw_only=True):
    """Optional parameters of an analytics request (each report reads the ones it uses)."""

    since: float | None = None
    """performance, cost, recommendations, escalations, report: only rows at or after this unix
    time; activity: its totals start here (default: the UTC day of ``now``)."""
    daily_budget_usd: Annotated[float, Meta(ge=0)] | None = None
    """budget, recommendations: defaults to the ledger's FLEET_DAILY_BUDGET_USD."""
    reference_prices: tuple[Annotated[float, Meta(ge=0)], Annotated[float, Meta(ge=0)]] | None = None
    """cost, report: (input, output) USD per million tokens of the commercial baseline."""
    now: float | None = None
    """budget, recommendations, activity: the moment whose UTC day is reported (default: now)."""
    window_s: Annotated[float, Meta(gt=0, le=7 * 86_400)] = 600.0
    """activity: the span of time the buckets cover, ending now."""
    bucket_s: Annotated[float, Meta(ge=1, le=86_400)] = 10.0
    """activity: the width of one bucket (at most 2,000 buckets per window)."""
    limit: Annotated[int, Meta(ge=1, le=500)] = 20
    """decisions: how many of the newest jobs."""
    experiment: str | None = None
    """experiments: only this experiment (default: every one)."""

    def __post_init__(self) -> None:
        if self.window_s / self.bucket_s > MAX_BUCKETS:
            raise ValueError(f"window_s / bucket_s is over {MAX_BUCKETS} buckets")


_query_decoder = msgspec.json.Decoder(AnalyticsQuery)
_encoder = msgspec.json.Encoder()


class AnalyticsEndpoints:
    """Handlers of the reports, bound to one RouterAnalytics and default budget."""

    def __init__(self, analytics: RouterAnalytics, *, daily_budget_usd: float) -> None:
        self._analytics = analytics
        self._daily_budget_usd = daily_budget_usd

    async def add_to(self, service: Service, subjects: Subjects) -> None:
        reports = {
            "performance": self._performance,
            "cost": self._cost,
            "budget": self._budget,
            "recommendations": self._recommendations,
            "activity": self._activity,
            "escalations": self._escalations,
            "decisions": self._decisions,
            "experiments": self._experiments,
            "report": self._report,
        }
        for name, report in reports.items():
            await service.add_endpoint(
                name=name,
                subject=subjects.analytics(name),
                queue_group=QUEUE_GROUP,
                handler=self._handler(report),
            )

    def _handler(self, report: Callable[[AnalyticsQuery], Awaitable[Any]]) -> Callable[[Request], Awaitable[None]]:
        async def handle(request: Request) -> None:
            try:
                query = _query_decoder.decode(request.data) if request.data.strip() else AnalyticsQuery()
                body = await report(query)
            except msgspec.DecodeError as exc:
                await _error(request, "400", "bad_request", str(exc))
            except Exception as exc:
                if is_transient(exc):
                    log.warning("analytics %s: database unavailable: %r", request.subject, exc)
                    await _error(request, "503", "unavailable", "the ledger database is unavailable")
                else:
                    log.error("analytics %s failed", request.subject, exc_info=True)
                    await _error(request, "500", "internal", repr(exc))
            else:
                await request.respond(_encoder.encode(body))

        return handle

    async def _performance(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_model_performance_report(since=q.since)

    async def _cost(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_cost_analysis(q.since, reference_prices=q.reference_prices)

    async def _budget(self, q: AnalyticsQuery) -> Any:
        budget = self._daily_budget_usd if q.daily_budget_usd is None else q.daily_budget_usd
        return await self._analytics.get_daily_budget_remaining(budget, now=q.now)

    async def _recommendations(self, q: AnalyticsQuery) -> Any:
        budget = self._daily_budget_usd if q.daily_budget_usd is None else q.daily_budget_usd
        return await self._analytics.get_optimization_recommendations(since=q.since, daily_budget_usd=budget, now=q.now)

    async def _activity(self, q: AnalyticsQuery) -> Any:
        now = time.time() if q.now is None else q.now
        since = (now // SECONDS_PER_DAY) * SECONDS_PER_DAY if q.since is None else q.since
        return await self._analytics.get_activity(since=since, window_s=q.window_s, bucket_s=q.bucket_s, now=now)

    async def _escalations(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_escalation_paths(since=q.since)

    async def _decisions(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_recent_decisions(limit=q.limit)

    async def _experiments(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_experiment_report(experiment=q.experiment, since=q.since)

    async def _report(self, q: AnalyticsQuery) -> Any:
        return await self._analytics.get_report_data(since=q.since, reference_prices=q.reference_prices)


async def _error(request: Request, status: str, code: str, message: str) -> None:
    body = _encoder.encode({"error": {"code": code, "message": message}})
    await request.respond_error(status, message, data=body)
