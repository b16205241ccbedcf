"""Ratios between cases of one repetition, and medians with their spread over repetitions.

Every repetition runs every case once; a ratio is taken within one repetition (the fleet and
the limit it is compared to measured minutes apart at most), then the median of each figure
and each ratio over the repetitions is the headline, with its min and max as the spread.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

#: figure -> the limit of the machine it is divided by (``<figure>_vs_limit``)
LIMITS = {
    # measured in the policy's own process, around it
    "router_decisions_per_s": "router_limit_msgspec_roundtrips_per_s",
    "router_decisions_with_intake_per_s": "router_limit_msgspec_roundtrips_per_s",
    "ledger_rows_per_s": "limit_asyncpg_copy_rows_per_s",
    "ledger_service_rows_per_s": "limit_asyncpg_copy_rows_per_s",
}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 4) if _num(a) and _num(b) and b else None


def derived(figures: dict) -> dict:
    """Ratios across the cases of one repetition."""
    out: dict = {}
    for key, limit in LIMITS.items():
        r = _ratio(figures.get(key), figures.get(limit))
        if r is not None:
            out[f"{key}_vs_limit"] = r
    # the slow case offers the fast case's capacity (or less, when capped): its share of it
    r = _ratio(figures.get("slow_provider_jobs_per_s"), figures.get("slow_provider_offered_per_s"))
    if r is not None:
        out["slow_provider_vs_fast"] = r
    # one worker's adapter against plain aiohttp, both 64 in flight at the same emulator
    r = _ratio(figures.get("provider_calls_per_s"), figures.get("direct_jobs_per_s_64"))
    if r is not None:
        out["provider_calls_per_s_vs_direct"] = r
    by = figures.get("e2e_jobs_per_s_by_procs")
    if isinstance(by, dict) and _num(by.get("1")):
        out["e2e_jobs_per_s_by_procs_vs_1"] = {n: _ratio(v, by["1"]) for n, v in by.items()}
    return out


def _median(values: list) -> Any:
    nums = [v for v in values if _num(v)]
    if nums:
        m = statistics.median(nums)
        return round(m, 4) if isinstance(m, float) else m
    return values[-1] if values else None


def aggregate(reps: list[dict]) -> tuple[dict, dict]:
    """(medians, spread): the median of every numeric leaf over the repetitions, and for
    every top-level numeric figure its ``{min, max, runs}``."""
    medians = _merge(reps)
    spread: dict = {}
    for key in medians:
        values = [r.get(key) for r in reps]
        nums: list[float] = [float(v) for v in values if v is not None and _num(v)]
        if nums and len(nums) == len([v for v in values if v is not None]):
            spread[key] = {"min": min(nums), "max": max(nums), "runs": len(nums)}
    return medians, spread


def _merge(items: list) -> Any:
    present = [i for i in items if i is not None]
    if present and all(isinstance(i, dict) for i in present):
        keys: list = []
        for d in present:
            keys += [k for k in d if k not in keys]
        return {k: _merge([d.get(k) for d in present]) for k in keys}
    return _median(present)


def spread_text(spread: dict, key: str) -> str:
    s = spread.get(key)
    if not s or s["runs"] < 2:
        return ""
    return f"{_fmt(s['min'])}-{_fmt(s['max'])} ({s['runs']})"


def _fmt(v: Any) -> str:
    if not _num(v):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"
