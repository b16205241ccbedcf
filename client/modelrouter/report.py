"""``modelrouter report``: the ledger's figures as one self-contained HTML file.

Inline SVG plots, inline CSS, no script and no external asset, so the file opens anywhere
and survives being attached to a mail. Every figure the plots draw is also printed in a
table beside it; headline numbers carry ``data-metric`` attributes (a test reads them back
from the page Chromium rendered and checks them against the ledger).
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

#: One colour per model (sorted by name), cycled.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
WIDTH = 760
BAR_AREA = 200


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def usd(value: float | None) -> str:
    return f"${(value or 0.0):,.6f}"


def metric(name: str, text: str) -> str:
    return f'<span data-metric="{esc(name)}">{esc(text)}</span>'


def colours(models: Iterable[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(models)))}


def legend(colour: dict[str, str]) -> str:
    items = "".join(f'<span class="key"><i style="background:{c}"></i>{esc(m)}</span>' for m, c in colour.items())
    return f'<div class="legend">{items}</div>'


def stacked_bars(columns: list[tuple[str, dict[str, float]]], colour: dict[str, str], unit: str) -> str:
    """Vertical stacked bars: one column per label, one segment per model."""
    top = max((sum(v.values()) for _, v in columns), default=0.0) or 1.0
    step = max(18, min(80, (WIDTH - 60) // max(1, len(columns))))
    height = BAR_AREA + 50
    parts = [f'<svg class="plot" width="{max(220, 60 + step * len(columns))}" height="{height}" role="img">']
    parts.append(f'<text x="4" y="12" class="axis">{esc(unit)} max {top:.6g}</text>')
    for i, (label, values) in enumerate(columns):
        x, y = 50 + i * step, float(BAR_AREA + 20)
        for model in sorted(values):
            h = values[model] / top * BAR_AREA
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{step - 6}" height="{h:.1f}" fill="{colour[model]}">'
                f"<title>{esc(label)} {esc(model)}: {values[model]:.6g}</title></rect>"
            )
        parts.append(
            f'<text x="{x}" y="{BAR_AREA + 36}" class="axis">{esc(label[5:] if len(label) == 10 else label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(columns: list[tuple[str, dict[str, float]]], colour: dict[str, str]) -> str:
    """Bars side by side per label, one per series of ``colour`` (in its order)."""
    top = max((max(v.values(), default=0.0) for _, v in columns), default=0.0) or 1.0
    series = list(colour)
    bar = 16
    step = bar * len(series) + 14
    parts = [f'<svg class="plot" width="{max(220, 60 + step * len(columns))}" height="{BAR_AREA + 50}" role="img">']
    parts.append(f'<text x="4" y="12" class="axis">USD max {top:.6g}</text>')
    for i, (label, values) in enumerate(columns):
        x = 50 + i * step
        for j, name in enumerate(series):
            h = values.get(name, 0.0) / top * BAR_AREA
            parts.append(
                f'<rect x="{x + j * bar}" y="{BAR_AREA + 20 - h:.1f}" width="{bar - 2}" height="{h:.1f}" '
                f'fill="{colour[name]}"><title>{esc(label)} {esc(name)}: {values.get(name, 0.0):.6g}</title></rect>'
            )
        parts.append(f'<text x="{x}" y="{BAR_AREA + 36}" class="axis">{esc(label[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(rows: list[tuple[str, float, str]], *, label_w: int = 260) -> str:
    """Horizontal bars: (label, value, colour)."""
    top = max((v for _, v, _ in rows), default=0.0) or 1.0
    parts = [f'<svg class="plot" width="{WIDTH}" height="{22 * len(rows) + 10}" role="img">']
    for i, (label, value, fill) in enumerate(rows):
        w = value / top * (WIDTH - label_w - 80)
        y = 5 + 22 * i
        parts.append(f'<text x="0" y="{y + 14}" class="axis">{esc(label[:42])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="16" fill="{fill}"></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" class="axis">{value:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def box_plots(latency: dict[str, dict[str, float]], colour: dict[str, str]) -> str:
    """One horizontal box per model: whiskers p5-p95, box p25-p75, a line at p50 (ms)."""
    top = max((q["p95"] for q in latency.values()), default=0.0) or 1.0
    scale = (WIDTH - 200) / top
    parts = [f'<svg class="plot" width="{WIDTH}" height="{34 * len(latency) + 30}" role="img">']
    for i, (model, q) in enumerate(sorted(latency.items())):
        y = 10 + 34 * i
        x = {k: 150 + q[k] * scale for k in ("p5", "p25", "p50", "p75", "p95")}
        parts += [
            f'<text x="0" y="{y + 16}" class="axis">{esc(model)}</text>',
            f'<line x1="{x["p5"]:.1f}" x2="{x["p95"]:.1f}" y1="{y + 12}" y2="{y + 12}" stroke="#555"></line>',
            f'<rect x="{x["p25"]:.1f}" y="{y}" width="{max(1.0, x["p75"] - x["p25"]):.1f}" height="24" '
            f'fill="{colour.get(model, "#999")}"><title>{esc(model)} p25 {q["p25"]:.1f} ms, p75 {q["p75"]:.1f} ms</title></rect>',
            f'<line x1="{x["p50"]:.1f}" x2="{x["p50"]:.1f}" y1="{y}" y2="{y + 24}" stroke="#000" stroke-width="2"></line>',
        ]
    parts.append(f'<text x="150" y="{34 * len(latency) + 26}" class="axis">0 ms … {top:.0f} ms (p95 max)</text></svg>')
    return "".join(parts)


def heatmap(mix: list[dict[str, Any]]) -> str:
    """Jobs by task type (rows) and complexity 1-10 (columns)."""
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for r in mix:
        counts[(r["task_type"], r["complexity"] or 0)] += r["jobs"]
    tasks = sorted({t for t, _ in counts})
    top = max(counts.values(), default=1)
    parts = [f'<svg class="plot" width="{170 + 40 * 10}" height="{26 * len(tasks) + 30}" role="img">']
    for c in range(1, 11):
        parts.append(f'<text x="{170 + 40 * (c - 1) + 14}" y="14" class="axis">{c}</text>')
    for i, task in enumerate(tasks):
        y = 20 + 26 * i
        parts.append(f'<text x="0" y="{y + 17}" class="axis">{esc(task)}</text>')
        for c in range(1, 11):
            n = counts.get((task, c), 0)
            shade = 0.08 + 0.92 * n / top if n else 0.0
            parts.append(
                f'<rect x="{170 + 40 * (c - 1)}" y="{y}" width="38" height="24" fill="#4e79a7" fill-opacity="{shade:.2f}">'
                f"<title>{esc(task)} complexity {c}: {n} jobs</title></rect>"
            )
            if n:
                parts.append(f'<text x="{170 + 40 * (c - 1) + 6}" y="{y + 16}" class="cell">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(head: list[str], rows: Iterable[list[Any]]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _cost_section(data: dict[str, Any], colour: dict[str, str]) -> str:
    by_day: dict[str, dict[str, float]] = defaultdict(dict)
    for r in data["cost_by_day_model"]:
        by_day[r["day"]][r["model"]] = r["cost"]
    columns = sorted(by_day.items())
    rows = [[esc(day), esc(model), usd(cost)] for day, values in columns for model, cost in sorted(values.items())]
    return (
        "<h2>Cost per day by model</h2>"
        + legend(colour)
        + stacked_bars(columns, colour, "USD")
        + table(["day (UTC)", "model", "cost"], rows)
    )


def _mix_section(data: dict[str, Any], colour: dict[str, str]) -> str:
    by_task: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in data["routing_mix"]:
        by_task[r["task_type"]][r["model"]] += r["jobs"]
    rows = [
        (f"{task} → {model}", float(n), colour.get(model, "#999"))
        for task, models in sorted(by_task.items())
        for model, n in sorted(models.items())
    ]
    return (
        "<h2>Routing mix</h2><p>Jobs by task type and complexity:</p>"
        + heatmap(data["routing_mix"])
        + "<p>Jobs by task type and model chosen:</p>"
        + hbars(rows)
    )


def _latency_section(data: dict[str, Any], colour: dict[str, str]) -> str:
    lat = data["latency"]
    rows = [
        [esc(m), q["n"], *(f"{q[k]:.1f}" for k in ("min", "p5", "p25", "p50", "p75", "p95", "max"))]
        for m, q in sorted(lat.items())
    ]
    return (
        "<h2>Latency per model (successful attempts, ms)</h2>"
        + box_plots(lat, colour)
        + table(["model", "n", "min", "p5", "p25", "p50", "p75", "p95", "max"], rows)
    )


def _paths_section(data: dict[str, Any]) -> str:
    paths = data["escalation_paths"]
    if not paths:
        return "<h2>Escalation paths</h2><p>No job needed more than one attempt.</p>"
    bars = hbars([(p["path"], float(p["jobs"]), "#e15759") for p in paths], label_w=330)
    rows = [[esc(p["path"]), p["jobs"], p["succeeded"], usd(p["cost"])] for p in paths]
    return "<h2>Escalation paths</h2>" + bars + table(["attempts in order", "jobs", "succeeded", "cost"], rows)


def _savings_section(data: dict[str, Any]) -> str:
    totals, prices = data["totals"], data["reference_prices"]
    pair = {"baseline": "#bab0ac", "actual": "#59a14f"}
    days = [(d["day"], {"baseline": d["baseline"], "actual": d["actual"]}) for d in data["savings_by_day"]]
    grouped = grouped_bars(days[-31:], pair)
    saved = totals["baseline"] - totals["actual"]
    return (
        "<h2>Savings against an all-commercial baseline</h2>"
        f"<p>Baseline: every successful attempt's tokens at ${prices['input_per_mtok']:g} / "
        f"${prices['output_per_mtok']:g} per million tokens (in / out).</p>"
        f'<p class="big">baseline {metric("baseline_cost", usd(totals["baseline"]))} · actual '
        f"{metric('actual_cost', usd(totals['actual']))} · saved {metric('savings', usd(saved))}</p>"
        + legend(pair)
        + grouped
    )


def _models_section(performance: dict[str, dict[str, Any]]) -> str:
    rows = []
    for model, p in sorted(performance.items()):
        score = p.get("avg_feedback_score")
        rows.append(
            [
                esc(model),
                p["attempts"],
                f"{p['success_rate']:.0%}",
                f"{p['p50_latency_ms'] or 0:.0f}",
                f"{p['p95_latency_ms'] or 0:.0f}",
                f'<span data-model-cost="{esc(model)}">{usd(p["total_cost"])}</span>',
                f"{score:.2f} ({p.get('feedback_count', 0)})" if score is not None else "-",
            ]
        )
    head = ["model", "attempts", "success", "p50 ms", "p95 ms", "cost", "feedback (n)"]
    return "<h2>Models</h2>" + table(head, rows)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.axis{font-size:11px;fill:#444}.cell{font-size:11px;fill:#000}
.legend .key{margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.big{font-size:16px}.row{display:flex;flex-wrap:wrap;gap:4px}svg.plot{display:block;margin:6px 0}
"""


def render_report(data: dict[str, Any], performance: dict[str, dict[str, Any]], *, now: float | None = None) -> str:
    """The whole HTML document."""
    now = time.time() if now is None else now
    models = {r["model"] for r in data["cost_by_day_model"]} | set(data["latency"]) | set(performance)
    colour = colours(models)
    since = data.get("since")
    period = f"since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC" if since else "all time"
    totals = data["totals"]
    head = (
        f"<h1>Model router report</h1><p>{esc(period)}; generated "
        f"{datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC.</p>"
        f'<p class="big">{metric("jobs", str(totals["jobs"]))} jobs · total cost '
        f"{metric('total_cost', usd(totals['actual']))}</p>"
    )
    sections = [
        head,
        _cost_section(data, colour),
        _mix_section(data, colour),
        _latency_section(data, colour),
        _paths_section(data),
        _savings_section(data),
        _models_section(performance),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Model router report</title>'
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
