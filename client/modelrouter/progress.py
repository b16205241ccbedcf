"""The batch progress display on stderr: a redrawn bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from modelrouter.batch import BatchStats

BAR_WIDTH = 24


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def describe(stats: BatchStats, *, bar: bool) -> str:
    """``[#####.....] 120/500 done 118 failed 2 in flight 64 | 85.3 jobs/s ETA 0:04 | $0.001234``"""
    rate = stats.rate()
    parts = []
    if stats.total:
        share = min(1.0, stats.finished / stats.total)
        if bar:
            filled = int(share * BAR_WIDTH)
            parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
        parts.append(f"{stats.finished}/{stats.total}")
    else:
        parts.append(f"{stats.finished}")
    counts = f"done {stats.done} failed {stats.failed} in flight {stats.in_flight}"
    if stats.resumed:
        counts += f" (resumed {stats.resumed})"
    parts.append(counts)
    speed = f"| {rate:.1f} jobs/s"
    if stats.total and rate > 0:
        speed += f" ETA {_duration((stats.total - stats.finished) / rate)}"
    parts.append(speed)
    parts.append(f"| ${stats.cost_usd:.6f}")
    return " ".join(parts)


async def show(stats: BatchStats, *, stream: TextIO | None = None, interval_s: float | None = None) -> None:
    """Redraw every 0.2 s on a terminal, else print a line every ``interval_s`` (10 s);
    runs until cancelled."""
    out = stream or sys.stderr
    tty = out.isatty()
    every = interval_s or (0.2 if tty else 10.0)
    try:
        while True:
            await asyncio.sleep(every)
            line = describe(stats, bar=tty)
            out.write(f"\r\x1b[2K{line}" if tty else f"{time.strftime('%H:%M:%S')} {line}\n")
            out.flush()
    finally:
        if tty:
            out.write("\n")
            out.flush()
