"""The CLI's commands (all but ``batch``): each ``async def name(args) -> exit status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import nats

from fleet_shared.schema import Decision, Feedback, encode, event_decoder
from fleet_shared.subjects import Subjects
from modelrouter import render
from modelrouter.analytics import RouterAnalytics
from modelrouter.client import UnifiedModelClient
from modelrouter.fleetinfo import fleet_status, model_health, models_table
from modelrouter.report import render_report

EXIT_NOT_FOUND = 3
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30m`` / ``24h`` / ``7d`` -> seconds.

    Raises:
        ValueError: not a number followed by s, m, h, d or w.
    """
    match = _AGE.match(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 7d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[UnifiedModelClient]:
    client = UnifiedModelClient(nats_url=args.nats_url, prefix=args.prefix, timeout_s=args.timeout)
    try:
        await client.connection()
        yield client
    finally:
        await client.close()


def emit(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    fields: dict[str, Any] = {
        "prompt": prompt,
        "task_type": args.task_type,
        "complexity": args.complexity,
        "system": args.system,
        "max_tokens": args.max_tokens,
    }
    if args.model:
        fields["context"] = {"force_model": args.model}
    if args.job_id:
        fields["id"] = args.job_id
    fields = {k: v for k, v in fields.items() if v is not None}
    UnifiedModelClient.build_job(**fields)  # a bad field is refused before connecting
    return fields


async def ask(args: argparse.Namespace) -> int:
    fields = _job_fields(args)
    async with open_client(args) as client:
        if args.json or args.no_stream:
            job = client.build_job(**fields)
            result = msgspec.to_builtins(await client.run_job(job))
            emit(result) if args.json else render.answer(result, with_content=True)
            return 0 if result["success"] else 1
        attempt = None
        result = {}
        async for event in client.stream(**fields):
            if event["type"] == "result":
                result = event["result"]
                break
            if attempt is not None and event["attempt_no"] != attempt:
                sys.stdout.write(f"\n[{event['model']} takes over]\n")
            attempt = event["attempt_no"]
            sys.stdout.write(event["delta"])
            if event["done"] and event.get("error"):
                sys.stdout.write(f"\n[{event['model']} failed: {event['error']['code']}]")
            sys.stdout.flush()
        sys.stdout.write("\n")
        streamed = attempt is not None
        render.answer(result, with_content=not streamed)
        return 0 if result.get("success") else 1


async def submit(args: argparse.Namespace) -> int:
    fields = _job_fields(args)
    async with open_client(args) as client:
        job_id = await client.submit(**fields)
    emit({"job_id": job_id}) if args.json else print(job_id)
    return 0


async def result(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        found = await client.result(args.job_id, wait=False)
    if found is None:
        print(f"modelrouter: no Result for {args.job_id} (yet)", file=sys.stderr)
        return EXIT_NOT_FOUND
    emit(found) if args.json else render.answer(found, with_content=True)
    return 0 if found["success"] else 1


async def wait(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        found = await client.result(args.job_id, wait=True, timeout_s=args.timeout)
    if found is None:  # wait=True raises instead; kept for the type checker
        return EXIT_NOT_FOUND
    emit(found) if args.json else render.answer(found, with_content=True)
    return 0 if found["success"] else 1


async def status(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        report = await fleet_status(await client.connection(), client.subjects, client.settings.registry())
    emit(report) if args.json else render.status(report)
    healthy = report["routers"] > 0 and any(p["workers"] for p in report["providers"].values())
    return 0 if healthy else 1


async def models(args: argparse.Namespace) -> int:
    async with open_client(args) as client:
        registry = client.settings.registry()
        health = await model_health(await client.connection(), client.subjects, registry)
    rows = models_table(registry, health)
    emit({"prices_as_of": registry.prices_as_of, "models": rows}) if args.json else render.models(rows, registry)
    return 0


async def analytics(args: argparse.Namespace) -> int:
    since = time.time() - parse_age(args.since) if args.since else None
    async with RouterAnalytics(nats_url=args.nats_url, prefix=args.prefix, timeout_s=args.timeout) as reports:
        if args.report == "performance":
            data: Any = await reports.aget_model_performance_report(since=since)
        elif args.report == "cost":
            data = await reports.aget_cost_analysis(since)
        elif args.report == "budget":
            data = await reports.aget_daily_budget_remaining(args.budget)
        elif args.report == "experiments":
            data = await reports.aget_experiment_report(since=since)
        else:
            data = await reports.aget_optimization_recommendations(since=since, daily_budget_usd=args.budget)
    emit(data) if args.json else render.analytics(args.report, data)
    return 0


async def report(args: argparse.Namespace) -> int:
    """Write the HTML report (``modelrouter.report``) of the ledger's figures."""
    since = time.time() - parse_age(args.since) if args.since else None
    async with RouterAnalytics(nats_url=args.nats_url, prefix=args.prefix, timeout_s=args.timeout) as reports:
        data = await reports.aget_report_data(since=since)
        performance = await reports.aget_model_performance_report(since=since)
    await asyncio.to_thread(Path(args.output).write_text, render_report(data, performance), "utf-8")
    summary = {"output": args.output, "since": since, **data["totals"]}
    if args.json:
        emit(summary)
    else:
        print(f"report written to {args.output}: {data['totals']['jobs']} jobs, ${data['totals']['actual']:.6f}")
    return 0


class _CarriesDecision(msgspec.Struct):
    """A Dispatch or a Result, read only for the Decision it carries."""

    decision: Decision | None = None


_carrier_decoder = msgspec.json.Decoder(_CarriesDecision)


def followed_decision(subject: str, data: bytes, subjects: Subjects) -> Decision | None:
    """The decision a message on a followed subject tells of, else None: a Dispatch carries
    the decision that sent its attempt; a Result the decision no attempt followed (rejected,
    no model left; its other decisions went out in Dispatches); <p>.events.decision one
    published on its own (routers before decisions travelled in Dispatches)."""
    try:
        if subject.startswith(subjects.result_all[:-1]):
            found = _carrier_decoder.decode(data).decision
            return found if found is not None and found.model is None else None
        if subject == subjects.decision_event:
            event = event_decoder.decode(data)
            return event if isinstance(event, Decision) else None
        return _carrier_decoder.decode(data).decision
    except msgspec.MsgspecError:
        return None


async def decisions(args: argparse.Namespace) -> int:
    """Tail the router's decisions where they travel: in every Dispatch (core NATS sees what
    the streams store), in the failed Results no attempt preceded, on <p>.events.decision."""
    seen = 0
    async with open_client(args) as client:
        nc = await client.connection()
        subjects = client.subjects
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for subject in (subjects.dispatch_all, subjects.result_all, subjects.decision_event):
            await nc.subscribe(subject, cb=queue.put)
        await nc.flush()
        print(f"following decisions on {subjects.dispatch_all} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while args.count is None or seen < args.count:
            msg = await queue.get()
            event = followed_decision(msg.subject, msg.data, subjects)
            if event is None:
                continue
            seen += 1
            emit(msgspec.to_builtins(event)) if args.json else render.decision(event)
            sys.stdout.flush()
    return 0


async def feedback(args: argparse.Namespace) -> int:
    """Publish ``{job_id, score, comment}`` on <p>.feedback: through JetStream (acked: the
    FEEDBACK stream keeps it and the ledger writes it) when a stream captures the subject,
    else a plain publish that live listeners see. The score is checked first (1-5)."""
    note = Feedback(job_id=args.job_id, score=args.score, comment=args.comment)
    msgspec.convert(msgspec.to_builtins(note), Feedback)  # limits are checked on decode only
    body = encode(note)
    msg_id = f"feedback-{uuid.uuid4().hex}"
    async with open_client(args) as client:
        nc = await client.connection()
        js = nc.jetstream()
        subject = client.subjects.feedback
        try:
            await js.find_stream_name_by_subject(subject)
            stored = True
        except nats.js.errors.NotFoundError:
            stored = False
        if stored:
            await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
        else:
            await nc.publish(subject, body)
            await nc.flush()
    out = {"id": msg_id, "job_id": args.job_id, "score": args.score, "subject": subject, "stored": stored}
    if args.json:
        emit(out)
    else:
        where = "stored" if stored else "published (no stream stores feedback)"
        print(f"feedback for {args.job_id}: {args.score:g} {where} ({msg_id})")
    return 0
