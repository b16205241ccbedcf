"""A short smoke run of the benchmark suite (``make bench`` is the real one).

It checks that the suite runs end to end and writes every figure as a number; it asserts
nothing about timings (this is not a timed unit test). Everything runs on loopback: a
private nats-server, a fresh database on the test PostgreSQL, the fleet as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fleet_bench import compare, profiling, ratios, report, stats

pytestmark = pytest.mark.integration


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile([1.0, 2.0], 0.99) == 1.0  # q is 0..100: 0.99 is not the 99th
    assert stats.percentile([], 50) is None


def test_profile_summary_counts_self_and_inclusive_frames():
    raw = "main (a.py:1);handle (b.py:2);encode (c.py:3) 30\nmain (a.py:1);handle (b.py:2) 10\n"
    summary = profiling.summarise(raw, duration_s=1.0)
    assert summary["samples"] == 40
    assert summary["self"][0] == ["encode (c.py:3)", 75.0]
    assert ["handle (b.py:2)", 100.0] in summary["inclusive"]


def test_missing_flags_absent_and_non_numeric_figures():
    figures = {key: 1.0 for key in (*report.TARGETS, *report.HEADLINES)}
    figures["e2e_jobs_per_s_by_procs"] = {"1": 10.0}
    figures["overhead_ms_by_rate"] = {"100": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}
    assert report.missing(figures) == []
    figures["overhead_ms_p99"] = None
    figures["e2e_jobs_per_s_by_procs"] = {}
    assert report.missing(figures) == ["overhead_ms_p99", "e2e_jobs_per_s_by_procs"]


def test_repetitions_give_medians_spread_and_paired_ratios():
    reps = [
        {"router_decisions_per_s": 100.0, "router_limit_msgspec_roundtrips_per_s": 200.0, "by": {"1": 3.0}},
        {"router_decisions_per_s": 300.0, "router_limit_msgspec_roundtrips_per_s": 400.0, "by": {"1": 1.0}},
        {"router_decisions_per_s": 200.0, "router_limit_msgspec_roundtrips_per_s": 1000.0, "by": {"1": 2.0}},
    ]
    reps = [r | ratios.derived(r) for r in reps]
    medians, spread = ratios.aggregate(reps)
    assert medians["router_decisions_per_s"] == 200.0
    assert medians["by"] == {"1": 2.0}
    # each ratio is taken within its repetition (0.5, 0.75, 0.2), then the median of those
    assert medians["router_decisions_per_s_vs_limit"] == 0.5
    assert spread["router_decisions_per_s_vs_limit"] == {"min": 0.2, "max": 0.75, "runs": 3}


def test_closed_loop_figures_carry_ratios_to_floor_and_direct():
    def step(target, n, rate, p50, added, cpu):
        return {
            "target": target,
            "in_flight": n,
            "jobs_per_s": rate,
            "success_rate": 1.0,
            "latency_ms": {"p50": p50, "p99": p50 * 2},
            "added_ms": {"p50": added},
            "cpu_ms_per_job": cpu,
        }

    steps = [
        step("direct", 64, 2000.0, 0.5, 0.0, {"emulator": 0.1}),
        step("floor", 64, 1000.0, 2.0, 1.0, {"floor-intake": 0.2, "floor-worker": 0.3, "floor-writer": 0.1}),
        step("fleet", 64, 800.0, 4.0, 3.0, {"router-0": 0.5, "worker-0": 0.4, "ledger-0": 0.3, "nats-server": 1.0}),
    ]
    got = compare.figures({"compare": {"steps": steps}})
    assert got["fleet_jobs_per_s_64_vs_floor"] == 0.8
    assert got["fleet_jobs_per_s_64_vs_direct"] == 0.4
    assert got["floor_jobs_per_s_64_vs_direct"] == 0.5
    assert got["fleet_added_ms_p50_64_vs_floor"] == 3.0
    assert got["cpu_ms_per_job_fleet_64"] == 1.2  # router + worker + ledger; nats-server apart
    assert got["cpu_ms_per_job_floor_64"] == 0.6
    assert got["cpu_ms_per_job_fleet_64_vs_floor"] == 2.0
    assert got["cpu_ms_per_job_by_process"]["64"]["fleet"]["nats-server"] == 1.0


@pytest.mark.timeout(420)
def test_smoke_run_writes_every_figure(tmp_path, postgres_admin_dsn):
    env = {**os.environ, "DATABASE_URL": postgres_admin_dsn, "FLEET_BENCH_DIR": str(tmp_path)}
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "fleet_bench", "--smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == {}, figures["errors"]
    assert report.missing(figures) == [], done.stdout[-3000:]
    for key in report.REQUIRED_KEYS:
        assert key in figures
    assert set(figures["e2e_jobs_per_s_by_procs"]) == {"1", "2", "4"}
    # the floor and the direct call ran beside the fleet, at both numbers in flight
    for n in (1, 64):
        for target in ("fleet", "floor", "direct"):
            assert figures[f"{target}_jobs_per_s_{n}"] > 0, target
        assert report.is_number(figures[f"fleet_jobs_per_s_{n}_vs_floor"])
        assert report.is_number(figures[f"floor_jobs_per_s_{n}_vs_direct"])
    assert figures["cpu_ms_per_job_floor_64"] > 0
    assert len(figures["overhead_ms_by_rate"]) == 3
    assert done.returncode == 0, done.stderr[-3000:]
