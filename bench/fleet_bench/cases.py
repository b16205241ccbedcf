"""The benchmark cases. Each takes the run's ``Bench`` and a ``Config`` and returns figures.

End-to-end cases start the fleet as real subprocesses (``python -m fleet_router`` ...) in a
private ``CaseEnv`` and drive it with the load generator, a separate process. All jobs are
``{"task_type": "code_generation", "complexity": 2}``: the router sends them to
``local_mlx`` (rule simple_local), so every job takes one path: router -> lmstudio worker ->
LM Studio emulator -> Result -> ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from fleet_bench import profiling
from fleet_bench.infra import Bench, CaseEnv, FleetSpec, Sampler, spawn

#: When the profiled step is surely running (its load generator does no warm-up).
PROFILE_DELAY_S = 2.0


@dataclass
class Config:
    """Durations and sizes of one run (``full()`` for ``make bench``, ``smoke()`` for CI)."""

    smoke: bool = False
    policy_s: float = 3.0
    #: the inference case: seconds of decisions per job set, prompts per size band
    inference_s: float = 3.0
    inference_latency_jobs: int = 40
    #: the router process's decisions with and without inference (``fleet_bench.router_case``)
    router_jobs_per_round: int = 3000
    router_rounds: int = 6
    latency_rates: tuple[int, ...] = (100, 500, 1000)
    latency_step_s: float = 10.0
    ramp_rates: tuple[int, ...] = (1500, 2000, 2500, 3000, 4000)
    ramp_step_s: float = 8.0
    drain_s: float = 30.0
    slow_rate: int = 1000
    slow_s: float = 30.0
    slow_latency_ms: float = 1500.0
    #: provider calls in flight per worker in the slow case: rate x latency plus headroom
    slow_concurrency: int = 2048
    scaling_procs: tuple[int, ...] = (1, 2, 4)
    #: the scaling case's rate cap and jobs in flight per process of each service
    scaling_rate: int = 10_000
    scaling_outstanding: int = 1000
    scaling_s: float = 8.0
    ledger_jobs: int = 20_000
    provider_s: float = 5.0
    provider_concurrency: int = 64
    #: closed-loop request-reply: jobs in flight, seconds per step (after a warm-up)
    closed_in_flight: tuple[int, ...] = (1, 64)
    closed_s: float = 5.0
    closed_warmup_s: float = 1.0
    #: repetitions of every timed case: medians and their spread are reported
    repeat: int = 3
    #: the slow case offers the fleet's fast capacity measured in the same repetition
    #: (``e2e_jobs_per_s``), capped here; ``slow_rate`` when e2e did not run
    slow_rate_cap: int = 5000
    profile: bool = True
    profile_s: float = 8.0
    #: event loop of the fleet's processes: "uvloop" (as shipped) or "asyncio" (to compare)
    loop: str = "uvloop"
    only: set[str] = field(default_factory=set)

    @classmethod
    def full(cls) -> Config:
        return cls()

    @classmethod
    def smoke_run(cls) -> Config:
        return cls(
            smoke=True,
            policy_s=0.5,
            inference_s=0.5,
            inference_latency_jobs=5,
            router_jobs_per_round=200,
            router_rounds=2,
            latency_rates=(20, 50, 100),
            latency_step_s=2.0,
            ramp_rates=(150,),
            ramp_step_s=2.0,
            drain_s=15.0,
            slow_rate=50,
            slow_s=2.0,
            slow_concurrency=256,
            scaling_procs=(1, 2, 4),
            scaling_rate=200,
            scaling_outstanding=50,
            scaling_s=2.0,
            ledger_jobs=300,
            provider_s=1.0,
            closed_s=1.0,
            closed_warmup_s=0.5,
            repeat=1,
            slow_rate_cap=100,
            profile=False,
        )

    def scaled(self, factor: float) -> Config:
        """Every timed step ``factor`` times as long (a reduced run: ``--scale 0.3``)."""
        keys = ("policy_s", "latency_step_s", "ramp_step_s", "slow_s", "scaling_s", "provider_s", "closed_s")
        return dataclasses.replace(self, **{k: max(1.0, getattr(self, k) * factor) for k in keys})

    def wants(self, case: str) -> bool:
        return not self.only or case in self.only


# -- helpers --------------------------------------------------------------------------


async def run_loadgen(
    env: CaseEnv, plan: dict, *, label: str, timeout_s: float, profile_s: float = 0.0, profile_dir: Path | None = None
) -> dict:
    """Run the load generator with ``plan``; optionally py-spy every process meanwhile."""
    env.dir.mkdir(parents=True, exist_ok=True)
    plan_path = env.dir / f"{label}-plan.json"
    out_path = env.dir / f"{label}-loadgen.json"
    plan_path.write_text(json.dumps(plan))
    out_path.unlink(missing_ok=True)
    pids = ",".join([f"{p.name}={p.pid}" for p in env.procs] + [f"nats-server={env.nats.pid}"])
    gen = spawn(
        f"loadgen-{label}",
        "loadgen",
        [
            "-m",
            "fleet_bench.loadgen",
            "--nats",
            env.nats.url,
            "--prefix",
            env.prefix,
            "--plan",
            str(plan_path),
            "--out",
            str(out_path),
            "--run-tag",
            label,
            "--pids",
            pids,
            "--database-url",
            env.database_url,
        ],
        env.base_env(),
        env.dir,
    )
    env.procs.append(gen)
    profiles: dict = {}
    try:
        if profile_s > 0 and profile_dir is not None:
            await asyncio.sleep(PROFILE_DELAY_S)  # past start-up and warm-up: the step is running
            running = profiling.start([p for p in env.procs if p.alive()], profile_dir, profile_s, label)
            profiles = await asyncio.to_thread(profiling.finish, running, profile_s)
        rc = await asyncio.to_thread(wait_for_exit, gen, timeout_s)
    finally:
        env.procs.remove(gen)
    if rc is None:
        return {"error": f"load generator timed out after {timeout_s:.0f}s", "log": gen.log_tail()}
    if rc != 0 or not out_path.exists():
        return {"error": f"load generator exited {rc}", "log": gen.log_tail()}
    report = json.loads(out_path.read_text())
    if profiles:
        report["profiles"] = profiles
    dead = [p.name for p in env.dead()]
    if dead:
        report["dead_processes"] = {name: next(p.log_tail() for p in env.procs if p.name == name) for name in dead}
    return report


def wait_for_exit(proc, timeout_s: float) -> int | None:
    try:
        return proc.popen.wait(timeout_s)
    except Exception:
        proc.popen.kill()
        proc.popen.wait()
        return None


def _step(name: str, rate: float, duration_s: float, drain_s: float, shift_s: float = 0.0) -> dict:
    return {"name": name, "rate": rate, "duration_s": duration_s, "drain_s": drain_s, "shift_s": shift_s}


def _procs_note(env: CaseEnv) -> dict:
    return {"processes": [f"{p.role}:{p.name}" for p in env.procs]}


# -- 2 + 3: latency at fixed rates, then the ramp --------------------------------------


async def latency_and_ramp(bench: Bench, cfg: Config) -> dict:
    """One fleet (1 process per service): latency steps at 100 / 500 / 1,000 jobs/s, then
    higher rates until a step no longer keeps up; then (optionally) a profiled step."""
    async with bench.case("e2e") as env:
        await env.ensure_streams()
        env.start_fleet(FleetSpec(procs_per_service=1))
        steps = [_step(f"lat-{r}", r, cfg.latency_step_s, cfg.drain_s) for r in cfg.latency_rates]
        steps += [_step(f"ramp-{r}", r, cfg.ramp_step_s, cfg.drain_s) for r in cfg.ramp_rates]
        plan = {"warmup": 5, "steps": steps, "ramp": True, "ramp_from": steps[len(cfg.latency_rates) - 1]["name"]}
        budget = sum(s["duration_s"] + s["drain_s"] for s in steps) + 90
        report = await run_loadgen(env, plan, label="e2e", timeout_s=budget)
        out = {"e2e": report, **_procs_note(env)}
        if cfg.profile and "error" not in report:
            best = max((s["done_per_s"] for s in report["steps"]), default=500)
            rate = max(500, int(best * 1.3))
            # no warm-up: the fleet is warm, and may still be draining a backlog from the ramp
            prof_plan = {
                "warmup": 0,
                "steps": [_step("profile", rate, cfg.profile_s + 2 * PROFILE_DELAY_S, cfg.drain_s)],
            }
            out["e2e_profile"] = await run_loadgen(
                env,
                prof_plan,
                label="e2eprof",
                timeout_s=cfg.profile_s + cfg.drain_s + 90,
                profile_s=cfg.profile_s,
                profile_dir=bench.root / "profiles",
            )
        return out


def e2e_figures(case: dict, cfg: Config) -> dict:
    steps = case.get("e2e", {}).get("steps", [])
    if not steps:
        return {}
    by_rate = {}
    for s in steps:
        if s["name"].startswith("lat-"):
            by_rate[str(s["offered_per_s"])] = {
                "p50": s["overhead_ms"]["p50"],
                "p95": s["overhead_ms"]["p95"],
                "p99": s["overhead_ms"]["p99"],
                "added_p50": s["added_ms"]["p50"],
                "added_p99": s["added_ms"]["p99"],
                "e2e_p50": s["e2e_ms"]["p50"],
                "e2e_p99": s["e2e_ms"]["p99"],
                "emulator_own_p50": s["provider_own_ms"]["p50"],
                "done_per_s": s["done_per_s"],
                "kept_up": s["kept_up"],
            }
    mid = str(cfg.latency_rates[len(cfg.latency_rates) // 2])
    at = by_rate.get(mid, {})
    kept = [s["offered_per_s"] for s in steps if s["kept_up"]]
    return {
        "e2e_jobs_per_s": max(s["done_per_s"] for s in steps),
        "e2e_max_rate_kept_up": max(kept) if kept else 0,
        "overhead_ms_p50": at.get("p50"),
        "overhead_ms_p95": at.get("p95"),
        "overhead_ms_p99": at.get("p99"),
        "added_ms_p50": at.get("added_p50"),
        "added_ms_p99": at.get("added_p99"),
        "overhead_ms_by_rate": by_rate,
    }


# -- 4 + 5: the slow provider ---------------------------------------------------------


async def slow_provider(bench: Bench, cfg: Config, fast_capacity: float | None = None) -> dict:
    """The emulator answers after 1.5 s; the fleet's fast capacity (``e2e_jobs_per_s`` of the
    same repetition; else ``slow_rate``) offered for 30 s, as many calls in flight as that
    rate needs; RSS sampled."""
    rate = int(min(cfg.slow_rate_cap, fast_capacity)) if fast_capacity else cfg.slow_rate
    shift = cfg.slow_latency_ms / 1000
    # rate x latency calls in flight, plus a quarter for the tail (the worker's FLEET_WORKER_CONCURRENCY)
    concurrency = max(cfg.slow_concurrency if not fast_capacity else 0, int(rate * shift * 1.25) + 64)
    async with bench.case("slow") as env:
        await env.ensure_streams()
        env.start_fleet(
            FleetSpec(procs_per_service=1, worker_concurrency=concurrency, emulator_latency_ms=cfg.slow_latency_ms)
        )
        plan = {"warmup": 2, "steps": [_step("slow", rate, cfg.slow_s, cfg.drain_s + 2 * shift, shift)]}
        with Sampler(env.fleet_procs) as rss:
            report = await run_loadgen(env, plan, label="slow", timeout_s=cfg.slow_s + cfg.drain_s + 120)
        report["rss_peak_by_proc_mb"] = {k: round(v / 1024, 1) for k, v in rss.peak_by_proc_kb.items()}
        report["rss_peak_total_mb"] = round(rss.peak_total_kb / 1024, 1)
        return {"slow": report, "offered_per_s": rate, "worker_concurrency": concurrency, **_procs_note(env)}


def slow_figures(case: dict) -> dict:
    report = case.get("slow", {})
    steps = report.get("steps", [])
    if not steps:
        return {}
    s = steps[0]
    return {
        "slow_provider_jobs_per_s": s["done_per_s"],
        "slow_provider_offered_per_s": s["offered_per_s"],
        "slow_provider_success_rate": s["success_rate"],
        "slow_provider_p99_ms": s["e2e_ms"]["p99"],
        "fleet_peak_rss_mb": report.get("rss_peak_total_mb"),
    }


# -- 8: scaling -----------------------------------------------------------------------


async def scaling(bench: Bench, cfg: Config) -> dict:
    """Completion rate of 1, 2 and 4 processes of each service under a saturating, closed-loop load."""
    out = {}
    for n in cfg.scaling_procs:
        async with bench.case(f"scale{n}") as env:
            await env.ensure_streams()
            env.start_fleet(FleetSpec(procs_per_service=n))
            # closed loop: offer more than the fleet can do, but keep at most `outstanding` jobs
            # in flight, so the figure is its completion rate and no backlog outlives the step
            step = _step(f"scale-{n}", cfg.scaling_rate, cfg.scaling_s, min(cfg.drain_s, 15.0))
            step["max_outstanding"] = cfg.scaling_outstanding * n
            plan = {"warmup": 3 * n, "steps": [step]}
            out[str(n)] = await run_loadgen(env, plan, label=f"scale{n}", timeout_s=cfg.scaling_s + 120)
    return out


def scaling_figures(case: dict) -> dict:
    by = {}
    for n, report in case.items():
        steps = report.get("steps", [])
        if steps:
            by[n] = steps[0]["done_per_s"]
    return {"e2e_jobs_per_s_by_procs": by} if by else {}
