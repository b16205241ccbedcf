"""The router's side of the fleet-wide budgets: reserve a paid attempt's estimate before it
is dispatched (``fleet_shared.budget``); the worker settles it with the actual cost."""

from __future__ import annotations

import logging
import time

from nats.aio.client import Client

from fleet_shared.budget import BudgetBook, Charge, charges
from fleet_shared.registry import ModelSpec
from fleet_shared.schema import BudgetAlert, Job, encode
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router.budgets")


def hold_id(job_id: str, attempt_no: int) -> str:
    """One hold per attempt: a redelivered dispatch finds its own hold instead of taking two."""
    return f"{job_id}:{attempt_no}"


class Reservation:
    """What a dispatch carries so its worker can settle: the hold and the keys it is on."""

    __slots__ = ("hold", "keys")

    def __init__(self, hold: str, keys: list[str]) -> None:
        self.hold = hold
        self.keys = keys


class RouterBudgets:
    """Reserves against ``book`` and publishes its alerts on ``<p>.alerts.budget``.

    Parameters:
        book: the fleet's budgets (watched, so the policy sees what is left).
        nc: where alerts are published.
        subjects: the fleet's names.
    """

    def __init__(self, book: BudgetBook, nc: Client, subjects: Subjects) -> None:
        self.book = book
        self.nc = nc
        self.subjects = subjects
        book.on_alert = self._publish_alert

    async def reserve(
        self, job_id: str, attempt_no: int, job: Job, spec: ModelSpec, estimate_usd: float
    ) -> tuple[Reservation | None, Charge | None]:
        """Hold ``estimate_usd`` for a paid model on every budget it draws from.

        Returns (the reservation, None) when held, (None, None) for a free model or one no
        budget limits, and (None, the charge that refused) when a budget is exhausted.

        Raises:
            RuntimeError: lost too many compare-and-set races (a transient fault: retry).
        """
        if spec.is_local:
            return None, None
        pairs = self.book.config.scoped(model=spec.id, provider=spec.provider, metadata=job.metadata)
        to = charges(pairs, time.time())
        if not to:
            return None, None
        hold = hold_id(job_id, attempt_no)
        refused = await self.book.reserve(hold, estimate_usd, to)
        if refused is not None:
            log.info("job %s: %s budget (%s) refuses $%.6f", job_id, refused.scope, refused.period, estimate_usd)
            return None, refused
        return Reservation(hold, [c.key for c in to]), None

    async def _publish_alert(self, alert: BudgetAlert) -> None:
        log.warning(
            "budget %s %s %s: $%.4f of $%.4f",
            alert.scope,
            alert.period,
            alert.level,
            alert.committed_usd,
            alert.limit_usd,
        )
        try:
            await self.nc.publish(self.subjects.budget_alerts, encode(alert))
        except Exception as exc:  # an alert lost is logged above; the reservation stands
            log.info("budget alert not published: %s", exc)
