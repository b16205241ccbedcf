"""The ledger process: three durable pull consumers feeding PostgreSQL, plus the analytics
endpoints, inside the lifecycle every fleet process shares (``fleet_shared.service``).

    start()   NATS -> streams -> PostgreSQL pool (retried) -> migrations -> consumers
              "ledger-events", "ledger-results" and "ledger-feedback" -> micro service "fleet-ledger"
              (fleet_shared.health) with the analytics endpoints -> /metrics; then the
              consumers run, one loop task each (``async with Ledger(s):`` alone records)
    stop()    stop fetching, let each loop finish its batch (``grace_s``), then close
              everything in reverse order (NATS drained last)

After each commit it publishes, on core NATS (a notice, not a record):
    <p>.ledger.committed         {"job_ids": [...]}  jobs whose Result row is committed
    <p>.ledger.committed.events  {"decision_job_ids": [...], "attempts": [[job_id, attempt_no], ...]}
    <p>.ledger.committed.feedback  {"feedback": [msg_id, ...]}  feedback rows committed
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import msgspec
from nats.micro.service import Service

from fleet_ledger import pg_arrays
from fleet_ledger.analytics import DEFAULT_REFERENCE_PRICES, RouterAnalytics
from fleet_ledger.api import AnalyticsEndpoints
from fleet_ledger.auto_rules import run_auto_mode
from fleet_ledger.consumer import BatchConsumer
from fleet_ledger.errors import is_transient
from fleet_ledger.handler import BatchHandler
from fleet_ledger.metrics import LedgerMetrics
from fleet_ledger.migrate import migrate
from fleet_ledger.writer import Rows
from fleet_shared import rules_store
from fleet_shared.config import Settings
from fleet_shared.loop import backoff_s
from fleet_shared.ops_http import Check, postgres_answers
from fleet_shared.schema import encode, event_decoder, feedback_decoder, result_decoder
from fleet_shared.service import FleetService, Loop

log = logging.getLogger(__name__)

SERVICE_NAME = "fleet-ledger"
#: Connections: one per consumer loop, the rest for analytics requests.
POOL_SIZE = 4
#: A black-holed PostgreSQL or a stuck statement becomes a TimeoutError (transient: retried)
#: instead of a loop that hangs for ever.
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0


class Ledger(FleetService):
    """One ledger process; an async context manager (``async with Ledger(s):``) or ``run()``.

    Parameters:
        settings: database_url, nats_url, subject_prefix, ledger_batch_size, ack_wait_s,
            ledger_store_prompt, daily_budget_usd and metrics_port are read (the ledger's
            consumers never give a message up, whatever max_deliver says).
        fetch_timeout_s: longest wait of one fetch; also bounds how long stop waits for it.
        grace_s: how long ``stop`` lets the loops finish their batch before cancelling.
        db_connect_timeout_s: how long ``start`` retries an unreachable PostgreSQL.
    """

    name = SERVICE_NAME
    description = "Records every routing decision, attempt and result; serves analytics"
    uses_health_board = False

    def __init__(
        self,
        settings: Settings,
        *,
        fetch_timeout_s: float = 1.0,
        grace_s: float = 10.0,
        db_connect_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(settings)
        self.ledger_metrics = LedgerMetrics(self.metrics)
        self.fetch_timeout_s = fetch_timeout_s
        self._grace_s = grace_s
        self.db_connect_timeout_s = db_connect_timeout_s
        self.pool: asyncpg.Pool | None = None
        self.analytics: RouterAnalytics | None = None
        self._consuming = False

    @property
    def grace_s(self) -> float:
        return self._grace_s

    async def start(self) -> None:
        """Connect and start consuming; a no-op when already started.

        Raises:
            OSError, asyncpg.PostgresError: PostgreSQL still unreachable after
                ``db_connect_timeout_s``, or a migration failed.
        """
        await super().start()
        if not self._consuming:
            self._consuming = True
            for loop in self.loops:
                self.spawn(loop.run())

    async def run(self) -> None:
        """Start, and serve until ``stop()`` (the consumers run from ``start`` on)."""
        await self.start()
        await self.stopping.wait()

    async def setup(self) -> None:
        settings = self.settings
        pg_arrays.narrow()  # the writer's per-element array checks without ABC calls
        self.pool = await self._open_database()
        self.at_stop(self.pool.close)
        self.analytics = RouterAnalytics(self.pool, reference_prices=_reference_prices(settings))
        self.loops = await self._consumers(self.pool)
        if settings.rules_auto_apply_evidence > 0:
            self.spawn(self._auto_rules(self.analytics))

    async def _auto_rules(self, analytics: RouterAnalytics) -> None:
        """The recommendations' auto mode (``fleet_ledger.auto_rules``), when configured."""
        s = self.settings
        kv = await rules_store.open_config(self.js, self.subjects)
        await run_auto_mode(
            analytics,
            kv,
            min_evidence=s.rules_auto_apply_evidence,
            interval_s=s.rules_auto_apply_interval_s,
            known_models=frozenset(s.registry().models),
            stopping=self.stopping,
        )

    async def registered(self, service: Service) -> None:
        settings = self.settings
        if self.analytics is not None:
            endpoints = AnalyticsEndpoints(self.analytics, daily_budget_usd=settings.daily_budget_usd)
            await endpoints.add_to(service, self.subjects)
        log.info("ledger started (prefix %s)", settings.subject_prefix)

    def readiness_checks(self) -> dict[str, Check]:
        return {"postgres": self._postgres_answers}

    async def _postgres_answers(self) -> bool:
        return self.pool is not None and await postgres_answers(self.pool)()

    async def closed(self) -> None:
        log.info("ledger stopped")

    async def _open_database(self) -> asyncpg.Pool:
        """A pool on a migrated database; retries while PostgreSQL is unreachable."""
        deadline = time.monotonic() + self.db_connect_timeout_s
        attempt = 0
        while True:
            try:
                pool = await asyncpg.create_pool(
                    self.settings.database_url,
                    min_size=1,
                    max_size=POOL_SIZE,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                )
                try:
                    async with pool.acquire() as conn:
                        await migrate(conn)
                except BaseException:
                    await pool.close()
                    raise
                return pool
            except Exception as exc:
                attempt += 1
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("PostgreSQL unavailable (%r); retry %d", exc, attempt)
                await asyncio.sleep(backoff_s(attempt, cap_s=5.0))

    async def _consumers(self, pool: asyncpg.Pool) -> list[Loop]:
        s, subjects = self.settings, self.subjects
        specs: list[tuple[str, str, str, str, msgspec.json.Decoder[Any]]] = [
            ("events", subjects.events_stream, "ledger-events", subjects.events_all, event_decoder),
            ("results", subjects.results_stream, "ledger-results", subjects.result_all, result_decoder),
            ("feedback", subjects.feedback_stream, "ledger-feedback", subjects.feedback, feedback_decoder),
        ]
        consumers: list[Loop] = []
        for name, stream, durable, filter_subject, decoder in specs:
            sub = await self.pull_consumer(
                stream=stream,
                durable=durable,
                filter_subject=filter_subject,
                # never give a record up: PostgreSQL outages are held, poison is dead-lettered
                ack_wait_s=s.ack_wait_s,
                max_deliver=-1,
                # every ledger process may hold one batch in hand
                max_ack_pending=max(1000, 4 * s.ledger_batch_size),
            )
            handler = BatchHandler(
                name=name, decoder=decoder, pool=pool, metrics=self.ledger_metrics, store_prompt=s.ledger_store_prompt
            )
            consumers.append(
                BatchConsumer(
                    sub=sub,
                    handler=handler,
                    settler=self.settler(durable),
                    batch_size=s.ledger_batch_size,
                    fetch_timeout_s=self.fetch_timeout_s,
                    linger_s=s.ledger_linger_ms / 1000.0,
                    # in_progress() is sent once per retry, so retry well within ack_wait
                    max_backoff_s=min(30.0, s.ack_wait_s / 2),
                    metrics=self.ledger_metrics,
                    on_commit=self._notify,
                )
            )
        return consumers

    async def _notify(self, consumer: str, rows: list[Rows]) -> None:
        """Publish what was committed (best effort: the rows are safe either way)."""
        job_ids = sorted({j for r in rows for j in r.result_job_ids})
        decisions = sorted({j for r in rows for j in r.decision_job_ids})
        attempts = sorted({(row[0], row[1]) for r in rows for row in r.attempt_records})
        feedback = sorted({row[0] for r in rows for row in r.feedback})
        try:
            if job_ids:
                await self.nc.publish(self.subjects.ledger_committed, encode({"job_ids": job_ids}))
            if decisions or attempts:
                notice = {"decision_job_ids": decisions, "attempts": [list(a) for a in attempts]}
                await self.nc.publish(self.subjects.ledger_committed_events, encode(notice))
            if feedback:
                await self.nc.publish(self.subjects.ledger_committed_feedback, encode({"feedback": feedback}))
        except Exception as exc:
            log.warning("%s: could not publish the commit notice: %s", consumer, exc)


def _reference_prices(settings: Settings) -> tuple[float, float]:
    """(input, output) USD/Mtok of the registry's first complex model (claude by default)."""
    try:
        registry = settings.registry()
        for model_id in registry.rules.complex_models:
            spec = registry.get(model_id)
            if spec is not None and not spec.is_local:
                return spec.input_per_mtok, spec.output_per_mtok
    except Exception as exc:  # a broken registry must not stop the ledger
        log.warning("no reference prices from the registry (%s); using defaults", exc)
    return DEFAULT_REFERENCE_PRICES
