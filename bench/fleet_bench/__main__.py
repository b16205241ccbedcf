"""``python -m fleet_bench [--smoke] [--only CASES] [--repeat N] [--scale F] [--out PATH] [--no-profile] [--loop uvloop]``

Runs every case ``--repeat`` times (3 by default), writes the medians, their spread and the
ratios to the floor and the direct call to ``.bench/latest.json`` (and a dated copy under
``.bench/runs/``), prints the table of target vs measured. Exit status 0 when every
required figure was measured (targets missed are reported, not failures), 1 otherwise.

Cases (``--only`` takes a comma-separated subset): policy, inference, ledger, provider,
limits, compare, e2e, slow, scaling, gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from fleet_bench import cases, compare, gateway_case, part_cases, ratios, report
from fleet_bench.infra import Bench

CASES = ("policy", "inference", "ledger", "provider", "limits", "compare", "e2e", "slow", "scaling", "gateway")
_REPO = Path(__file__).resolve().parents[2]
#: Log folders of older runs kept under .bench/logs
KEEP_LOG_RUNS = 3


def _git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except Exception:
        return ""


def _machine() -> dict:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


async def _run_case(name: str, fn, details: dict, errors: dict) -> dict:
    t0 = time.monotonic()
    print(f"[bench] {name} ...", flush=True)
    try:
        out = await fn()
    except Exception as exc:
        errors[name] = "".join(traceback.format_exception(exc))[-2000:]
        print(f"[bench] {name} FAILED: {exc!r}", flush=True)
        return {}
    details[name] = out
    print(f"[bench] {name} done in {time.monotonic() - t0:.1f}s", flush=True)
    return out


async def _one_pass(bench: Bench, cfg: cases.Config, rep: int, details: dict, errors: dict) -> dict:
    """Every wanted case once; the flat figures of this repetition."""
    figures: dict = {}
    if rep > 0:  # one set of profiles is enough
        cfg = dataclasses.replace(cfg, profile=False)

    async def case(name: str, fn) -> dict:
        label = name if cfg.repeat == 1 else f"{name} #{rep + 1}"
        return await _run_case(label, fn, details, errors)

    if cfg.wants("policy"):
        out = await case("policy", lambda: part_cases.policy(bench, cfg))
        figures.update({k: v for k, v in out.items() if k.startswith("router_")})
    if cfg.wants("inference"):
        out = await case("inference", lambda: part_cases.inference(bench, cfg))
        figures.update(
            {k: v for k, v in out.items() if k.startswith(("inference_", "router_decisions_", "router_process_"))}
        )
        if out.get("error"):
            errors[f"inference #{rep + 1}"] = out["error"]
    if cfg.wants("ledger"):
        out = await case("ledger-writer", lambda: part_cases.ledger_writer(bench, cfg))
        figures.update({k: v for k, v in out.items() if k.startswith(("ledger_", "limit_"))})
        out = await case("ledger-service", lambda: part_cases.ledger_service(bench, cfg))
        figures.update({k: v for k, v in out.items() if k in ("ledger_service_rows_per_s",)})
    if cfg.wants("provider"):
        out = await case("provider", lambda: part_cases.provider_calls(bench, cfg))
        if "provider_calls_per_s" in out:
            figures["provider_calls_per_s"] = out["provider_calls_per_s"]
    if cfg.wants("limits"):
        out = await case("limits", lambda: part_cases.limits(bench, cfg))
        figures.update({k: v for k, v in out.items() if k.startswith("limit_")})
    figures.update(await _fleet_cases(bench, cfg, rep, case, errors))
    return figures | ratios.derived(figures)


async def _fleet_cases(bench: Bench, cfg: cases.Config, rep: int, case, errors: dict) -> dict:
    """The cases that run the fleet (the slow case offers the e2e case's capacity)."""
    figures: dict = {}
    if cfg.wants("compare"):
        out = await case("compare", lambda: compare.closed_loop(bench, cfg))
        figures.update(compare.figures(out))
        got = out.get("compare", {})
        if got.get("error") or got.get("dead_processes"):
            errors[f"compare #{rep + 1}"] = {k: got.get(k) for k in ("error", "log", "dead_processes") if got.get(k)}
    if cfg.wants("e2e"):
        out = await case("e2e", lambda: cases.latency_and_ramp(bench, cfg))
        figures.update(cases.e2e_figures(out, cfg))
        if out.get("e2e", {}).get("error"):
            errors[f"e2e #{rep + 1}"] = out["e2e"]
    if cfg.wants("slow"):
        fast = figures.get("e2e_jobs_per_s")
        out = await case("slow", lambda: cases.slow_provider(bench, cfg, fast))
        figures.update(cases.slow_figures(out))
    if cfg.wants("scaling"):
        out = await case("scaling", lambda: cases.scaling(bench, cfg))
        figures.update(cases.scaling_figures(out))
        # a step that measured nothing is an error to report, not a figure silently missing
        missing = {
            n: out.get(n) for n in map(str, cfg.scaling_procs) if n not in figures.get("e2e_jobs_per_s_by_procs", {})
        }
        if missing and out:
            errors[f"scaling #{rep + 1}"] = {n: (r or {}).get("error", "no step measured") for n, r in missing.items()}
    if cfg.wants("gateway"):
        seconds = 2.0 if cfg.smoke else 8.0
        out = await case("gateway", lambda: gateway_case.gateway(bench, seconds))
        figures.update({k: v for k, v in out.items() if k.startswith("gateway_") and report.is_number(v)})
    return figures


async def run(cfg: cases.Config, root: Path) -> dict:
    run_id = time.strftime("%Y%m%d-%H%M%S")
    reps: list[dict] = []
    details: dict = {}  # the last repetition's
    errors: dict = {}
    started = time.time()
    async with Bench(root, run_id) as bench:
        for rep in range(cfg.repeat):
            reps.append(await _one_pass(bench, cfg, rep, details, errors))
    figures, spread = ratios.aggregate(reps)
    return {
        **figures,
        "spread": spread,
        "repetitions": cfg.repeat,
        "meta": {
            "run_id": run_id,
            "smoke": cfg.smoke,
            "git_rev": _git_rev(),
            "started_at": started,
            "elapsed_s": round(time.time() - started, 1),
            "machine": _machine() | {"limits": {k: v for k, v in figures.items() if k.startswith("limit_")}},
            "job_path": "code_generation, complexity 2 -> local_mlx -> lmstudio worker -> LM Studio emulator",
            "latency_rates": list(cfg.latency_rates),
            "overhead_at_rate": cfg.latency_rates[len(cfg.latency_rates) // 2],
            "closed_in_flight": list(cfg.closed_in_flight),
            "closed_step_s": cfg.closed_s,
            "loop": cfg.loop,
            "cases": sorted(cfg.only) or list(CASES),
        },
        "targets": {k: {"op": op, "target": t} for k, (op, t, _, _) in report.TARGETS.items()},
        "errors": errors,
        "runs": reps,
        "details": details,
    }


def _prune_logs(root: Path) -> None:
    logs = sorted((root / "logs").glob("*")) if (root / "logs").exists() else []
    for old in logs[:-KEEP_LOG_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--smoke", action="store_true", help="tiny run (CI): a few hundred jobs, ~2 s per case")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--out", default=None, help="JSON output (default .bench/latest.json)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy passes")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of the fleet processes (uvloop as shipped; asyncio to compare)",
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions of every case (default 3; smoke 1)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="every timed step this many times as long (0.3: a reduced run)"
    )
    args = parser.parse_args(argv)
    cfg = cases.Config.smoke_run() if args.smoke else cases.Config.full()
    if args.scale != 1.0:
        cfg = cfg.scaled(args.scale)
    if args.repeat is not None:
        cfg.repeat = max(1, args.repeat)
    cfg.only = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = cfg.only - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    if args.no_profile:
        cfg.profile = False
    cfg.loop = args.loop
    os.environ["FLEET_EVENT_LOOP"] = args.loop  # every process the bench starts inherits it
    root = Path(os.environ.get("FLEET_BENCH_DIR") or _REPO / ".bench")
    root.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(cfg, root))
    out = Path(args.out) if args.out else root / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    (runs / f"{result['meta']['run_id']}{'-smoke' if cfg.smoke else ''}.json").write_text(json.dumps(result, indent=2))
    _prune_logs(root)
    print()
    print(report.table(result))
    print(f"\nwritten to {out} ({result['meta']['elapsed_s']}s); profiles under {root / 'profiles'}")
    if result["errors"]:
        print(f"errors in: {', '.join(result['errors'])} (see 'errors' in the JSON)", file=sys.stderr)
    wanted = report.missing(result) if not cfg.only else []
    if wanted:
        print(f"missing figures: {', '.join(wanted)}", file=sys.stderr)
    return 1 if wanted or result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
