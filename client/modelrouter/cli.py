"""``modelrouter``: the fleet from a terminal.

    modelrouter ask "Write hello world" --complexity 2
    modelrouter status
    modelrouter batch run jobs.jsonl -o results.jsonl
    modelrouter rules set rules.toml

Every command takes ``--json`` (one JSON document, or JSON lines for streams) and the
connection options ``--nats-url`` / ``--prefix`` (default: NATS_URL, FLEET_SUBJECT_PREFIX;
credentials from the same NATS_* variables as the fleet). Errors are one line on stderr
and a non-zero exit status: 1 an error, 2 a usage error, 3 not found / not ready,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import msgspec

from fleet_shared.schema import TaskType
from modelrouter import commands
from modelrouter.batch_cli import add_batch_parser
from modelrouter.connection import FleetError
from modelrouter.rules_cli import add_rules_parser

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    group.add_argument("--nats-url", help="NATS server URL(s), comma-separated (default: $NATS_URL)")
    group.add_argument("--prefix", help="the fleet's subject prefix (default: $FLEET_SUBJECT_PREFIX or llm)")
    group.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds to wait (default 120)")
    return common


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt; '-' reads it from stdin")
    parser.add_argument("-t", "--task-type", choices=[t.value for t in TaskType], help="task type")
    parser.add_argument("-c", "--complexity", type=int, metavar="1-10", help="complexity (1 simple .. 10 hard)")
    parser.add_argument("-m", "--model", help="force this model (context.force_model), e.g. local_mlx")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--max-tokens", type=int, help="answer length limit (tokens)")
    parser.add_argument("--id", dest="job_id", help="job id (default: a new random id)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="modelrouter",
        description="Ask, submit and batch jobs to the model router fleet; watch its health, decisions and costs. "
        "Every command takes --json, --nats-url, --prefix and --timeout after its name.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = sub.add_parser("ask", parents=[common], help="ask one prompt, stream the answer, show model / cost / why")
    _job_options(ask)
    ask.add_argument("--no-stream", action="store_true", help="print the answer only when it is complete")
    ask.set_defaults(run=commands.ask)

    submit = sub.add_parser("submit", parents=[common], help="submit a job durably; print its id")
    _job_options(submit)
    submit.set_defaults(run=commands.submit)

    result = sub.add_parser("result", parents=[common], help="print a job's Result if it has one (exit 3 if not)")
    result.add_argument("job_id", help="the job's id")
    result.set_defaults(run=commands.result)

    wait = sub.add_parser("wait", parents=[common], help="wait for a job's Result and print it")
    wait.add_argument("job_id", help="the job's id")
    wait.set_defaults(run=commands.wait)

    status = sub.add_parser("status", parents=[common], help="fleet health: services, workers, queues, models")
    status.set_defaults(run=commands.status)

    models = sub.add_parser("models", parents=[common], help="the model registry: providers, prices, health")
    models.set_defaults(run=commands.models)

    analytics = sub.add_parser("analytics", parents=[common], help="the ledger's reports")
    analytics.add_argument(
        "report", choices=["performance", "cost", "budget", "recommendations", "experiments"], help="which report"
    )
    analytics.add_argument("--since", metavar="AGE", help="only the last AGE, e.g. 30m, 24h, 7d (default: all time)")
    analytics.add_argument("--budget", type=float, metavar="USD", help="daily budget (default: the fleet's)")
    analytics.set_defaults(run=commands.analytics)

    report = sub.add_parser("report", parents=[common], help="a self-contained HTML report with plots")
    report.add_argument("--since", metavar="AGE", help="only the last AGE, e.g. 24h, 7d (default: all time)")
    report.add_argument("-o", "--output", default="report.html", metavar="FILE", help="where to write it")
    report.set_defaults(run=commands.report)

    decisions = sub.add_parser("decisions", parents=[common], help="live tail of the router's decisions")
    decisions.add_argument("-f", "--follow", action="store_true", help="keep following (the default)")
    decisions.add_argument("-n", "--count", type=int, metavar="N", help="stop after N decisions")
    decisions.set_defaults(run=commands.decisions)

    feedback = sub.add_parser("feedback", parents=[common], help="score a job's answer")
    feedback.add_argument("job_id", help="the job's id")
    feedback.add_argument("score", type=float, help="your score: 1 (bad) to 5 (excellent)")
    feedback.add_argument("--comment", default="", help="free text")
    feedback.set_defaults(run=commands.feedback)

    add_batch_parser(sub, common)
    add_rules_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns (and, as a console script, exits with) its status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error (argparse printed it)
        return int(exit_.code or 0) if isinstance(exit_.code, int | None) else EXIT_USAGE
    try:
        return int(asyncio.run(args.run(args)) or 0)
    except KeyboardInterrupt:
        print("modelrouter: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FleetError, msgspec.ValidationError, ValueError, OSError) as exc:
        _fail(exc)
        return EXIT_ERROR
    except Exception as exc:  # never a traceback: one line, the type says what went wrong
        if os.environ.get("MODELROUTER_DEBUG"):
            raise
        _fail(exc, with_type=True)
        return EXIT_ERROR


def _fail(exc: BaseException, *, with_type: bool = False) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if with_type:
        message = f"{type(exc).__name__}: {message}"
    print(f"modelrouter: error: {message}", file=sys.stderr)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
