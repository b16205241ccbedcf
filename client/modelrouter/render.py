"""Human-readable output of the CLI (``--json`` bypasses all of this)."""

from __future__ import annotations

import datetime
from typing import Any

from fleet_shared.registry import Registry
from fleet_shared.schema import Decision


def _money(usd: float | None) -> str:
    return "-" if usd is None else f"${usd:.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def answer(result: dict[str, Any], *, with_content: bool) -> None:
    """A Result: the answer (unless already streamed), then model, cost, latency, why."""
    if with_content and result.get("content"):
        print(result["content"])
    print("---")
    if result.get("success"):
        print(f"model:     {result.get('model')} ({result.get('provider')})")
    else:
        error = result.get("error") or {}
        print(f"failed:    {error.get('code')}: {error.get('message')}")
    print(f"job:       {result.get('job_id')}")
    tokens = f"{result.get('tokens_in', 0)} in / {result.get('tokens_out', 0)} out"
    print(f"cost:      {_money(result.get('cost_usd'))}  ({tokens}, est. {_money(result.get('estimated_cost_usd'))})")
    print(f"latency:   {_ms(result.get('latency_ms'))}")
    attempts = result.get("attempts") or []
    if len(attempts) > 1:
        path = " -> ".join(f"{a['model']}{'' if a['success'] else ' x'}" for a in attempts)
        print(f"attempts:  {path}")
    print(f"reasoning: {result.get('reasoning')}")


def status(report: dict[str, Any]) -> None:
    print(f"fleet '{report['prefix']}': {report['routers']} router(s), {report['ledgers']} ledger(s)")
    jobs = report["jobs_queue"]
    print(f"jobs queue: {_queue(jobs)}")
    print(f"{'provider':<10} {'workers':>7}  {'queue':<28} models")
    for provider, p in report["providers"].items():
        print(f"{provider:<10} {p['workers']:>7}  {_queue(p['queue']):<28} {', '.join(p['models'])}")
    health = report["models"]
    if health is None:
        print("health board: none yet (no fleet process has started with this prefix)")
        return
    print("models: " + ", ".join(f"{m} {h['phase']}{_why(h)}" for m, h in health.items()))


def _queue(backlog: dict[str, int] | None) -> str:
    if backlog is None:
        return "no consumer"
    return f"{backlog['waiting']} waiting, {backlog['in_progress']} in progress"


def _why(health: dict[str, Any]) -> str:
    return f" ({health['reason']})" if health.get("reason") and health["phase"] != "up" else ""


def models(rows: list[dict[str, Any]], registry: Registry) -> None:
    print(f"{'model':<16} {'provider':<10} {'provider model':<30} {'ctx':>8} {'$/Mtok in':>10} {'out':>8}  health")
    for r in rows:
        health = r["health"] + (f" ({r['health_reason']})" if r["health_reason"] and r["health"] != "up" else "")
        print(
            f"{r['id']:<16} {r['provider']:<10} {r['provider_model']:<30} {r['context_window']:>8} "
            f"{r['input_per_mtok']:>10.2f} {r['output_per_mtok']:>8.2f}  {health}"
        )
    if registry.prices_as_of:
        print(f"prices as of {registry.prices_as_of}")


def analytics(report: str, data: Any) -> None:
    if report == "performance":
        print(f"Models tracked: {len(data)}")
        print(f"{'model':<16} {'attempts':>8} {'success':>8} {'p50':>9} {'p95':>9} {'cost':>12}")
        for model, p in data.items():
            print(
                f"{model:<16} {p['attempts']:>8} {p['success_rate']:>8.0%} {_ms(p['p50_latency_ms']):>9} "
                f"{_ms(p['p95_latency_ms']):>9} {_money(p['total_cost']):>12}"
            )
    elif report == "cost":
        print(f"Total cost: {_money(data['total_cost'])} over {data['jobs']} jobs ({_money(data['cost_per_job'])}/job)")
        for model, m in data["by_model"].items():
            print(f"  {model:<16} {_money(m['cost']):>12}  {m['jobs']} jobs")
        print(f"Savings of local models: {_money(data['savings'])}")
    elif report == "budget":
        print(
            f"{data['day']}: spent {_money(data['spent'])} of ${data['budget']:.2f} "
            f"({data['fraction_spent']:.0%}); remaining {_money(data['remaining'])}"
        )
    elif report == "experiments":
        _experiments(data)
    else:
        if not data:
            print("No recommendations.")
        for rec in data:
            print(f"- [{rec.get('id', rec['kind'])}] {rec['message']}")
            if rec.get("rule"):
                print("  apply with: modelrouter rules apply-recommendation " + str(rec.get("id")))


def _experiments(data: dict[str, Any]) -> None:
    if not data:
        print("No experiments in the ledger.")
    for name, exp in data.items():
        print(f"Experiment {name} (baseline {exp['baseline']})")
        for variant, v in exp["variants"].items():
            rate = v["success"]["rate"]
            print(
                f"  {variant:<12} {v['jobs']:>6} jobs  success {rate if rate is None else f'{rate:.0%}':>5}"
                f"  cost/job {_money(v['cost_per_job']['mean'])}"
            )
        for variant, c in exp["comparisons"].items():
            print(f"  {variant} vs {exp['baseline']}: {c['verdict']}")


def decision(event: Decision) -> None:
    at = datetime.datetime.fromtimestamp(event.at or 0).strftime("%H:%M:%S")
    model = event.model or "(none)"
    print(
        f"{at} {event.job_id} #{event.attempt_no} {event.task_type}/{event.complexity} -> {model} "
        f"est. {_money(event.estimated_cost_usd)}: {event.reasoning}"
    )
