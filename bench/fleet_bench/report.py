"""The figures of a run: the required keys, the issue's targets, and the printed table."""

from __future__ import annotations

import math
from typing import Any

#: key -> (comparison, target, unit, what); ">=" means higher is better.
TARGETS: dict[str, tuple[str, float | None, str, str]] = {
    "router_decisions_per_s": (">=", 50_000, "/s", "routing policy, one core"),
    "e2e_jobs_per_s": (">=", 2_000, "/s", "sustained end-to-end throughput"),
    "overhead_ms_p50": ("<=", 3.0, "ms", "e2e - emulator's own time, p50 at 500/s"),
    "overhead_ms_p95": ("<=", None, "ms", "e2e - emulator's own time, p95 at 500/s"),
    "overhead_ms_p99": ("<=", 15.0, "ms", "e2e - emulator's own time, p99 at 500/s"),
    "added_ms_p50": ("<=", None, "ms", "e2e - whole provider call, p50 at 500/s"),
    "added_ms_p99": ("<=", None, "ms", "e2e - whole provider call, p99 at 500/s"),
    "slow_provider_jobs_per_s": (">=", 990, "/s", "1.5 s provider, 1,000/s offered"),
    "slow_provider_success_rate": (">=", 1.0, "", "1.5 s provider: success share"),
    "slow_provider_p99_ms": ("<=", None, "ms", "1.5 s provider: e2e p99"),
    "fleet_peak_rss_mb": ("<=", 400, "MB", "fleet RSS peak during the slow case"),
    "ledger_rows_per_s": (">=", 50_000, "/s", "ledger writer on its own"),
    "provider_calls_per_s": (">=", 3_000, "/s", "one worker, 64 in flight"),
    "inference_ms_p99_8kb": ("<=", 0.2, "ms", "task type + complexity inference, 8 kB prompt, p99"),
    "router_decisions_inference_ratio": (">=", 0.5, "", "decisions/s with / without inference, unlabelled"),
    "inference_type_macro_heldout": (">=", 0.9, "", "inferred task type, macro accuracy, held-out"),
    "inference_easy_le3_heldout": (">=", 0.85, "", "easy prompts inferred <= 3, held-out"),
    "inference_hard_ge7_heldout": (">=", 0.85, "", "hard prompts inferred >= 7, held-out"),
}

#: Every key ``.bench/latest.json`` must carry with a number (the smoke test checks them).
REQUIRED_KEYS = (*TARGETS, "e2e_jobs_per_s_by_procs", "overhead_ms_by_rate")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def verdict(key: str, value: Any) -> str:
    op, target, _, _ = TARGETS[key]
    if not is_number(value):
        return "n/a"
    if target is None:
        return ""
    ok = value >= target if op == ">=" else value <= target
    return "ok" if ok else "MISS"


def _fmt(v: Any) -> str:
    if not is_number(v):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def table(figures: dict) -> str:
    rows = [("metric", "target", "measured", "", "what")]
    for key, (op, target, unit, what) in TARGETS.items():
        t = f"{op} {_fmt(target)}{unit}" if target is not None else "(report)"
        rows.append((key, t, f"{_fmt(figures.get(key))}{unit}", verdict(key, figures.get(key)), what))
    for rate, v in figures.get("overhead_ms_by_rate", {}).items():
        rows.append(
            (
                f"  overhead @ {rate}/s",
                "",
                f"p50 {_fmt(v.get('p50'))} / p95 {_fmt(v.get('p95'))} / "
                f"p99 {_fmt(v.get('p99'))} ms (added p50 {_fmt(v.get('added_p50'))})",
                "",
                f"done {_fmt(v.get('done_per_s'))}/s{'' if v.get('kept_up') else ' (did not keep up)'}",
            )
        )
    by = figures.get("e2e_jobs_per_s_by_procs", {})
    if by:
        rows.append(
            (
                "e2e_jobs_per_s_by_procs",
                "",
                " / ".join(f"{n}: {_fmt(v)}" for n, v in by.items()),
                "",
                "processes per service",
            )
        )
    for key in (
        "router_decisions_with_intake_per_s",
        "inference_ms_p50_8kb",
        "router_decisions_with_inference_per_s",
        "router_decisions_without_inference_per_s",
        "router_decisions_inference_ratio_with_intake",
        "router_decisions_inference_ratio_policy_mix",
        "inference_type_macro_dev",
        "inference_easy_le3_dev",
        "inference_hard_ge7_dev",
        "ledger_service_rows_per_s",
        "limit_js_publish_async_per_s",
        "limit_js_publish_awaited_per_s",
        "limit_js_fetch_ack_per_s",
        "limit_asyncpg_executemany_rows_per_s",
        "limit_asyncpg_copy_rows_per_s",
        "limit_msgspec_result_roundtrips_per_s",
    ):
        if key in figures:
            rows.append((key, "", _fmt(figures[key]), "", "context"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    inference = figures.get("details", {}).get("inference", {})
    if "inference" in inference:  # latency by size, decisions/s, accuracy and confusion tables
        from fleet_bench.inference_bench import table as inference_table

        lines += ["", inference_table(inference)]
    return "\n".join(lines)


def missing(figures: dict) -> list[str]:
    """Required keys without a number (nested dicts: every leaf that should be a number)."""
    bad = [k for k in TARGETS if not is_number(figures.get(k))]
    by = figures.get("e2e_jobs_per_s_by_procs")
    if not isinstance(by, dict) or not by or not all(is_number(v) for v in by.values()):
        bad.append("e2e_jobs_per_s_by_procs")
    rates = figures.get("overhead_ms_by_rate")
    if (
        not isinstance(rates, dict)
        or not rates
        or not all(is_number(v.get(q)) for v in rates.values() for q in ("p50", "p95", "p99"))
    ):
        bad.append("overhead_ms_by_rate")
    return bad
