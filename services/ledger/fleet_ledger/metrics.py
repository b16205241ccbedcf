"""The ledger's metrics: its part of the fleet's catalogue (``fleet_shared.metrics``), served
with /healthz and /readyz by the shared ops endpoint (``fleet_shared.ops_http``).

Each ledger has its own registry (several ledgers may share a Python process in tests).
The names and labels are the ones this module always exported (``fleet_ledger_*``); the
catalogue adds batch size and commit latency. The shared endpoint replaces aioprometheus's
aiohttp-based Service, which the ledger's own dependencies never installed.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet_shared.metrics import FleetMetrics
from fleet_shared.ops_http import Check, OpsServer


class LedgerMetrics:
    """Counters and histograms labelled by ``consumer`` (events | results), ``table`` or ``kind``."""

    def __init__(self, metrics: FleetMetrics | None = None) -> None:
        self.fleet = metrics or FleetMetrics()
        #: failures per consumer and kind (decode, transient, permanent, fetch, unexpected)
        self.errors = self.fleet.counter("fleet_ledger_errors_total")
        self._server: OpsServer | None = None

    def error(self, consumer: str, kind: str) -> None:
        self.fleet.record_ledger_error(consumer, kind)

    def committed(self, consumer: str, *, messages: int, rows: Mapping[str, int], seconds: float | None = None) -> None:
        """A committed transaction (``seconds``: its write-and-commit time, when measured)."""
        self.fleet.record_ledger_commit(consumer, messages=messages, rows=rows, seconds=seconds)

    async def serve(self, port: int, addr: str = "", *, checks: Mapping[str, Check] | None = None) -> None:
        """Serve /metrics, /healthz and /readyz (``checks``) over HTTP on ``port``."""
        self._server = OpsServer(self.fleet, checks=checks, host=addr, port=port)
        await self._server.start()

    async def aclose(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
