"""Reports the dashboard plots: recent activity in time buckets, escalation paths and the
latest routing decisions (``<p>.analytics.activity`` / ``escalations`` / ``decisions``).

Same conventions as ``analytics``: plain JSON-ready dicts, unix seconds, a pure function of
the rows. Jobs count when their Result is committed (``routing_decisions.finished_at``);
latency is the job's ``execution_time`` (accepted to Result, every attempt included).
"""

from __future__ import annotations

import math
import time
from typing import Any

import asyncpg

_TOTALS_SQL = """
SELECT count(*) AS jobs, count(*) FILTER (WHERE success) AS successes,
       count(*) FILTER (WHERE attempts_count > 1) AS escalated,
       COALESCE(sum(actual_cost), 0) AS cost,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time) AS p95_s
FROM routing_decisions WHERE finished_at >= $1 AND finished_at < $2
"""

_BUCKETS_SQL = """
SELECT floor(finished_at / $3)::bigint AS slot, count(*) AS jobs,
       count(*) FILTER (WHERE NOT success) AS failures,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time) AS p95_s
FROM routing_decisions WHERE finished_at >= $1 AND finished_at < $2
GROUP BY 1 ORDER BY 1
"""

# Each failed attempt followed by another of the same job is one step of an escalation path;
# a failed last attempt of a job that failed is a path that ended in ``none`` (given up).
_ESCALATIONS_SQL = """
SELECT a.model AS from_model, COALESCE(b.model, 'none') AS to_model, count(*) AS count
FROM attempts a
LEFT JOIN attempts b ON b.job_id = a.job_id AND b.attempt_no = a.attempt_no + 1
WHERE NOT a.success AND ($1::float8 IS NULL OR a.at >= $1)
  AND (b.job_id IS NOT NULL OR EXISTS (
        SELECT 1 FROM routing_decisions d WHERE d.job_id = a.job_id AND d.finished_at IS NOT NULL
        AND NOT d.success AND d.attempts_count = a.attempt_no))
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
"""

_DECISIONS_SQL = """
SELECT d.job_id, d."timestamp" AS at, d.finished_at, d.task_type, d.complexity, d.selected_model AS model,
       d.provider, d.reasoning, d.success, d.attempts_count, d.execution_time, d.actual_cost, d.error_code,
       (SELECT array_agg(a.model ORDER BY a.attempt_no) FROM attempts a WHERE a.job_id = d.job_id) AS path
FROM routing_decisions d ORDER BY d."timestamp" DESC NULLS LAST, d.id DESC LIMIT $1
"""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


async def activity(
    db: asyncpg.Pool, *, since: float, window_s: float, bucket_s: float, now: float | None = None
) -> dict[str, Any]:
    """Totals of the jobs finished in [since, now) and, over the last ``window_s``, one
    bucket of ``bucket_s`` seconds per slot (empty slots included, so a plot's x axis is
    time): jobs, failures, jobs_per_s, failures_per_s and the p50 / p95 job latency (ms).
    The newest bucket is still filling: its rates are over the part that has passed."""
    now = time.time() if now is None else now
    totals = await db.fetchrow(_TOTALS_SQL, since, now)
    last = math.ceil(now / bucket_s) - 1  # the slot holding the moment just before now
    first = last - max(1, round(window_s / bucket_s)) + 1
    rows = {r["slot"]: r for r in await db.fetch(_BUCKETS_SQL, first * bucket_s, now, bucket_s)}
    buckets = []
    for slot in range(first, last + 1):
        r = rows.get(slot)
        jobs = r["jobs"] if r else 0
        # the current slot has only run for part of its width: a rate over that part
        elapsed = min(bucket_s, max(1.0, now - slot * bucket_s))
        buckets.append(
            {
                "t": slot * bucket_s,
                "jobs": jobs,
                "failures": r["failures"] if r else 0,
                "jobs_per_s": jobs / elapsed,
                "failures_per_s": (r["failures"] if r else 0) / elapsed,
                "p50_latency_ms": _ms(r["p50_s"]) if r else None,
                "p95_latency_ms": _ms(r["p95_s"]) if r else None,
            }
        )
    return {
        "since": since,
        "now": now,
        "jobs": totals["jobs"],
        "successes": totals["successes"],
        "failures": totals["jobs"] - totals["successes"],
        "escalated": totals["escalated"],
        "cost": totals["cost"],
        "p50_latency_ms": _ms(totals["p50_s"]),
        "p95_latency_ms": _ms(totals["p95_s"]),
        "bucket_s": bucket_s,
        "buckets": buckets,
    }


async def escalations(db: asyncpg.Pool, *, since: float | None = None) -> list[dict[str, Any]]:
    """Escalation steps ``{from_model, to_model, count}``, most taken first; ``to_model`` is
    ``none`` where the fleet gave the job up after that failure."""
    return [dict(r) for r in await db.fetch(_ESCALATIONS_SQL, since)]


async def decisions(db: asyncpg.Pool, *, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest jobs' routing decisions: the model chosen and why (the reasoning
    of the newest decision), the models tried in order (``path``) and how the job ended
    (``success`` is None while it runs)."""
    out = []
    for r in await db.fetch(_DECISIONS_SQL, limit):
        row = dict(r)
        row["path"] = list(row["path"] or [])
        if row["finished_at"] is None:
            row["success"] = None
        out.append(row)
    return out
