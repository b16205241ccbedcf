"""python -m fleet_emulators --provider openai --port 18081 [--latency-ms 0] [--host 127.0.0.1] [--report-processing-ms]"""

from __future__ import annotations

import argparse
import asyncio
import gc

from fleet_emulators.server import EMULATORS, serve

#: Allocations between two generation-0 collections. With --latency-ms every request's
#: objects (its handler task and frames, the request, the response) stay alive until it is
#: answered, thousands of them at once in the benchmark's slow case; with the default (700)
#: the collector kept walking them, then promoting them, and a third of the emulator's CPU
#: went to collections that found nothing. Its requests leave no reference cycles behind.
GEN0_THRESHOLD = 500_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_emulators", description="Run one provider emulator.")
    parser.add_argument("--provider", required=True, choices=sorted(EMULATORS))
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before every chat answer")
    parser.add_argument(
        "--report-processing-ms",
        action="store_true",
        help="send openai-processing-ms (the emulator's own time) even where the real API does not",
    )
    args = parser.parse_args(argv)
    options = {"report_processing_ms": True} if args.report_processing_ms else {}
    run(serve(args.provider, host=args.host, port=args.port, latency_ms=args.latency_ms, **options))
    return 0


def run(main_coroutine) -> None:
    """Run on uvloop when it is installed: the emulator must outpace the workers it serves."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


def tune_gc() -> None:
    """Keep the collector off what start-up built, and off the requests waiting to be answered."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


if __name__ == "__main__":
    raise SystemExit(main())
