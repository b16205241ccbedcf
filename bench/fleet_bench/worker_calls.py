"""Provider calls per second of one worker process: the worker's own adapter and HTTP
client (``make_adapter`` + ``http_client``) against an emulator in another process.

    python -m fleet_bench.worker_calls [--base-url URL] [--concurrency 64] [--duration-s 5]

``provider_calls_per_s`` is what ``make bench`` calls. The calls run as in a worker process
(``python -m fleet_workers``: uvloop when installed, the GC tuned, see ``runtime``), on an
event loop of their own in a thread, since the caller already runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from fleet_shared.config import ProviderEndpoint, Settings
from fleet_shared.runtime import tune_gc, untune_gc, uvloop_factory
from fleet_shared.schema import ChatMessage
from fleet_workers.providers import ProviderRequest, make_adapter
from fleet_workers.service import http_client

PROMPT = "Write a Python function to sort a list"
MODEL = "qwen/qwen3-30b-a3b-2507"


@contextlib.contextmanager
def emulator_process(provider: str = "lmstudio") -> Iterator[str]:
    """An emulator in a child process (as in production, the provider is not in the worker)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet_emulators", "--provider", provider, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        if process.stdout is None:  # never: stdout=PIPE
            raise RuntimeError("the emulator has no stdout pipe")
        line = process.stdout.readline().strip()
        if "listening on" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield line.rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def _measure(base_url: str, concurrency: int, duration_s: float) -> dict:
    settings = Settings.from_env({}, worker_concurrency=concurrency)
    adapter = make_adapter("lmstudio", ProviderEndpoint("lmstudio", base_url, None), http_client(settings))
    request = ProviderRequest(model=MODEL, max_tokens=256, messages=[ChatMessage("user", PROMPT)])
    latencies: list[float] = []
    errors = 0

    async def caller(deadline: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await adapter.call(request)
            except Exception:
                errors += 1
                continue
            if record:
                latencies.append(time.perf_counter() - started)

    try:
        warm_until = time.perf_counter() + min(1.0, duration_s / 4)
        await asyncio.gather(*(caller(warm_until, False) for _ in range(concurrency)))
        errors = 0
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(started + duration_s, True) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await adapter.aclose()
    latencies.sort()
    n = len(latencies)
    reference = await _raw_aiohttp_calls_per_s(base_url, request, concurrency, duration_s)
    return {
        "provider_calls_per_s": round(n / elapsed, 1),
        "provider_calls": n,
        "provider_calls_errors": errors,
        "provider_call_ms_p50": round(1000 * latencies[n // 2], 3) if n else None,
        "provider_call_ms_p99": round(1000 * latencies[min(n - 1, int(n * 0.99))], 3) if n else None,
        "worker_cpu_us_per_call": round(1e6 * cpu / n, 1) if n else None,
        "concurrency": concurrency,
        "http": "httpx.AsyncClient over fleet_workers.transport.AiohttpTransport",
        # the same calls with bare aiohttp, right after: the ceiling on this machine right now
        "reference_raw_aiohttp_calls_per_s": reference,
        "share_of_raw_aiohttp": round(n / elapsed / reference, 2) if reference else None,
    }


async def _raw_aiohttp_calls_per_s(
    base_url: str, request: ProviderRequest, concurrency: int, duration_s: float
) -> float:
    """Bare aiohttp posting the same body: no adapter, no httpx (the machine's ceiling)."""
    import aiohttp
    import msgspec

    body = msgspec.json.encode({"model": request.model, "messages": request.messages, "max_tokens": request.max_tokens})
    url = base_url.rstrip("/") + "/chat/completions"
    calls = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def caller(deadline: float) -> None:
            nonlocal calls
            while time.perf_counter() < deadline:
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
                    msgspec.json.decode(await response.read())
                calls += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller(started + duration_s) for _ in range(concurrency)))
        return round(calls / (time.perf_counter() - started), 1)


def _run_like_a_worker(base_url: str, concurrency: int, duration_s: float) -> dict:
    """On a fresh event loop set up as ``python -m fleet_workers`` sets up its own."""
    factory = uvloop_factory()
    gc_before = tune_gc()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(_measure(base_url, concurrency, duration_s))
    finally:
        untune_gc(gc_before)  # the caller's process goes on as it was
    return report | {"loop": "uvloop" if factory else "asyncio"}


async def provider_calls_per_s(base_url: str | None = None, *, concurrency: int = 64, duration_s: float = 5.0) -> dict:
    """Calls/s of one worker's adapter against an LM Studio emulator, ``concurrency`` in flight.

    Parameters:
        base_url: a running emulator's base URL; None starts one in a child process.
    """
    with contextlib.ExitStack() as stack:
        url = base_url or stack.enter_context(emulator_process("lmstudio"))
        return await asyncio.to_thread(_run_like_a_worker, url, concurrency, duration_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.worker_calls", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    report = asyncio.run(provider_calls_per_s(args.base_url, concurrency=args.concurrency, duration_s=args.duration_s))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
