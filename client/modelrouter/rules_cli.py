"""``modelrouter rules``: the fleet's custom rules and experiments (``fleet_shared.rules``).

    modelrouter rules check rules.toml         validate a file (no fleet needed)
    modelrouter rules set rules.toml           validate, then store it: every router reloads it
    modelrouter rules show                     the rules in force, and what each router loaded
    modelrouter rules history                  the versions kept
    modelrouter rules revert [--to REV]        store an earlier version again
    modelrouter rules apply-recommendation ID  append the rule of a ledger recommendation

A file that does not validate is refused with its line and reason (exit 1); nothing is
written. Routers validate again on load and keep their rules when a version is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from nats.js.kv import KeyValue

from fleet_shared import recommend_rules, rules_store
from fleet_shared.rules import parse_rules
from fleet_shared.subjects import Subjects
from modelrouter.analytics import RouterAnalytics
from modelrouter.commands import EXIT_NOT_FOUND, emit
from modelrouter.connection import FleetError, client_settings, connect


def add_rules_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    rules = sub.add_parser("rules", help="custom routing rules and experiments (hot-reloaded by every router)")
    verbs = rules.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser("check", parents=[common], help="validate a rule file (no fleet needed)")
    check.add_argument("file", help="the TOML rule file")
    check.set_defaults(run=check_file)
    put = verbs.add_parser("set", parents=[common], help="validate a rule file and make it the fleet's rules")
    put.add_argument("file", help="the TOML rule file")
    put.set_defaults(run=set_rules)
    show = verbs.add_parser("show", parents=[common], help="the rules in force and what each router loaded")
    show.set_defaults(run=show_rules)
    hist = verbs.add_parser("history", parents=[common], help="the versions of the rules kept")
    hist.set_defaults(run=rules_history)
    back = verbs.add_parser("revert", parents=[common], help="store an earlier version again (default: the previous)")
    back.add_argument("--to", type=int, metavar="REV", help="the revision to restore (see `rules history`)")
    back.set_defaults(run=revert_rules)
    apply = verbs.add_parser(
        "apply-recommendation", parents=[common], help="turn a recommendation (analytics recommendations) into a rule"
    )
    apply.add_argument("id", help="the recommendation's id, e.g. route_locally:openai")
    apply.add_argument("--dry-run", action="store_true", help="print the rule without storing it")
    apply.set_defaults(run=apply_recommendation)


def _known_models(args: argparse.Namespace) -> frozenset[str]:
    return frozenset(client_settings(nats_url=args.nats_url, prefix=args.prefix).registry().models)


@asynccontextmanager
async def _config(args: argparse.Namespace) -> AsyncIterator[KeyValue]:
    settings = client_settings(nats_url=args.nats_url, prefix=args.prefix)
    nc = await connect(settings)
    try:
        yield await rules_store.open_config(nc.jetstream(), Subjects(settings.subject_prefix))
    finally:
        await nc.close()


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")


async def check_file(args: argparse.Namespace) -> int:
    rules = parse_rules(_read(args.file), known_models=_known_models(args))  # RulesError: exit 1, line and reason
    summary = {
        "valid": True,
        "rules": [r.name for r in rules.rules],
        "experiments": [e.name for e in rules.experiments],
    }
    emit(summary) if args.json else print(
        f"{args.file}: valid ({len(rules.rules)} rules, {len(rules.experiments)} experiments)"
    )
    return 0


async def set_rules(args: argparse.Namespace) -> int:
    text = _read(args.file)
    async with _config(args) as kv:
        revision, rules = await rules_store.write(kv, text, known_models=_known_models(args))
    report = {"revision": revision, "rules": len(rules.rules), "experiments": len(rules.experiments)}
    emit(report) if args.json else print(f"rules stored as revision {revision}: routers reload them now")
    return 0


async def show_rules(args: argparse.Namespace) -> int:
    async with _config(args) as kv:
        current = await rules_store.current(kv)
        statuses = await rules_store.statuses(kv)
    if args.json:
        emit(msgspec.to_builtins({"current": current, "routers": statuses}))
        return 0 if current else EXIT_NOT_FOUND
    if current is None:
        print("no custom rules: the seed's decision tree alone routes")
    else:
        print(f"# revision {current.revision}\n{current.text.rstrip()}")
    for s in statuses:
        state = f"rejected revision {s.revision}: {s.error}" if s.error else "ok"
        print(
            f"# {s.router}: routing with revision {s.loaded_revision} ({s.rules} rules, {s.experiments} experiments); {state}"
        )
    return 0 if current else EXIT_NOT_FOUND


async def rules_history(args: argparse.Namespace) -> int:
    async with _config(args) as kv:
        versions = await rules_store.history(kv)
    if args.json:
        emit(msgspec.to_builtins(versions))
    for v in versions if not args.json else ():
        first = next((line for line in v.text.splitlines() if line.strip()), "(empty)")
        print(f"{v.revision:>6}  {first[:70]}")
    return 0 if versions else EXIT_NOT_FOUND


async def revert_rules(args: argparse.Namespace) -> int:
    async with _config(args) as kv:
        try:
            revision, restored = await rules_store.revert(kv, to_revision=args.to)
        except LookupError as exc:
            raise FleetError(str(exc)) from None
    emit({"revision": revision, "restored": restored.revision}) if args.json else print(
        f"revision {restored.revision} restored as revision {revision}"
    )
    return 0


async def apply_recommendation(args: argparse.Namespace) -> int:
    async with RouterAnalytics(nats_url=args.nats_url, prefix=args.prefix, timeout_s=args.timeout) as reports:
        recs = await reports.aget_optimization_recommendations()
    rec = next((r for r in recs if r.get("id") == args.id), None)
    if rec is None:
        known = ", ".join(str(r.get("id")) for r in recs) or "none"
        raise FleetError(f"no recommendation {args.id!r} now (current: {known})")
    if not rec.get("rule"):
        raise FleetError(f"recommendation {args.id!r} has no rule that would apply it")
    known_models = _known_models(args)
    if args.dry_run:
        print(rec["rule"], end="")
        return 0
    async with _config(args) as kv:
        current = await rules_store.current(kv)
        text = recommend_rules.with_rule(current.text if current else "", rec["rule"], known_models=known_models)
        revision, _ = await rules_store.write(kv, text, known_models=known_models)
    emit({"revision": revision, "rule": rec["rule"]}) if args.json else print(
        f"{rec['rule']}stored as revision {revision} (undo: modelrouter rules revert)"
    )
    return 0
