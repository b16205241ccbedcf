"""The data of ``modelrouter report``: what the HTML report plots, in one request.

Every series is computed in SQL over the ledger's tables, since ``since`` (unix seconds;
all time when None): spend from ``attempts`` (every call costs, failed or not), the routing
mix from ``routing_decisions``, latency over successful attempts (a failed call's latency
says little about speed), escalation paths from each job's attempts in order. The savings
baseline prices every successful attempt's tokens at the reference (commercial) prices:
what the same work would have cost had every answer come from that model.
"""

from __future__ import annotations

from typing import Any

import asyncpg

_SINCE = "($1::float8 IS NULL OR a.at >= $1)"

_COST_BY_DAY_MODEL_SQL = f"""
SELECT to_char(to_timestamp(a.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, a.model,
       sum(a.cost_usd) AS cost, count(*) AS attempts
FROM attempts a WHERE {_SINCE} GROUP BY 1, 2 ORDER BY 1, 2
"""

_MIX_SQL = """
SELECT COALESCE(d.task_type, 'unknown') AS task_type, d.complexity, COALESCE(d.selected_model, 'none') AS model,
       count(*) AS jobs
FROM routing_decisions d WHERE ($1::float8 IS NULL OR d."timestamp" >= $1)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

_LATENCY_SQL = f"""
SELECT a.model, count(*) AS n, min(a.latency_ms) AS min,
       percentile_cont(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95]) WITHIN GROUP (ORDER BY a.latency_ms) AS q,
       max(a.latency_ms) AS max
FROM attempts a WHERE a.success AND {_SINCE} GROUP BY a.model ORDER BY a.model
"""

_PATHS_SQL = f"""
SELECT path, count(*) AS jobs, count(*) FILTER (WHERE ok) AS succeeded, sum(cost) AS cost
FROM (SELECT a.job_id, string_agg(a.model, ' > ' ORDER BY a.attempt_no) AS path, bool_or(a.success) AS ok,
             sum(a.cost_usd) AS cost
      FROM attempts a WHERE {_SINCE} GROUP BY a.job_id HAVING count(*) > 1) AS jobs
GROUP BY path ORDER BY jobs DESC, path LIMIT $2
"""

_BASELINE_SQL = f"""
SELECT to_char(to_timestamp(a.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       sum(a.cost_usd) AS actual,
       COALESCE(sum(a.tokens_in) FILTER (WHERE a.success), 0) AS tokens_in,
       COALESCE(sum(a.tokens_out) FILTER (WHERE a.success), 0) AS tokens_out,
       count(DISTINCT a.job_id) AS jobs
FROM attempts a WHERE {_SINCE} GROUP BY 1 ORDER BY 1
"""


async def report_data(
    db: asyncpg.Pool, *, since: float | None, reference_prices: tuple[float, float], max_paths: int = 15
) -> dict[str, Any]:
    """Every series of the report (JSON-ready)."""
    price_in, price_out = reference_prices
    days = []
    for r in await db.fetch(_BASELINE_SQL, since):
        baseline = (r["tokens_in"] * price_in + r["tokens_out"] * price_out) / 1e6
        days.append({"day": r["day"], "jobs": r["jobs"], "actual": r["actual"], "baseline": baseline})
    latency = {
        r["model"]: {
            "n": r["n"],
            "min": r["min"],
            "max": r["max"],
            **dict(zip(("p5", "p25", "p50", "p75", "p95"), r["q"])),
        }
        for r in await db.fetch(_LATENCY_SQL, since)
    }
    return {
        "since": since,
        "reference_prices": {"input_per_mtok": price_in, "output_per_mtok": price_out},
        "cost_by_day_model": [dict(r) for r in await db.fetch(_COST_BY_DAY_MODEL_SQL, since)],
        "routing_mix": [dict(r) for r in await db.fetch(_MIX_SQL, since)],
        "latency": latency,
        "escalation_paths": [dict(r) for r in await db.fetch(_PATHS_SQL, since, max_paths)],
        "savings_by_day": days,
        "totals": {
            "jobs": sum(d["jobs"] for d in days),
            "actual": sum(d["actual"] for d in days),
            "baseline": sum(d["baseline"] for d in days),
        },
    }
