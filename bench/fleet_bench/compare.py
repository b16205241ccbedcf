"""The fleet against its floor and the direct call, in one case, on one nats-server.

One ``CaseEnv``: the LM Studio emulator, the fleet (router, lmstudio worker, ledger) and
the bare pipeline (``fleet_bench.floor``: intake, worker, writer) on the same private
nats-server and database. The load generator (``fleet_bench.closedloop``) runs closed
loops of request-reply jobs at 1 and 64 in flight against the direct HTTP call, the floor
and the fleet, interleaved, so the three are measured on the same machine in the same
minute. The fleet's jobs take the path of the other cases (code_generation, complexity 2
-> local_mlx -> lmstudio worker -> emulator), so the answer is the same one everywhere.
"""

from __future__ import annotations

from fleet_bench.infra import Bench, FleetSpec

#: the processes of each system whose CPU per job is summed into its total
FLEET_ROLES = ("router", "worker", "ledger")
FLOOR_ROLES = ("floor-intake", "floor-worker", "floor-writer")


async def closed_loop(bench: Bench, cfg) -> dict:
    from fleet_bench.cases import run_loadgen

    async with bench.case("compare") as env:
        await env.ensure_streams()
        base_url = env.start_fleet(FleetSpec(procs_per_service=1))
        floor_prefix = env.start_floor(base_url)
        plan = {
            "closed_loop": True,
            "in_flight": list(cfg.closed_in_flight),
            "warmup_s": cfg.closed_warmup_s,
            "duration_s": cfg.closed_s,
            "targets": [
                {"name": "direct", "kind": "http", "url": base_url},
                {"name": "floor", "kind": "nats", "subject": f"{floor_prefix}.request"},
                {"name": "fleet", "kind": "nats", "subject": env.subjects.request},
            ],
        }
        steps = len(cfg.closed_in_flight) * 3
        # the first fleet and floor requests may wait for their consumers: warm-up covers it
        budget = steps * (cfg.closed_s + cfg.closed_warmup_s + 15) + 60
        report = await run_loadgen(env, plan, label="compare", timeout_s=budget)
        return {"compare": report, "processes": [f"{p.role}:{p.name}" for p in env.procs]}


def _role(name: str) -> str:
    """'router-0' -> 'router'; 'floor-worker' stays; 'emulator-lmstudio' -> 'emulator'."""
    if name[-1].isdigit():
        return name.rsplit("-", 1)[0]
    return "emulator" if name.startswith("emulator") else name


def cpu_by_process(step: dict) -> dict[str, float]:
    """CPU ms per job of each process of a step, by role (replicas summed)."""
    out: dict[str, float] = {}
    for name, ms in step.get("cpu_ms_per_job", {}).items():
        role = _role(name)
        out[role] = round(out.get(role, 0.0) + ms, 4)
    return out


def _ratio(a, b) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return round(a / b, 4)


def figures(case: dict) -> dict:
    """Flat figures of one closed-loop run: absolute, ``*_vs_floor`` and ``*_vs_direct``."""
    steps = case.get("compare", {}).get("steps", [])
    by = {(s["target"], s["in_flight"]): s for s in steps}
    out: dict = {}
    cpu: dict = {}
    for (target, n), s in by.items():
        out[f"{target}_jobs_per_s_{n}"] = s["jobs_per_s"]
        out[f"{target}_latency_ms_p50_{n}"] = s["latency_ms"]["p50"]
        out[f"{target}_latency_ms_p99_{n}"] = s["latency_ms"]["p99"]
        out[f"{target}_success_rate_{n}"] = s["success_rate"]
        if target != "direct":
            out[f"{target}_added_ms_p50_{n}"] = s["added_ms"]["p50"]
        procs = cpu_by_process(s)
        cpu.setdefault(str(n), {})[target] = procs
        roles = FLEET_ROLES if target == "fleet" else FLOOR_ROLES if target == "floor" else ()
        if roles:
            out[f"cpu_ms_per_job_{target}_{n}"] = round(sum(procs.get(r, 0.0) for r in roles), 4)
    for n in sorted({n for _, n in by}):
        for who in ("fleet", "floor"):
            base = f"{who}_jobs_per_s_{n}"
            out[f"{base}_vs_direct"] = _ratio(out.get(base), out.get(f"direct_jobs_per_s_{n}"))
            lat = f"{who}_latency_ms_p50_{n}"
            out[f"{lat}_vs_direct"] = _ratio(out.get(lat), out.get(f"direct_latency_ms_p50_{n}"))
            # added latency in units of one direct call (the direct call adds nothing)
            add = f"{who}_added_ms_p50_{n}"
            out[f"{add}_vs_direct"] = _ratio(out.get(add), out.get(f"direct_latency_ms_p50_{n}"))
        for key in (f"fleet_jobs_per_s_{n}", f"fleet_latency_ms_p50_{n}", f"fleet_added_ms_p50_{n}"):
            out[f"{key}_vs_floor"] = _ratio(out.get(key), out.get(key.replace("fleet_", "floor_", 1)))
        out[f"cpu_ms_per_job_fleet_{n}_vs_floor"] = _ratio(
            out.get(f"cpu_ms_per_job_fleet_{n}"), out.get(f"cpu_ms_per_job_floor_{n}")
        )
    out["cpu_ms_per_job_by_process"] = cpu
    return {k: v for k, v in out.items() if v is not None}
