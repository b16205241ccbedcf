"""RouterAnalytics (the seed's API) over the ledger's PostgreSQL tables.

Every report is a plain dict or list of dicts (JSON-ready: the ledger serves them over NATS).
Spend comes from ``attempts`` (every call costs, failed or not); job facts (task type,
complexity, escalations) from ``routing_decisions``. Times are unix seconds; days are UTC.
Thresholds are keyword parameters, so a report is a pure function of the rows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from fleet_ledger import activity
from fleet_ledger.experiments import compare, experiment_rows
from fleet_ledger.report_data import report_data
from fleet_shared.config import Settings
from fleet_shared.recommend_rules import recommendation_id, rule_for
from fleet_shared.registry import Registry, load_registry

#: (input, output) USD per million tokens that local tokens are priced at for "savings":
#: the claude entry of shared/prices.toml (claude-sonnet-4-6, as of 2026-11-01).
DEFAULT_REFERENCE_PRICES = (3.0, 15.0)
#: Providers whose models run locally (served for free).
LOCAL_PROVIDERS = ("lmstudio",)
SECONDS_PER_DAY = 86_400

_SINCE = "($1::float8 IS NULL OR a.at >= $1)"

_PERFORMANCE_SQL = f"""
SELECT a.model, min(a.provider) AS provider, count(*) AS attempts,
       count(*) FILTER (WHERE a.success) AS successes,
       avg(a.latency_ms) FILTER (WHERE a.success) AS avg_latency_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms) FILTER (WHERE a.success) AS p50_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms) FILTER (WHERE a.success) AS p95_latency_ms,
       (avg(a.tokens_in) FILTER (WHERE a.success))::float8 AS avg_tokens_in,
       (avg(a.tokens_out) FILTER (WHERE a.success))::float8 AS avg_tokens_out,
       sum(a.cost_usd) AS total_cost
FROM attempts a WHERE {_SINCE}
GROUP BY a.model ORDER BY a.model
"""

# A score belongs to the model whose answer was accepted (the job's successful attempt).
_FEEDBACK_BY_MODEL_SQL = """
SELECT a.model, count(*) AS feedback_count, avg(f.score) AS avg_score
FROM feedback f JOIN attempts a ON a.job_id = f.job_id AND a.success
WHERE ($1::float8 IS NULL OR f.at >= $1)
GROUP BY a.model ORDER BY a.model
"""

_COST_BY_MODEL_SQL = f"""
SELECT a.model, min(a.provider) AS provider, sum(a.cost_usd) AS cost, count(*) AS attempts,
       count(DISTINCT a.job_id) AS jobs, sum(a.tokens_in) AS tokens_in, sum(a.tokens_out) AS tokens_out
FROM attempts a WHERE {_SINCE} GROUP BY a.model ORDER BY a.model
"""

_COST_BY_TASK_SQL = f"""
SELECT COALESCE(d.task_type, 'unknown') AS key, sum(a.cost_usd) AS cost, count(*) AS attempts,
       count(DISTINCT a.job_id) AS jobs
FROM attempts a LEFT JOIN routing_decisions d ON d.job_id = a.job_id
WHERE {_SINCE} GROUP BY 1 ORDER BY 1
"""

_COST_BY_DAY_SQL = f"""
SELECT to_char(to_timestamp(a.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS key, sum(a.cost_usd) AS cost,
       count(*) AS attempts, count(DISTINCT a.job_id) AS jobs
FROM attempts a WHERE {_SINCE} GROUP BY 1 ORDER BY 1
"""

_COST_TOTAL_SQL = f"""
SELECT COALESCE(sum(a.cost_usd), 0) AS cost, count(*) AS attempts, count(DISTINCT a.job_id) AS jobs,
       COALESCE(sum(a.tokens_in) FILTER (WHERE a.success AND a.provider = ANY($2)), 0) AS local_in,
       COALESCE(sum(a.tokens_out) FILTER (WHERE a.success AND a.provider = ANY($2)), 0) AS local_out,
       COALESCE(sum(a.cost_usd) FILTER (WHERE a.success AND a.provider = ANY($2)), 0) AS local_cost
FROM attempts a WHERE {_SINCE}
"""

_SPENT_SQL = "SELECT COALESCE(sum(cost_usd), 0) FROM attempts WHERE at >= $1 AND at < $2"

# Jobs of low complexity whose *first* attempt went to a commercial model: escalations
# (local tried first) are the router working as designed, not a routing miss.
_COMMERCIAL_LOW_SQL = f"""
SELECT a.model, min(a.provider) AS provider, count(*) AS jobs, sum(a.cost_usd) AS cost
FROM routing_decisions d JOIN attempts a ON a.job_id = d.job_id AND a.attempt_no = 1
WHERE d.complexity <= $2 AND NOT (a.provider = ANY($3)) AND {_SINCE}
GROUP BY a.model HAVING count(*) >= $4 ORDER BY a.model
"""

_ESCALATION_SQL = """
SELECT COALESCE(task_type, 'unknown') AS task_type, count(*) AS jobs,
       count(*) FILTER (WHERE attempts_count > 1) AS escalated
FROM routing_decisions
WHERE finished_at IS NOT NULL AND ($1::float8 IS NULL OR finished_at >= $1)
GROUP BY 1 HAVING count(*) >= $2 ORDER BY 1
"""


def _utc_day(ts: float) -> tuple[float, str]:
    start = (ts // SECONDS_PER_DAY) * SECONDS_PER_DAY
    return start, datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")


def _keyed(records: Sequence[asyncpg.Record]) -> dict[str, dict[str, Any]]:
    return {r["key"]: {"cost": r["cost"], "attempts": r["attempts"], "jobs": r["jobs"]} for r in records}


class RouterAnalytics:
    """Reports over the ledger database.

    Parameters:
        db: an asyncpg pool (borrowed), or a DSN (a pool is opened on first use and closed
            by ``aclose``); None reads DATABASE_URL like every fleet process.
        reference_prices: (input, output) USD per million tokens for ``savings``.
        local_providers: providers whose tokens count as served locally.
    """

    def __init__(
        self,
        db: asyncpg.Pool | str | None = None,
        *,
        reference_prices: tuple[float, float] = DEFAULT_REFERENCE_PRICES,
        local_providers: Sequence[str] = LOCAL_PROVIDERS,
        registry: Registry | None = None,
    ) -> None:
        if db is None:
            db = Settings.from_env().database_url
        self._dsn = db if isinstance(db, str) else None
        self._pool: asyncpg.Pool | None = None if isinstance(db, str) else db
        self.reference_prices = reference_prices
        self.local_providers = list(local_providers)
        #: the models a recommendation's rule may name (default: the packaged registry)
        self.registry = registry

    async def __aenter__(self) -> RouterAnalytics:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._dsn is not None and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=2)
        return self._pool

    async def get_model_performance_report(self, *, since: float | None = None) -> dict[str, dict[str, Any]]:
        """Per model: attempts, successes, success_rate, total_cost, and over successful
        attempts (a failed call's latency says little about speed) the latency average, p50
        and p95 (ms) and average tokens in, out and in+out; ``feedback_count`` and
        ``avg_feedback_score`` (1-5, None without feedback) of the answers it gave."""
        report = {}
        db = await self._db()
        feedback = {r["model"]: r for r in await db.fetch(_FEEDBACK_BY_MODEL_SQL, since)}
        for r in await db.fetch(_PERFORMANCE_SQL, since):
            tokens = None if r["avg_tokens_in"] is None else r["avg_tokens_in"] + r["avg_tokens_out"]
            report[r["model"]] = {
                "provider": r["provider"],
                "attempts": r["attempts"],
                "successes": r["successes"],
                "success_rate": r["successes"] / r["attempts"],
                "avg_latency_ms": r["avg_latency_ms"],
                "p50_latency_ms": r["p50_latency_ms"],
                "p95_latency_ms": r["p95_latency_ms"],
                "avg_tokens_in": r["avg_tokens_in"],
                "avg_tokens_out": r["avg_tokens_out"],
                "avg_tokens": tokens,
                "total_cost": r["total_cost"],
                "feedback_count": feedback[r["model"]]["feedback_count"] if r["model"] in feedback else 0,
                "avg_feedback_score": feedback[r["model"]]["avg_score"] if r["model"] in feedback else None,
            }
        return report

    async def get_cost_analysis(
        self, since: float | None = None, *, reference_prices: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """Spend since ``since`` (all time when None): total, per model, task type and UTC
        day, and ``commercial_equivalent_cost``: what the tokens served locally would have
        cost at ``reference_prices``; ``savings`` is that minus what they did cost."""
        price_in, price_out = reference_prices or self.reference_prices
        db = await self._db()
        total = await db.fetchrow(_COST_TOTAL_SQL, since, self.local_providers)
        by_model = {
            r["model"]: {k: r[k] for k in ("provider", "cost", "attempts", "jobs", "tokens_in", "tokens_out")}
            for r in await db.fetch(_COST_BY_MODEL_SQL, since)
        }
        equivalent = (total["local_in"] * price_in + total["local_out"] * price_out) / 1e6
        return {
            "since": since,
            "total_cost": total["cost"],
            "jobs": total["jobs"],
            "attempts": total["attempts"],
            "cost_per_job": total["cost"] / total["jobs"] if total["jobs"] else 0.0,
            "by_model": by_model,
            "by_task_type": _keyed(await db.fetch(_COST_BY_TASK_SQL, since)),
            "by_day": _keyed(await db.fetch(_COST_BY_DAY_SQL, since)),
            "local_tokens_in": total["local_in"],
            "local_tokens_out": total["local_out"],
            "reference_prices": {"input_per_mtok": price_in, "output_per_mtok": price_out},
            "commercial_equivalent_cost": equivalent,
            "savings": equivalent - total["local_cost"],
        }

    async def get_report_data(
        self, *, since: float | None = None, reference_prices: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """The series ``modelrouter report`` plots (``fleet_ledger.report_data``)."""
        prices = reference_prices or self.reference_prices
        return await report_data(await self._db(), since=since, reference_prices=prices)

    async def get_daily_budget_remaining(self, daily_budget_usd: float, *, now: float | None = None) -> dict[str, Any]:
        """Spend of the UTC calendar day holding ``now`` against ``daily_budget_usd``."""
        start, day = _utc_day(time.time() if now is None else now)
        spent = await (await self._db()).fetchval(_SPENT_SQL, start, start + SECONDS_PER_DAY)
        fraction = spent / daily_budget_usd if daily_budget_usd > 0 else (1.0 if spent > 0 else 0.0)
        return {
            "day": day,
            "budget": daily_budget_usd,
            "spent": spent,
            "remaining": max(0.0, daily_budget_usd - spent),
            "fraction_spent": fraction,
        }

    async def get_activity(
        self, *, since: float, window_s: float = 600.0, bucket_s: float = 10.0, now: float | None = None
    ) -> dict[str, Any]:
        """Jobs finished since ``since`` and per ``bucket_s`` over the last ``window_s``
        (``fleet_ledger.activity.activity``)."""
        return await activity.activity(await self._db(), since=since, window_s=window_s, bucket_s=bucket_s, now=now)

    async def get_escalation_paths(self, *, since: float | None = None) -> list[dict[str, Any]]:
        """Escalation steps ``{from_model, to_model, count}`` (``to_model`` ``none``: given up)."""
        return await activity.escalations(await self._db(), since=since)

    async def get_recent_decisions(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest jobs' decisions, with reasoning and the models tried."""
        return await activity.decisions(await self._db(), limit=limit)

    async def get_optimization_recommendations(
        self,
        *,
        since: float | None = None,
        min_attempts: int = 10,
        min_success_rate: float = 0.8,
        slow_factor: float = 2.0,
        low_complexity_max: int = 3,
        min_low_complexity_jobs: int = 10,
        min_task_jobs: int = 10,
        max_escalation_rate: float = 0.3,
        daily_budget_usd: float | None = None,
        budget_alert_fraction: float = 0.8,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Advice as ``{id, kind, model?, task_type?, message, evidence, rule}``, in a fixed
        order; ``rule`` is the ``[[rule]]`` TOML that would apply it (``fleet_shared.recommend_rules``;
        None when no rule would):

        * ``low_success_rate``: a model under ``min_success_rate`` over >= ``min_attempts``;
        * ``slow_model``: a model whose p50 latency is >= ``slow_factor`` x the median p50 of
          its peers (models with >= ``min_attempts`` attempts);
        * ``route_locally``: a commercial model was the first choice for
          >= ``min_low_complexity_jobs`` jobs of complexity <= ``low_complexity_max``;
        * ``high_escalation``: a task type (>= ``min_task_jobs`` finished jobs) needed more
          than one attempt in >= ``max_escalation_rate`` of its jobs;
        * ``budget``: today's spend reached ``budget_alert_fraction`` of ``daily_budget_usd``.
        """
        perf = await self.get_model_performance_report(since=since)
        recs = _low_success(perf, min_attempts, min_success_rate)
        recs += _slow_models(perf, min_attempts, slow_factor)
        db = await self._db()
        rows = await db.fetch(
            _COMMERCIAL_LOW_SQL, since, low_complexity_max, self.local_providers, min_low_complexity_jobs
        )
        recs += [_route_locally(r, low_complexity_max) for r in rows]
        for r in await db.fetch(_ESCALATION_SQL, since, min_task_jobs):
            if r["escalated"] / r["jobs"] >= max_escalation_rate:
                recs.append(_high_escalation(r))
        if daily_budget_usd:
            budget = await self.get_daily_budget_remaining(daily_budget_usd, now=now)
            if budget["fraction_spent"] >= budget_alert_fraction:
                recs.append(
                    {
                        "kind": "budget",
                        "message": f"{budget['fraction_spent']:.0%} of today's ${daily_budget_usd:.2f} budget is spent;"
                        " prefer local models for the rest of the day",
                        "evidence": budget,
                    }
                )
        return self._actionable(recs)

    async def get_experiment_report(
        self, *, experiment: str | None = None, since: float | None = None
    ) -> dict[str, Any]:
        """A/B experiments compared per variant, with 95 % intervals (``fleet_ledger.experiments``)."""
        rows, scores = await experiment_rows(await self._db(), experiment=experiment, since=since)
        return compare(rows, scores)

    def _actionable(self, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each recommendation with its id and the custom rule that would apply it."""
        registry = self.registry or load_registry()
        complex_models = list(registry.rules.complex_models)
        local = [m for m, spec in registry.models.items() if spec.is_local]
        return [
            {"id": recommendation_id(r), **r, "rule": rule_for(r, complex_models=complex_models, local_models=local)}
            for r in recs
        ]


def _low_success(perf: dict[str, dict], min_attempts: int, min_rate: float) -> list[dict[str, Any]]:
    return [
        {
            "kind": "low_success_rate",
            "model": model,
            "message": f"{model} succeeded in {p['success_rate']:.0%} of {p['attempts']} attempts;"
            " lower its preference or check its health",
            "evidence": {"attempts": p["attempts"], "successes": p["successes"], "success_rate": p["success_rate"]},
        }
        for model, p in perf.items()
        if p["attempts"] >= min_attempts and p["success_rate"] < min_rate
    ]


def _slow_models(perf: dict[str, dict], min_attempts: int, factor: float) -> list[dict[str, Any]]:
    p50 = {
        m: p["p50_latency_ms"]
        for m, p in perf.items()
        if p["attempts"] >= min_attempts and p["p50_latency_ms"] is not None
    }
    recs = []
    for model, latency in p50.items():
        peers = [v for m, v in p50.items() if m != model]
        if not peers:
            continue
        typical = statistics.median(peers)
        if typical > 0 and latency >= factor * typical:
            recs.append(
                {
                    "kind": "slow_model",
                    "model": model,
                    "message": f"{model} is {latency / typical:.1f}x slower than its peers (p50 {latency:.0f} ms"
                    f" vs {typical:.0f} ms); route latency-sensitive jobs elsewhere",
                    "evidence": {"p50_latency_ms": latency, "peers_median_p50_latency_ms": typical},
                }
            )
    return recs


def _route_locally(r: asyncpg.Record, max_complexity: int) -> dict[str, Any]:
    return {
        "kind": "route_locally",
        "model": r["model"],
        "message": f"{r['model']} was the first choice for {r['jobs']} jobs of complexity <= {max_complexity};"
        " route these to a local model",
        "evidence": {"jobs": r["jobs"], "cost": r["cost"], "provider": r["provider"], "max_complexity": max_complexity},
    }


def _high_escalation(r: asyncpg.Record) -> dict[str, Any]:
    rate = r["escalated"] / r["jobs"]
    return {
        "kind": "high_escalation",
        "task_type": r["task_type"],
        "message": f"{rate:.0%} of {r['task_type']} jobs needed more than one attempt; start them on a stronger model",
        "evidence": {"jobs": r["jobs"], "escalated": r["escalated"], "escalation_rate": rate},
    }
