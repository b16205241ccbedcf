"""A/B experiments compared from the ledger (issue 11, item 5).

Each finished job the router put in an experiment has ``experiment`` and ``variant`` in
``routing_decisions`` (a shadow copy: variant ``shadow``). Per variant: jobs, success rate,
validator pass rate (of the attempts that got an answer, the share not failed by a quality
check: ``error_code`` ``quality_*``), feedback score (when a ``feedback`` table with
``job_id`` and ``score`` exists), latency p50 / p95 (seconds, successful jobs) and cost per
job. Rates carry a 95 % Wilson interval, means a 95 % normal-approximation interval.

Every variant is compared with the baseline (the variant named ``control``, else the first
by name): the difference and its 95 % interval, and a verdict (``better`` / ``worse``) only
when the interval excludes 0 (a two-sided test at 5 %); otherwise ``no significant
difference``. ``compare`` is pure (rows in, report out).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

#: z of a two-sided 95 % interval.
Z95 = 1.959964
BASELINE = "control"

_ROWS_SQL = r"""
SELECT d.experiment, d.variant, d.job_id, COALESCE(d.success, false) AS success,
       d.execution_time, COALESCE(d.actual_cost, 0) AS cost,
       count(a.*) FILTER (WHERE a.error_code LIKE 'quality\_%') AS quality_failed,
       count(a.*) FILTER (WHERE a.success OR a.error_code LIKE 'quality\_%') AS validated
FROM routing_decisions d LEFT JOIN attempts a ON a.job_id = d.job_id
WHERE d.experiment IS NOT NULL AND d.variant IS NOT NULL AND d.finished_at IS NOT NULL
  AND ($1::text IS NULL OR d.experiment = $1) AND ($2::float8 IS NULL OR d."timestamp" >= $2)
GROUP BY d.experiment, d.variant, d.job_id, d.success, d.execution_time, d.actual_cost
"""

_HAS_FEEDBACK_SQL = """
SELECT count(*) = 2 FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'feedback' AND column_name IN ('job_id', 'score')
"""

_FEEDBACK_SQL = """
SELECT f.job_id, avg(f.score)::float8 AS score FROM feedback f
JOIN routing_decisions d ON d.job_id = f.job_id WHERE d.experiment IS NOT NULL GROUP BY f.job_id
"""


async def experiment_rows(
    db: asyncpg.Pool, *, experiment: str | None = None, since: float | None = None
) -> tuple[list[Mapping[str, Any]], dict[str, float]]:
    """The finished jobs of experiments, and the mean feedback score per job (empty without
    a feedback table)."""
    async with db.acquire() as conn:
        rows = await conn.fetch(_ROWS_SQL, experiment, since)
        scores: dict[str, float] = {}
        if await conn.fetchval(_HAS_FEEDBACK_SQL):
            scores = {r["job_id"]: r["score"] for r in await conn.fetch(_FEEDBACK_SQL)}
    return [dict(r) for r in rows], scores


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None: no trials)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], z: float = Z95) -> dict[str, Any]:
    """Mean, its normal-approximation interval, and the standard error (None with < 2 values)."""
    if not values:
        return {"mean": None, "ci95": None, "n": 0}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": None, "n": len(values), "se": None}
    se = statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "ci95": (mean - z * se, mean + z * se), "n": len(values), "se": se}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _rate(successes: int, n: int) -> dict[str, Any]:
    return {"rate": successes / n if n else None, "successes": successes, "n": n, "ci95": wilson(successes, n)}


def summarise(rows: list[Mapping[str, Any]], scores: Mapping[str, float]) -> dict[str, Any]:
    """One variant's figures."""
    ok = [r for r in rows if r["success"]]
    latencies = [float(r["execution_time"]) for r in ok if r["execution_time"] is not None]
    validated = sum(int(r["validated"]) for r in rows)
    failed_checks = sum(int(r["quality_failed"]) for r in rows)
    feedback = [scores[r["job_id"]] for r in rows if r["job_id"] in scores]
    return {
        "jobs": len(rows),
        "success": _rate(len(ok), len(rows)),
        "validator_pass": _rate(validated - failed_checks, validated),
        "feedback_score": mean_interval(feedback),
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "cost_per_job": mean_interval([float(r["cost"]) for r in rows]),
    }


def _rate_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """b - a for two rates, with a 95 % interval (Newcombe's method from the Wilson intervals)."""
    if not a["n"] or not b["n"]:
        return None
    (la, ua), (lb, ub) = a["ci95"], b["ci95"]
    pa, pb = a["rate"], b["rate"]
    diff = pb - pa
    low = diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return {"difference": diff, "ci95": (low, high), "significant": low > 0 or high < 0}


def _mean_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    if a.get("se") is None or b.get("se") is None:
        return None
    diff = b["mean"] - a["mean"]
    half = Z95 * math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    return {"difference": diff, "ci95": (diff - half, diff + half), "significant": abs(diff) > half}


def _verdict(diffs: dict[str, dict[str, Any] | None]) -> str:
    """Significant differences only; higher is better except for cost."""
    said = []
    for metric, d in diffs.items():
        if d is None or not d["significant"]:
            continue
        better = d["difference"] < 0 if metric == "cost_per_job" else d["difference"] > 0
        said.append(f"{metric} {'better' if better else 'worse'}")
    return "; ".join(said) if said else "no significant difference"


def compare(rows: Iterable[Mapping[str, Any]], scores: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``{experiment: {baseline, variants: {name: figures}, comparisons: {name: ...}}}``."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        grouped[r["experiment"]][r["variant"]].append(r)
    report: dict[str, Any] = {}
    for experiment, variants in sorted(grouped.items()):
        figures = {name: summarise(v, scores or {}) for name, v in sorted(variants.items())}
        baseline = BASELINE if BASELINE in figures else next(iter(figures))
        base = figures[baseline]
        comparisons = {}
        for name, fig in figures.items():
            if name == baseline:
                continue
            diffs = {
                "success": _rate_difference(base["success"], fig["success"]),
                "validator_pass": _rate_difference(base["validator_pass"], fig["validator_pass"]),
                "feedback_score": _mean_difference(base["feedback_score"], fig["feedback_score"]),
                "cost_per_job": _mean_difference(base["cost_per_job"], fig["cost_per_job"]),
            }
            comparisons[name] = {**diffs, "verdict": _verdict(diffs)}
        report[experiment] = {"baseline": baseline, "variants": figures, "comparisons": comparisons}
    return report
