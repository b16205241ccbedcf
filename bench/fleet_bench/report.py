"""The figures of a run: the targets (as ratios), the required keys, and the printed table.

Targets are ratios measured in the same run, so they hold on any machine: the fleet against
its floor (``fleet_bench.floor``, the same hops with none of the logic), the slow provider
against the fleet's own fast capacity, the policy and the ledger writer against the limits
of the machine's libraries (a msgspec round trip, asyncpg COPY). Absolute figures are
reported beside them as context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fleet_bench.ratios import spread_text

#: ratio key -> (comparison, target, unit, what); ">=" means higher is better.
TARGETS: dict[str, tuple[str, float | None, str, str]] = {
    "fleet_jobs_per_s_64_vs_floor": (">=", 0.70, "x", "fleet throughput / floor's, 64 in flight"),
    "fleet_added_ms_p50_1_vs_floor": ("<=", 1.3, "x", "fleet p50 added latency / floor's, 1 in flight"),
    "slow_provider_vs_fast": (">=", 0.95, "x", "1.5 s provider: done / offered (the fleet's fast capacity)"),
    "slow_provider_success_rate": (">=", 1.0, "", "1.5 s provider: success share"),
    # chosen from the measurements: see docs/performance.md, "Targets"
    "router_decisions_per_s_vs_limit": (">=", 0.2, "x", "decisions/s / msgspec Result round trips/s, same process"),
    "ledger_rows_per_s_vs_limit": (">=", 0.1, "x", "ledger writer rows/s / asyncpg COPY rows/s, same connection"),
    "cpu_ms_per_job_fleet_64_vs_floor": ("<=", None, "x", "fleet CPU per job / floor's, 64 in flight"),
    "fleet_peak_rss_mb": ("<=", 400, "MB", "fleet RSS peak during the slow case"),
    # issue 11: inference of task type and complexity
    "inference_ms_p99_8kb": ("<=", 0.2, "ms", "task type + complexity inference, 8 kB prompt, p99"),
    "router_process_inference_ratio": (">=", 0.5, "x", "router process: decisions per CPU s with / without inference"),
    "inference_type_macro_heldout": (">=", 0.9, "", "inferred task type, macro accuracy, held-out"),
    "inference_easy_le3_heldout": (">=", 0.85, "", "easy prompts inferred <= 3, held-out"),
    "inference_hard_ge7_heldout": (">=", 0.85, "", "hard prompts inferred >= 7, held-out"),
    # issue 10: the HTTP gateway against the NATS request-reply path, same run
    "gateway_added_ms_p50": ("<=", 1.0, "ms", "gateway p50 minus NATS request-reply p50, 1 in flight"),
    "gateway_throughput_share": (">=", 0.8, "x", "gateway requests/s / NATS path's, 64 in flight"),
}

#: headline absolute figures: key -> what (``<key>_vs_floor`` / ``_vs_direct`` beside them)
HEADLINES: dict[str, str] = {
    "fleet_jobs_per_s_64": "fleet jobs/s, closed loop, 64 in flight",
    "fleet_jobs_per_s_1": "fleet jobs/s, 1 in flight",
    "fleet_latency_ms_p50_1": "fleet latency p50, 1 in flight (ms)",
    "fleet_added_ms_p50_1": "fleet added latency p50, 1 in flight (ms)",
    "fleet_latency_ms_p50_64": "fleet latency p50, 64 in flight (ms)",
    "fleet_added_ms_p50_64": "fleet added latency p50, 64 in flight (ms)",
    "floor_jobs_per_s_64": "floor jobs/s, 64 in flight",
    "floor_jobs_per_s_1": "floor jobs/s, 1 in flight",
    "floor_latency_ms_p50_1": "floor latency p50, 1 in flight (ms)",
    "floor_added_ms_p50_1": "floor added latency p50, 1 in flight (ms)",
    "direct_jobs_per_s_64": "direct HTTP calls/s, 64 in flight",
    "direct_jobs_per_s_1": "direct HTTP calls/s, 1 in flight",
    "direct_latency_ms_p50_1": "direct HTTP call p50, 1 in flight (ms)",
    "cpu_ms_per_job_fleet_64": "fleet CPU ms/job (router+worker+ledger), 64 in flight",
    "cpu_ms_per_job_floor_64": "floor CPU ms/job (intake+worker+writer), 64 in flight",
    "slow_provider_jobs_per_s": "1.5 s provider: jobs/s done",
    "router_decisions_per_s": "routing policy, one core",
    "ledger_rows_per_s": "ledger writer on its own",
    "provider_calls_per_s": "one worker's adapter, 64 in flight",
    "e2e_jobs_per_s": "open-loop ramp: highest done rate (submit + ledger commit)",
    "overhead_ms_p50": "open loop at 500/s: e2e - emulator's own time, p50",
    "overhead_ms_p99": "open loop at 500/s: e2e - emulator's own time, p99",
}

#: Every key ``.bench/latest.json`` must carry with a number (the smoke test checks them).
REQUIRED_KEYS = (*TARGETS, *HEADLINES, "e2e_jobs_per_s_by_procs", "overhead_ms_by_rate")

_CONTEXT = (
    "router_decisions_with_intake_per_s",
    "inference_ms_p50_8kb",
    "router_decisions_with_inference_per_s",
    "router_decisions_without_inference_per_s",
    "router_process_decisions_per_cpu_s_with_inference",
    "router_process_decisions_per_cpu_s_without",
    "router_decisions_inference_ratio",
    "router_decisions_inference_ratio_with_intake",
    "router_decisions_inference_ratio_policy_mix",
    "inference_type_macro_dev",
    "inference_easy_le3_dev",
    "inference_hard_ge7_dev",
    "gateway_added_ms_p99",
    "ledger_service_rows_per_s",
    "limit_js_publish_async_per_s",
    "limit_js_publish_awaited_per_s",
    "limit_js_fetch_ack_per_s",
    "limit_asyncpg_executemany_rows_per_s",
    "limit_asyncpg_copy_rows_per_s",
    "limit_msgspec_result_roundtrips_per_s",
)


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


def _x(v: Any) -> str:
    return f"{v:.2f}x" if is_number(v) else ""


def _lay_out(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def table(figures: dict) -> str:
    spread = figures.get("spread", {})
    reps = figures.get("repetitions", 1)
    head = [("target (ratio)", "target", "median", "spread (min-max, runs)", "", "what")]
    for key, (op, target, unit, what) in TARGETS.items():
        t = f"{op} {_fmt(target)}{unit}" if target is not None else "(report)"
        value = figures.get(key)
        shown = _x(value) if unit == "x" else f"{_fmt(value)}{unit}"
        head.append((key, t, shown, spread_text(spread, key), verdict(key, value), what))
    body = [("figure", "median", "vs floor", "vs direct", "spread (min-max, runs)", "what")]
    for key, what in HEADLINES.items():
        if key not in figures:
            continue
        body.append(
            (
                key,
                _fmt(figures.get(key)),
                _x(figures.get(f"{key}_vs_floor")),
                _x(figures.get(f"{key}_vs_direct")),
                spread_text(spread, key),
                what,
            )
        )
    for key in _CONTEXT:
        if key in figures:
            body.append((key, _fmt(figures[key]), "", "", spread_text(spread, key), "context"))
    lines = [_machine_line(figures, reps), *_lay_out(head), "", *_lay_out(body)]
    lines += _cpu_lines(figures) + _by_lines(figures)
    return "\n".join(lines)


def _machine_line(figures: dict, reps: int) -> str:
    machine = figures.get("meta", {}).get("machine", {})
    load = machine.get("loadavg_at_start")
    return (
        f"medians over {reps} repetition(s); {machine.get('cpus', '?')} cores, load average at start {load}; "
        "the machine's limits are the limit_* rows"
    )


def _cpu_lines(figures: dict) -> list[str]:
    cpu = figures.get("cpu_ms_per_job_by_process", {})
    out = []
    for n, by_target in cpu.items():
        for target, procs in by_target.items():
            parts = ", ".join(f"{p} {_fmt(v)}" for p, v in sorted(procs.items(), key=lambda kv: -kv[1]))
            out.append(f"  CPU ms/job, {target}, {n} in flight: {parts}")
    return ["", *out] if out else []


def _by_lines(figures: dict) -> list[str]:
    out = []
    for rate, v in figures.get("overhead_ms_by_rate", {}).items():
        out.append(
            f"  overhead @ {rate}/s: p50 {_fmt(v.get('p50'))} / p95 {_fmt(v.get('p95'))} / p99 {_fmt(v.get('p99'))}"
            f" ms (added p50 {_fmt(v.get('added_p50'))}), done {_fmt(v.get('done_per_s'))}/s"
            f"{'' if v.get('kept_up') else ' (did not keep up)'}"
        )
    by = figures.get("e2e_jobs_per_s_by_procs", {})
    if by:
        out.append("  e2e jobs/s by processes per service: " + " / ".join(f"{n}: {_fmt(v)}" for n, v in by.items()))
    return ["", *out] if out else []


def missing(figures: dict) -> list[str]:
    """Required keys without a number (nested dicts: every leaf that should be a number)."""
    bad = [k for k in (*TARGETS, *HEADLINES) if not is_number(figures.get(k))]
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
