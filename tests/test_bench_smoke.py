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

from fleet_bench import loadgen, profiling, report

pytestmark = pytest.mark.integration


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile([], 50) is None


def test_profile_summary_counts_self_and_inclusive_frames():
    raw = "main (a.py:1);handle (b.py:2);encode (c.py:3) 30\nmain (a.py:1);handle (b.py:2) 10\n"
    summary = profiling.summarise(raw, duration_s=1.0)
    assert summary["samples"] == 40
    assert summary["self"][0] == ["encode (c.py:3)", 75.0]
    assert ["handle (b.py:2)", 100.0] in summary["inclusive"]


def test_missing_flags_absent_and_non_numeric_figures():
    figures = {key: 1.0 for key in report.TARGETS}
    figures["e2e_jobs_per_s_by_procs"] = {"1": 10.0}
    figures["overhead_ms_by_rate"] = {"100": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}
    assert report.missing(figures) == []
    figures["overhead_ms_p99"] = None
    figures["e2e_jobs_per_s_by_procs"] = {}
    assert report.missing(figures) == ["overhead_ms_p99", "e2e_jobs_per_s_by_procs"]


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
    assert len(figures["overhead_ms_by_rate"]) == 3
    assert done.returncode == 0, done.stderr[-3000:]
