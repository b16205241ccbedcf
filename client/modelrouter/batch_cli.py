"""``modelrouter batch run INPUT.jsonl -o OUTPUT.jsonl``: a batch pipeline from a terminal.

Output: one Result (JSON) per input line, in input order (``--unordered``: as they finish),
failures also in ``OUTPUT.failed.jsonl``. ``OUTPUT.submitted`` journals the ids this
batch submitted: re-running the same command after a crash or Ctrl-C rewrites the output
from the stored Results and runs only what never ran (see ``modelrouter.batch``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from fleet_router.policy import IntelligentModelRouter
from fleet_shared.config import Settings
from modelrouter.batch import BatchOptions, BatchRun
from modelrouter.batch_input import BatchItem, read_jsonl
from modelrouter.client import UnifiedModelClient
from modelrouter.connection import client_settings
from modelrouter.progress import describe, show


def add_batch_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    batch = sub.add_parser("batch", help="batch pipelines over JSON-lines files")
    actions = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        parents=[common],
        help="run every line of INPUT through the fleet (resumable)",
        description="Each INPUT line: a Job, an OpenAI chat-completions body (or Batch API line), or "
        '{"prompt": ...}. Re-run the same command to resume after a crash or Ctrl-C.',
    )
    run.add_argument("input", type=Path, help="JSON-lines input ('-' for stdin)")
    run.add_argument("-o", "--output", type=Path, help="JSON-lines Results (required unless --dry-run)")
    run.add_argument("--max-in-flight", type=int, default=64, metavar="N", help="jobs running at once (default 64)")
    run.add_argument("--rate", type=float, metavar="JOBS_PER_S", help="submissions per second at most")
    run.add_argument("--unordered", action="store_true", help="write Results as they finish, not in input order")
    run.add_argument("--max-cost", type=float, metavar="USD", help="stop submitting before the batch spends more")
    run.add_argument("--dry-run", action="store_true", help="show routing and estimated cost; call no model")
    run.add_argument("--progress-interval", type=float, metavar="S", help="seconds between progress lines")
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.set_defaults(run=batch_run)


def _lines(path: Path) -> Iterator[str]:
    if str(path) == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8") as fh:
        yield from fh


def _count_lines(path: Path) -> int | None:
    """Non-blank lines of the input (read in blocks: nothing is kept), None for stdin."""
    if str(path) == "-":
        return None
    count = 0
    with open(path, "rb") as fh:
        for line in fh:
            count += bool(line.strip())
    return count


async def batch_run(args: argparse.Namespace) -> int:
    settings = client_settings(nats_url=args.nats_url, prefix=args.prefix)
    known = settings.registry().models
    if args.dry_run:
        return dry_run(read_jsonl(_lines(args.input), known_models=known), settings, as_json=args.json)
    if args.output is None:
        raise ValueError("batch run needs -o OUTPUT.jsonl (or --dry-run)")
    options = BatchOptions(
        max_in_flight=args.max_in_flight,
        rate=args.rate,
        ordered=not args.unordered,
        max_cost_usd=args.max_cost,
        journal=args.output.with_name(args.output.name + ".submitted"),
    )
    total = _count_lines(args.input)
    async with UnifiedModelClient(settings=settings, timeout_s=args.timeout) as client:
        run = BatchRun(client, read_jsonl(_lines(args.input), known_models=known), options)
        run.stats.total = total
        failed_path = args.output.with_name(args.output.stem + ".failed.jsonl")
        progress = None if args.no_progress else asyncio.create_task(show(run.stats, interval_s=args.progress_interval))
        try:
            # local files, written line by line: blocking writes are cheap next to NATS round trips
            with open(args.output, "w") as out, open(failed_path, "w") as failed:  # noqa: ASYNC230
                await _write(run, out, failed)
        finally:
            if progress is not None:
                progress.cancel()
                await asyncio.gather(progress, return_exceptions=True)
    summary = describe(run.stats, bar=False)
    if args.json:
        stats = run.stats
        fields = ("total", "done", "failed", "resumed", "skipped_for_cost", "cost_usd")
        print(json.dumps({k: getattr(stats, k) for k in fields} | {"output": str(args.output)}))
    else:
        print(f"batch finished: {summary}; results in {args.output}", file=sys.stderr)
    return 0 if run.stats.failed == 0 else 1


async def _write(run: BatchRun, out: TextIO, failed: TextIO) -> None:
    async for _, result in run.results():
        line = json.dumps(result) + "\n"
        out.write(line)
        if not result["success"]:
            failed.write(line)


def dry_run(items: Iterator[BatchItem], settings: Settings, *, as_json: bool) -> int:
    """Each job's routing decision and estimated cost from the pure policy (no live state:
    every model assumed up); nothing is sent anywhere."""
    router = IntelligentModelRouter(settings.registry())
    total_cost, jobs, invalid = 0.0, 0, 0
    by_model: dict[str | None, int] = {}
    for item in items:
        if item.job is None:
            invalid += 1
            row: dict[str, Any] = {
                "line": item.line,
                "job_id": item.job_id,
                "error": item.rejected.error.message if item.rejected and item.rejected.error else "invalid",
            }
        else:
            decision = router.route(item.job)
            model = decision.model.id if decision.model else None
            jobs += 1
            total_cost += decision.estimated_cost_usd
            by_model[model] = by_model.get(model, 0) + 1
            row = {
                "line": item.line,
                "job_id": item.job_id,
                "model": model,
                "rule": decision.rule,
                "estimated_cost_usd": decision.estimated_cost_usd,
                "reasoning": decision.reasoning,
            }
        if as_json:
            print(json.dumps(row))
        elif "error" in row:
            print(f"line {row['line']}: invalid: {row['error']}")
        else:
            print(f"line {row['line']}: {row['model']} ({row['rule']}) est. ${row['estimated_cost_usd']:.6f}")
    mix = ", ".join(f"{m}: {n}" for m, n in by_model.items())
    print(
        f"dry run: {jobs} jobs ({mix}), {invalid} invalid; estimated cost ${total_cost:.6f} (no model called)",
        file=sys.stderr,
    )
    return 0 if invalid == 0 else 1
