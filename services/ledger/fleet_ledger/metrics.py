"""Prometheus metrics of one ledger process (its own registry: several ledgers may share a
Python process in tests, and the default registry refuses a second metric of one name)."""

from __future__ import annotations

import logging

from aioprometheus import Counter, Registry
from aioprometheus.service import Service

log = logging.getLogger(__name__)


class LedgerMetrics:
    """Counters, labelled by ``consumer`` (events | results) and ``table`` or ``kind``."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.rows_written = Counter(
            "fleet_ledger_rows_written_total", "Rows upserted, per table.", registry=self.registry
        )
        self.batches = Counter(
            "fleet_ledger_batches_total", "Transactions committed, per consumer.", registry=self.registry
        )
        self.messages = Counter(
            "fleet_ledger_messages_total", "Messages acked after commit, per consumer.", registry=self.registry
        )
        self.errors = Counter(
            "fleet_ledger_errors_total",
            "Failures per consumer and kind (decode, transient, permanent, fetch, unexpected).",
            registry=self.registry,
        )
        self._server: Service | None = None

    def error(self, consumer: str, kind: str) -> None:
        self.errors.inc({"consumer": consumer, "kind": kind})

    def committed(self, consumer: str, *, messages: int, rows: dict[str, int]) -> None:
        self.batches.inc({"consumer": consumer})
        self.messages.add({"consumer": consumer}, messages)
        for table, count in rows.items():
            if count:
                self.rows_written.add({"table": table}, count)

    async def serve(self, port: int, addr: str = "") -> None:
        """Serve /metrics over HTTP on ``port``."""
        self._server = Service(registry=self.registry)
        await self._server.start(addr=addr, port=port)
        log.info("metrics on %s", self._server.metrics_url)

    async def aclose(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
