"""Writes deploy/grafana/dashboards/fleet.json, the provisioned Grafana dashboard.

The panels are data here (title, kind, PromQL), so the JSON stays consistent and every
query can be checked against the metrics catalogue (tests/test_deploy.py does).

    python deploy/grafana/dashboard.py            # rewrite the JSON
    python deploy/grafana/dashboard.py --check    # exit 1 when the JSON is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "fleet.json"
DATASOURCE = {"type": "prometheus", "uid": "fleet-prometheus"}
RATE = "[$__rate_interval]"


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


def p95(metric: str, by: str = "", quantile: str = "0.95") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket{RATE})))"


HEALTH_CODE = (
    'max by (model) (fleet_model_health{state="ramping"}) + 2 * max by (model) (fleet_model_health{state="cooling"})'
    ' + 3 * max by (model) (fleet_model_health{state="down"})'
)

#: (row title, [(panel title, kind, unit, [queries])]); kind: timeseries | stat | state | bar
ROWS = [
    (
        "Jobs",
        [
            (
                "Jobs / s by outcome",
                "timeseries",
                "reqps",
                [q(f"sum by (outcome) (rate(fleet_jobs_total{RATE}))", "{{outcome}}")],
            ),
            (
                "Job latency (accepted to Result)",
                "timeseries",
                "s",
                [q(p95("fleet_job_duration_seconds", quantile=x), f"p{x[2:]}") for x in ("0.5", "0.95", "0.99")],
            ),
            (
                "Failed jobs / s by error code",
                "timeseries",
                "reqps",
                [q(f'sum by (error_code) (rate(fleet_jobs_total{{outcome="failure"}}{RATE}))', "{{error_code}}")],
            ),
            (
                "Cost today vs budget (USD)",
                "stat",
                "currencyUSD",
                [
                    q("max(fleet_budget_spent_usd)", "spent"),
                    q("max(fleet_budget_daily_usd)", "budget"),
                    q("max(fleet_budget_remaining_usd)", "left"),
                ],
            ),
        ],
    ),
    (
        "Models",
        [
            (
                "Success rate by model",
                "timeseries",
                "percentunit",
                [
                    q(
                        f'sum by (model) (rate(fleet_attempts_total{{outcome="success"}}{RATE}))'
                        f" / sum by (model) (rate(fleet_attempts_total{RATE}))",
                        "{{model}}",
                    )
                ],
            ),
            (
                "Call latency p95 by model",
                "timeseries",
                "s",
                [
                    q(
                        p95("gen_ai_client_operation_duration_seconds", "gen_ai_request_model"),
                        "{{gen_ai_request_model}}",
                    )
                ],
            ),
            (
                "Time to first chunk p95 (streamed calls)",
                "timeseries",
                "s",
                [
                    q(
                        p95("gen_ai_client_operation_time_to_first_chunk_seconds", "gen_ai_request_model"),
                        "{{gen_ai_request_model}}",
                    ),
                    q(p95("gen_ai_server_time_to_first_token_seconds"), "fleet (job accepted to first token)"),
                ],
            ),
            (
                "Cost USD / hour by model",
                "timeseries",
                "currencyUSD",
                [q(f"3600 * sum by (model) (rate(fleet_cost_usd_total{RATE}))", "{{model}}")],
            ),
            (
                "Tokens / s",
                "timeseries",
                "short",
                [q(f"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{RATE}))", "{{gen_ai_token_type}}")],
            ),
            ("Health board (0 up, 1 ramping, 2 cooling, 3 down)", "state", "none", [q(HEALTH_CODE, "{{model}}")]),
            (
                "Admitted share",
                "timeseries",
                "percentunit",
                [q("max by (model) (fleet_model_admitted_share)", "{{model}}")],
            ),
        ],
    ),
    (
        "Routing",
        [
            (
                "Decisions / s by rule",
                "timeseries",
                "reqps",
                [q(f"sum by (rule) (rate(fleet_decisions_total{RATE}))", "{{rule}}")],
            ),
            (
                "Escalation paths (last hour)",
                "bar",
                "short",
                [
                    q(
                        "sum by (from_model, to_model) (increase(fleet_escalations_total[1h]))",
                        "{{from_model}} -> {{to_model}}",
                    )
                ],
            ),
            (
                "Failed attempts / s by class and code",
                "timeseries",
                "reqps",
                [
                    q(
                        f'sum by (error_class, error_code) (rate(fleet_attempts_total{{outcome="failure"}}{RATE}))',
                        "{{error_class}} {{error_code}}",
                    )
                ],
            ),
            (
                "Rate-limit waits / s",
                "timeseries",
                "reqps",
                [q(f"sum by (model, source) (rate(fleet_rate_limit_waits_total{RATE}))", "{{model}} ({{source}})")],
            ),
        ],
    ),
    (
        "Queues",
        [
            (
                "Consumer lag (messages not yet delivered)",
                "timeseries",
                "short",
                [q("max by (consumer) (fleet_jetstream_consumer_pending_messages)", "{{consumer}}")],
            ),
            (
                "Ack pending and redelivered",
                "timeseries",
                "short",
                [
                    q("max by (consumer) (fleet_jetstream_consumer_ack_pending_messages)", "{{consumer}} ack pending"),
                    q("max by (consumer) (fleet_jetstream_consumer_redelivered_messages)", "{{consumer}} redelivered"),
                ],
            ),
            (
                "In flight vs limit",
                "timeseries",
                "short",
                [
                    q("sum by (consumer) (fleet_inflight_messages)", "{{consumer}} in flight"),
                    q("sum by (consumer) (fleet_concurrency_limit)", "{{consumer}} limit"),
                ],
            ),
            (
                "Redeliveries / s",
                "timeseries",
                "reqps",
                [q(f"sum by (consumer) (rate(fleet_redeliveries_total{RATE}))", "{{consumer}}")],
            ),
            (
                "Dead letters",
                "stat",
                "short",
                [q('max by (stream) (fleet_jetstream_stream_messages{stream=~".+_DEADLETTER"})', "{{stream}}")],
            ),
        ],
    ),
    (
        "Ledger",
        [
            ("Batch size p95", "timeseries", "short", [q(p95("fleet_ledger_batch_size", "consumer"), "{{consumer}}")]),
            (
                "Commit latency p95",
                "timeseries",
                "s",
                [q(p95("fleet_ledger_commit_seconds", "consumer"), "{{consumer}}")],
            ),
            (
                "Rows written / s",
                "timeseries",
                "short",
                [q(f"sum by (table) (rate(fleet_ledger_rows_written_total{RATE}))", "{{table}}")],
            ),
            (
                "Ledger errors / s",
                "timeseries",
                "short",
                [q(f"sum by (consumer, kind) (rate(fleet_ledger_errors_total{RATE}))", "{{consumer}} {{kind}}")],
            ),
            (
                "Stale scrape-time sources / s",
                "timeseries",
                "short",
                [q(f"sum by (collector) (rate(fleet_metrics_source_errors_total{RATE}))", "{{collector}}")],
            ),
        ],
    ),
]

_KIND = {"timeseries": "timeseries", "stat": "stat", "state": "state-timeline", "bar": "bargauge"}
_HEALTH_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "up", "color": "green"},
            "1": {"text": "ramping", "color": "yellow"},
            "2": {"text": "cooling", "color": "orange"},
            "3": {"text": "down", "color": "red"},
        },
    }
]


def panel(panel_id: int, title: str, kind: str, unit: str, queries: list[dict], x: int, y: int) -> dict:
    targets = [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), **t} for i, t in enumerate(queries)]
    defaults: dict = {"unit": unit}
    if kind == "state":
        defaults["mappings"] = _HEALTH_MAPPING
    return {
        "id": panel_id,
        "type": _KIND[kind],
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
        "targets": targets,
    }


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        for i, (title, kind, unit, queries) in enumerate(row_panels):
            panels.append(panel(panel_id, title, kind, unit, queries, x=12 * (i % 2), y=y + 8 * (i // 2)))
            panel_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "model-router-fleet",
        "title": "Model Router Fleet",
        "tags": ["model-router-fleet"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        raise SystemExit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
