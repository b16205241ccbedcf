"""The soak's report: its verdict and the CPU shares it books per minute (pure parts)."""

from __future__ import annotations

from fleet_bench.cpu_meter import CpuMeter, machine_cpu_s
from fleet_bench.soak import Minute, verdict


def rows(*p99s: float) -> list[dict]:
    return [Minute(sent=10, ok=10, latencies_ms=[p] * 100).row(i) for i, p in enumerate(p99s)]


def test_the_verdict_compares_the_last_minute_with_the_second():
    rss = {"start": {"router": 100}, "warm": {"router": 100}, "end": {"router": 109}}
    held = verdict(rows(500.0, 100.0, 300.0, 119.0), rss)
    assert held["p99_ok"] and held["rss_ok"] and held["p99_drift_last_vs_second"] == 0.19
    missed = verdict(rows(100.0, 100.0, 121.0), {**rss, "end": {"router": 111}})
    assert not missed["p99_ok"] and not missed["rss_ok"]


def test_a_minute_row_carries_its_slowest_job_and_its_cpu():
    minute = Minute(sent=3, ok=3, latencies_ms=[1.0, 2.0, 9.5], cpu={"router": 0.25})
    row = minute.row(0)
    assert row["max_ms"] == 9.5 and row["cpu_cores"] == {"router": 0.25} and row["p50_ms"] == 2.0


def test_cpu_shares_fold_postgres_backends_and_name_the_rest_of_the_machine():
    meter = CpuMeter({"router": 1}, lambda t: 0)
    meter.buckets[0] = {"router": 30.0, "loadgen": 6.0, "pg:11": 3.0, "pg:12": 3.0, "machine": 90.0}
    assert meter.shares(0, 60.0) == {"router": 0.5, "loadgen": 0.1, "postgres": 0.1, "other": 0.8}
    assert meter.shares(1, 60.0) == {"other": 0.0}  # a bucket nothing was booked in


def test_the_machine_has_been_busy_for_some_time():
    busy, total = machine_cpu_s()
    assert 0.0 < busy <= total


def test_a_minute_row_splits_its_p99_into_call_inside_and_edge():
    minute = Minute(sent=2, ok=2, latencies_ms=[25.0, 40.0], calls_ms=[20.0, 21.0], inside_ms=[3.0, 15.0])
    minute.edges_ms += [2.0, 4.0]
    assert minute.row(0)["p99_parts_ms"] == {"call": 21.0, "inside": 15.0, "edge": 4.0}
