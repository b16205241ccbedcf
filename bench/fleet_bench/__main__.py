"""``python -m fleet_bench [--smoke] [--only CASES] [--out PATH] [--no-profile] [--loop uvloop]``

Runs the cases, writes the figures to ``.bench/latest.json`` (and a dated copy under
``.bench/runs/``), prints the table of target vs measured. Exit status 0 when every
required figure was measured (targets missed are reported, not failures), 1 otherwise.

Cases (``--only`` takes a comma-separated subset): policy, inference, ledger, provider,
limits, e2e, slow, scaling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from fleet_bench import cases, gateway_case, report
from fleet_bench.infra import Bench

CASES = ("policy", "inference", "ledger", "provider", "limits", "e2e", "slow", "scaling", "gateway")
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


async def _gateway(bench: Bench, cfg: cases.Config, details: dict, errors: dict) -> dict:
    if not cfg.wants("gateway"):
        return {}
    seconds = 2.0 if cfg.smoke else 8.0
    out = await _run_case("gateway", lambda: gateway_case.gateway(bench, seconds), details, errors)
    return {k: v for k, v in out.items() if k.startswith("gateway_")}


async def run(cfg: cases.Config, root: Path) -> dict:
    run_id = time.strftime("%Y%m%d-%H%M%S")
    figures: dict = {}
    details: dict = {}
    errors: dict = {}
    started = time.time()
    async with Bench(root, run_id) as bench:
        if cfg.wants("policy"):
            out = await _run_case("policy", lambda: cases.policy(bench, cfg), details, errors)
            figures.update({k: v for k, v in out.items() if k.startswith("router_")})
        if cfg.wants("inference"):
            out = await _run_case("inference", lambda: cases.inference(bench, cfg), details, errors)
            figures.update({k: v for k, v in out.items() if k.startswith(("inference_", "router_decisions_"))})
            if out.get("error"):
                errors["inference"] = out["error"]
        if cfg.wants("ledger"):
            out = await _run_case("ledger-writer", lambda: cases.ledger_writer(bench, cfg), details, errors)
            figures.update({k: v for k, v in out.items() if k.startswith(("ledger_", "limit_"))})
            out = await _run_case("ledger-service", lambda: cases.ledger_service(bench, cfg), details, errors)
            figures.update({k: v for k, v in out.items() if k in ("ledger_service_rows_per_s",)})
        if cfg.wants("provider"):
            out = await _run_case("provider", lambda: cases.provider_calls(bench, cfg), details, errors)
            if "provider_calls_per_s" in out:
                figures["provider_calls_per_s"] = out["provider_calls_per_s"]
        if cfg.wants("limits"):
            out = await _run_case("limits", lambda: cases.limits(bench, cfg), details, errors)
            figures.update({k: v for k, v in out.items() if k.startswith("limit_")})
        if cfg.wants("e2e"):
            out = await _run_case("e2e", lambda: cases.latency_and_ramp(bench, cfg), details, errors)
            figures.update(cases.e2e_figures(out, cfg))
            if out.get("e2e", {}).get("error"):
                errors["e2e"] = out["e2e"]
        if cfg.wants("slow"):
            out = await _run_case("slow", lambda: cases.slow_provider(bench, cfg), details, errors)
            figures.update(cases.slow_figures(out))
        if cfg.wants("scaling"):
            out = await _run_case("scaling", lambda: cases.scaling(bench, cfg), details, errors)
            figures.update(cases.scaling_figures(out))
        figures.update(await _gateway(bench, cfg, details, errors))
    return {
        **figures,
        "meta": {
            "run_id": run_id,
            "smoke": cfg.smoke,
            "git_rev": _git_rev(),
            "started_at": started,
            "elapsed_s": round(time.time() - started, 1),
            "machine": _machine(),
            "job_path": "code_generation, complexity 2 -> local_mlx -> lmstudio worker -> LM Studio emulator",
            "latency_rates": list(cfg.latency_rates),
            "overhead_at_rate": cfg.latency_rates[len(cfg.latency_rates) // 2],
            "slow_worker_concurrency": cfg.slow_concurrency,
            "loop": cfg.loop,
            "cases": sorted(cfg.only) or list(CASES),
        },
        "targets": {k: {"op": op, "target": t} for k, (op, t, _, _) in report.TARGETS.items()},
        "errors": errors,
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
    args = parser.parse_args(argv)
    cfg = cases.Config.smoke_run() if args.smoke else cases.Config.full()
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
