"""CPU use per process and of the whole machine, sampled once a second into time buckets.

The soak asks why one minute's tail is longer than another's. On a shared machine the
usual answer is "something else ran": the meter books, per bucket, the CPU seconds of each
process of ours (a name -> pid map), of the PostgreSQL backends serving our database
(autovacuum workers included: they come and go, so the list is read again every sample),
and of the machine as a whole; ``other`` is the machine's minus ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import asyncpg

from fleet_bench.infra import proc_cpu_s

_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: the PostgreSQL processes working for one database: its backends and autovacuum workers
_PG_PIDS = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]  # guest time is counted in user already
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _CLK_TCK, sum(ticks) / _CLK_TCK


class CpuMeter:
    """``run()`` samples until cancelled; ``buckets[i]`` holds CPU seconds by name in bucket i.

    Parameters:
        pids: our processes by name (the load generator itself is added as ``loadgen``).
        bucket_of: maps the monotonic time of a sample to its bucket index (None: not booked).
        admin_dsn, database: where to find the PostgreSQL backends of our database (optional).
    """

    def __init__(
        self,
        pids: dict[str, int],
        bucket_of: Callable[[float], int | None],
        *,
        admin_dsn: str | None = None,
        database: str | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.pids = {**pids, "loadgen": os.getpid()}
        self.bucket_of = bucket_of
        self.admin_dsn, self.database = admin_dsn, database
        self.interval_s = interval_s
        self.buckets: dict[int, dict[str, float]] = {}

    async def run(self) -> None:
        conn = None
        if self.admin_dsn and self.database:
            with contextlib.suppress(Exception):  # PostgreSQL's share is context only
                conn = await asyncpg.connect(self.admin_dsn, timeout=5)
        try:
            last = await self._read(conn)
            while True:
                await asyncio.sleep(self.interval_s)
                now = await self._read(conn)
                index = self.bucket_of(time.monotonic())
                if index is not None:
                    bucket = self.buckets.setdefault(index, {})
                    for name, value in now.items():
                        bucket[name] = bucket.get(name, 0.0) + max(0.0, value - last.get(name, value))
                last = now
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _read(self, conn: asyncpg.Connection | None) -> dict[str, float]:
        out = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        if conn is not None:
            with contextlib.suppress(Exception):
                # per pid, so a worker that exits between samples only loses its last second
                for row in await conn.fetch(_PG_PIDS, self.database):
                    out[f"pg:{row['pid']}"] = proc_cpu_s(row["pid"])
        out["machine"] = machine_cpu_s()[0]
        return out

    def shares(self, index: int, seconds: float) -> dict[str, float]:
        """Bucket ``index`` as cores used on average: ours by name, postgres, the rest ("other")."""
        raw = self.buckets.get(index, {})
        out: dict[str, float] = {}
        for name, cpu_s in raw.items():
            key = "postgres" if name.startswith("pg:") else name
            out[key] = out.get(key, 0.0) + cpu_s
        machine = out.pop("machine", 0.0)
        out["other"] = max(0.0, machine - sum(out.values()))
        return {k: round(v / seconds, 3) for k, v in out.items()}
