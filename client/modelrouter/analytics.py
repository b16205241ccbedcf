"""RouterAnalytics as the seed shows it: synchronous reports, read from the fleet's ledger.

    analytics = RouterAnalytics()
    costs = analytics.get_cost_analysis()
    print(f"Total cost: ${costs['total_cost']:.6f}")

The reports are computed by the ledger (``fleet_ledger.analytics``) and served over NATS
request-reply on ``<prefix>.analytics.<report>`` (performance, cost, budget,
recommendations). Each synchronous method has an async twin (``a``-prefixed) for async code.

Both run on a private event loop in a daemon thread that owns the NATS connection, so the
synchronous methods work from plain scripts and from inside a running event loop alike
(a notebook, an async function that calls the seed's snippet as written).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS

from fleet_shared.config import Settings
from fleet_shared.subjects import Subjects
from modelrouter.connection import FleetError, FleetUnavailable, client_settings, connect

T = TypeVar("T")

#: The environment variable that, when set for the client, overrides the ledger's budget.
BUDGET_ENV = "FLEET_DAILY_BUDGET_USD"


class AnalyticsError(FleetError):
    """The ledger answered an analytics request with an error (``code``: bad_request,
    unavailable, internal)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"analytics {code}: {message}")
        self.code = code


class _PrivateLoop:
    """An event loop in a daemon thread; ``run`` blocks the caller until a coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="modelrouter-analytics", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class RouterAnalytics:
    """The ledger's reports over NATS.

    Parameters:
        settings: connection settings (default: ``Settings.from_env()``).
        nats_url, prefix: override NATS_URL / FLEET_SUBJECT_PREFIX.
        daily_budget_usd: the budget ``get_daily_budget_remaining()`` and the recommendations
            measure against; default FLEET_DAILY_BUDGET_USD when set in this process's
            environment, else the ledger's own configured budget.
        timeout_s: how long one report may take.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        nats_url: str | None = None,
        prefix: str | None = None,
        daily_budget_usd: float | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.settings = client_settings(settings, nats_url=nats_url, prefix=prefix)
        self.subjects = Subjects(self.settings.subject_prefix)
        if daily_budget_usd is None and os.environ.get(BUDGET_ENV):
            daily_budget_usd = self.settings.daily_budget_usd
        self.daily_budget_usd = daily_budget_usd
        self.timeout_s = timeout_s
        self._private: _PrivateLoop | None = None
        self._nc: NATS | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> RouterAnalytics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RouterAnalytics:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the connection and stop the private loop (idempotent)."""
        with self._lock:
            private, self._private = self._private, None
        if private is None:
            return
        private.run(self._disconnect())
        private.stop()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _loop(self) -> _PrivateLoop:
        with self._lock:
            if self._private is None:
                self._private = _PrivateLoop()
            return self._private

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    # -- the request, on the private loop ---------------------------------------------

    async def _request(self, report: str, query: dict[str, Any]) -> Any:
        if self._nc is None:
            self._nc = await connect(self.settings, name="modelrouter-analytics")
        body = msgspec.json.encode({k: v for k, v in query.items() if v is not None})
        try:
            reply = await self._nc.request(self.subjects.analytics(report), body, timeout=self.timeout_s)
        except nats.errors.NoRespondersError as exc:
            raise FleetUnavailable(
                f"no ledger answers {self.subjects.analytics(report)} (is the fleet's ledger running?)"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise FleetUnavailable(f"the ledger did not answer {report} within {self.timeout_s:g}s") from exc
        data = msgspec.json.decode(reply.data)
        if isinstance(data, dict) and isinstance(data.get("error"), dict) and len(data) == 1:
            raise AnalyticsError(data["error"].get("code", "error"), data["error"].get("message", ""))
        return data

    def _sync(self, report: str, query: dict[str, Any]) -> Any:
        return self._loop().run(self._request(report, query))

    async def _async(self, report: str, query: dict[str, Any]) -> Any:
        return await self._loop().arun(self._request(report, query))

    def _budget(self, daily_budget_usd: float | None) -> float | None:
        return self.daily_budget_usd if daily_budget_usd is None else daily_budget_usd

    # -- the seed's methods (synchronous) ---------------------------------------------

    def get_model_performance_report(self, *, since: float | None = None) -> dict[str, dict[str, Any]]:
        """Per model: attempts, successes, success_rate, latency avg / p50 / p95 (ms),
        average tokens, total_cost. ``since``: unix seconds (default: all time)."""
        return self._sync("performance", {"since": since})

    def get_cost_analysis(
        self, since: float | None = None, *, reference_prices: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """Spend: total_cost, jobs, cost_per_job, by_model, by_task_type, by_day, and the
        savings of local models at ``reference_prices`` (USD per million tokens in, out)."""
        return self._sync("cost", {"since": since, "reference_prices": reference_prices})

    def get_daily_budget_remaining(
        self, daily_budget_usd: float | None = None, *, now: float | None = None
    ) -> dict[str, Any]:
        """Today's (UTC) spend against the budget: day, budget, spent, remaining, fraction_spent."""
        query = {"daily_budget_usd": self._budget(daily_budget_usd), "now": now}
        return self._sync("budget", query)

    def get_optimization_recommendations(
        self, *, since: float | None = None, daily_budget_usd: float | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        """Advice as ``{id, kind, model?, task_type?, message, evidence, rule}`` (low_success_rate,
        slow_model, route_locally, high_escalation, budget); ``rule`` is the TOML of the custom
        rule that would apply it (``modelrouter rules apply-recommendation ID``)."""
        query = {"since": since, "daily_budget_usd": self._budget(daily_budget_usd), "now": now}
        return self._sync("recommendations", query)

    def get_experiment_report(self, *, experiment: str | None = None, since: float | None = None) -> dict[str, Any]:
        """A/B experiments per variant with 95 % intervals and verdicts (``fleet_ledger.experiments``)."""
        return self._sync("experiments", {"experiment": experiment, "since": since})

    def get_report_data(self, *, since: float | None = None) -> dict[str, Any]:
        """The series ``modelrouter report`` plots: cost by day and model, routing mix,
        latency quantiles per model, escalation paths, savings against the commercial baseline."""
        return self._sync("report", {"since": since})

    # -- async twins ------------------------------------------------------------------

    async def aget_report_data(self, *, since: float | None = None) -> dict[str, Any]:
        return await self._async("report", {"since": since})

    async def aget_model_performance_report(self, *, since: float | None = None) -> dict[str, dict[str, Any]]:
        return await self._async("performance", {"since": since})

    async def aget_cost_analysis(
        self, since: float | None = None, *, reference_prices: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        return await self._async("cost", {"since": since, "reference_prices": reference_prices})

    async def aget_daily_budget_remaining(
        self, daily_budget_usd: float | None = None, *, now: float | None = None
    ) -> dict[str, Any]:
        query = {"daily_budget_usd": self._budget(daily_budget_usd), "now": now}
        return await self._async("budget", query)

    async def aget_optimization_recommendations(
        self, *, since: float | None = None, daily_budget_usd: float | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        query = {"since": since, "daily_budget_usd": self._budget(daily_budget_usd), "now": now}
        return await self._async("recommendations", query)

    async def aget_experiment_report(
        self, *, experiment: str | None = None, since: float | None = None
    ) -> dict[str, Any]:
        return await self._async("experiments", {"experiment": experiment, "since": since})
