"""The floor: a bare pipeline with the fleet's hops and none of its logic.

    python -m fleet_bench.floor --role intake|worker|writer --nats URL --prefix P ...

Three processes, like the fleet's router, worker and ledger, on the same nats-server and
driven by the same load generator (``<p>.request``, request-reply):

    intake   core ``<p>.request`` -> JetStream ``<p>.submit`` (reply inbox in a header);
             work-queue consumer of ``<p>.submit`` -> JetStream ``<p>.dispatch``
    worker   work-queue consumer of ``<p>.dispatch`` -> POST /chat/completions to the
             emulator (aiohttp) -> the answer to the requester (core) and to JetStream
             ``<p>.results``
    writer   work-queue consumer of ``<p>.results`` -> one INSERT of the fetched batch
             (``unnest``) into PostgreSQL -> acks

Written the simplest fast way: no validation, routing, retries, escalation, budgets,
metrics or de-duplication. Its figures tell the architecture's cost (JetStream hops,
processes, an HTTP call, a database write) apart from the fleet code's. The answer has
the shape of a fleet Result (``job_id``, ``success``, ``attempts[].latency_ms`` and
``provider_ms``), so the load generator times both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

log = logging.getLogger("fleet_bench.floor")

REPLY_HEADER = "Floor-Reply-To"
#: the model id the worker asks the emulator for (what the fleet's local_mlx sends)
MODEL = "qwen/qwen3-30b-a3b-2507"
STREAMS = {"submit": "JOBS", "dispatch": "DISPATCH", "results": "RESULTS"}


class _Job(msgspec.Struct):
    id: str
    prompt: str


class _MessageOut(msgspec.Struct):
    content: str | None = None


class _ChoiceOut(msgspec.Struct):
    message: _MessageOut


class _Completion(msgspec.Struct):
    choices: list[_ChoiceOut]


class _Row(msgspec.Struct):
    job_id: str
    content: str
    attempts: list[dict]


_job = msgspec.json.Decoder(_Job)
_completion = msgspec.json.Decoder(_Completion)
_row = msgspec.json.Decoder(_Row)


def stream_name(prefix: str, key: str) -> str:
    return f"FLOOR_{prefix.upper()}_{STREAMS[key]}"


async def ensure_streams(nc, prefix: str) -> None:
    """The three work-queue streams (file storage, as the fleet's)."""
    js = nc.jetstream()
    for key in STREAMS:
        await js.add_stream(
            api.StreamConfig(
                name=stream_name(prefix, key),
                subjects=[f"{prefix}.{key}"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )


async def pull_loop(
    js: JetStreamContext, prefix: str, key: str, handle: Callable[[list[Msg]], Awaitable[None]], concurrency: int
) -> None:
    """Fetch from ``<p>.<key>`` and run ``handle`` on each batch, ``concurrency`` messages in
    flight at most. ``fetch(1)`` then the backlog the server announced: nats-py's
    ``fetch(n)`` waits out its timeout for a full batch when fewer are there."""
    sub = await js.pull_subscribe(
        f"{prefix}.{key}",
        durable=f"floor-{key}",
        stream=stream_name(prefix, key),
        config=api.ConsumerConfig(max_ack_pending=concurrency * 4, ack_wait=30),
    )
    in_flight = 0
    room = asyncio.Event()
    tasks: set[asyncio.Task] = set()

    async def run(msgs: list[Msg]) -> None:
        nonlocal in_flight
        try:
            await handle(msgs)
        except Exception:
            log.exception("floor %s: handler failed", key)
        finally:
            in_flight -= len(msgs)
            room.set()

    while True:
        if in_flight >= concurrency:
            room.clear()
            await room.wait()
            continue
        try:
            msgs = await sub.fetch(1, timeout=5.0)
            pending = msgs[-1].metadata.num_pending or 0
            free = concurrency - in_flight - 1
            if pending and free:
                try:
                    msgs += await sub.fetch(min(free, pending), timeout=0.05)
                except nats.errors.TimeoutError:
                    pass
        except nats.errors.TimeoutError:
            continue
        in_flight += len(msgs)
        batches = [msgs] if handle_batches(key) else [[m] for m in msgs]
        for batch in batches:
            task = asyncio.create_task(run(batch))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def handle_batches(key: str) -> bool:
    """The writer takes a fetched batch at once (one INSERT); the others one message each."""
    return key == "results"


# -- the three roles ------------------------------------------------------------------


async def intake(nc, js: JetStreamContext, args: argparse.Namespace) -> None:
    tasks: set[asyncio.Task] = set()

    async def store(msg: Msg) -> None:
        await js.publish(f"{args.prefix}.submit", msg.data, headers={REPLY_HEADER: msg.reply})

    async def on_request(msg: Msg) -> None:
        task = asyncio.create_task(store(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def forward(msgs: list[Msg]) -> None:
        msg = msgs[0]
        await js.publish(f"{args.prefix}.dispatch", msg.data, headers=msg.headers)
        await msg.ack()

    await nc.subscribe(f"{args.prefix}.request", cb=on_request, queue="floor-intake")
    await pull_loop(js, args.prefix, "submit", forward, args.concurrency)


async def worker(nc, js: JetStreamContext, args: argparse.Namespace) -> None:
    import aiohttp

    url = args.base_url.rstrip("/") + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call(msgs: list[Msg]) -> None:
            msg = msgs[0]
            job = _job.decode(msg.data)
            body = {"model": MODEL, "messages": [{"role": "user", "content": job.prompt}], "max_tokens": 256}
            t0 = time.perf_counter()
            async with http.post(
                url, data=msgspec.json.encode(body), headers={"content-type": "application/json"}
            ) as r:
                raw = await r.read()
                own = r.headers.get("openai-processing-ms")
            latency_ms = (time.perf_counter() - t0) * 1000
            reply = _completion.decode(raw)
            answer = msgspec.json.encode(
                {
                    "job_id": job.id,
                    "success": r.status == 200,
                    "content": reply.choices[0].message.content or "",
                    "attempts": [{"latency_ms": latency_ms, "provider_ms": float(own) if own else None}],
                }
            )
            reply_to = (msg.headers or {}).get(REPLY_HEADER)
            if reply_to:
                await nc.publish(reply_to, answer)
            await js.publish(f"{args.prefix}.results", answer)
            await msg.ack()

        await pull_loop(js, args.prefix, "dispatch", call, args.concurrency)


async def writer(nc, js: JetStreamContext, args: argparse.Namespace) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=4)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS floor_results (job_id text PRIMARY KEY, content text, latency_ms float8,"
        " written_at timestamptz NOT NULL DEFAULT now())"
    )

    async def write(msgs: list[Msg]) -> None:
        rows = [_row.decode(m.data) for m in msgs]
        await pool.execute(
            "INSERT INTO floor_results (job_id, content, latency_ms)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) ON CONFLICT DO NOTHING",
            [r.job_id for r in rows],
            [r.content for r in rows],
            [float(r.attempts[0].get("latency_ms", 0.0)) if r.attempts else 0.0 for r in rows],
        )
        for m in msgs:
            await m.ack()

    await pull_loop(js, args.prefix, "results", write, args.concurrency)


ROLES = {"intake": intake, "worker": worker, "writer": writer}


async def main_async(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.nats, name=f"floor-{args.role}", max_reconnect_attempts=3)
    try:
        await ensure_streams(nc, args.prefix)  # idempotent: every role can come first
        await ROLES[args.role](nc, nc.jetstream(), args)
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.floor")
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--base-url", default="", help="the emulator (worker)")
    parser.add_argument("--database-url", default="", help="PostgreSQL (writer)")
    parser.add_argument("--concurrency", type=int, default=64, help="messages in flight")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # the same process tuning as the fleet's: uvloop unless opted out, a GC that leaves
    # the start-up heap alone (fleet_shared.runtime, written out here)
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    if os.environ.get("FLEET_EVENT_LOOP", "uvloop") != "asyncio" and importlib.util.find_spec("uvloop"):
        import uvloop

        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
