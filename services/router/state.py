"""The router's picture of live state, fed by the attempt events every worker publishes."""

from __future__ import annotations

import collections
import time

from fleet_router.policy import LiveState, ModelStats
from fleet_shared.schema import Attempt

#: Outcomes remembered per model for the recent success rate.
WINDOW = 50
#: Error classes that make a provider unusable until its configuration changes.
DISABLING_ERRORS = frozenset({"auth"})


class LiveStateTracker:
    """Recent outcomes per model, unavailable models, and today's spend (UTC)."""

    def __init__(self, *, daily_budget_usd: float | None) -> None:
        self.daily_budget_usd = daily_budget_usd
        self._outcomes: dict[str, collections.deque[bool]] = collections.defaultdict(
            lambda: collections.deque(maxlen=WINDOW)
        )
        self._unavailable: set[str] = set()
        self._day = self._today()
        self._spent_usd = 0.0
        self._snapshot: LiveState | None = None  # rebuilt only after a new observation

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86400)

    def observe(self, attempt: Attempt) -> None:
        self._snapshot = None
        self._outcomes[attempt.model].append(attempt.success)
        if attempt.success:
            self._unavailable.discard(attempt.model)
        elif attempt.error and attempt.error.code in DISABLING_ERRORS:
            self._unavailable.add(attempt.model)
        today = self._today()
        if today != self._day:
            self._day, self._spent_usd = today, 0.0
        self._spent_usd += attempt.cost_usd

    def snapshot(self) -> LiveState:
        if self._snapshot is None:
            self._snapshot = self._build()
        return self._snapshot

    def _build(self) -> LiveState:
        stats = {m: ModelStats(calls=len(o), failures=o.count(False)) for m, o in self._outcomes.items()}
        budget = None
        if self.daily_budget_usd is not None:
            budget = max(0.0, self.daily_budget_usd - self._spent_usd)
        return LiveState(unavailable=frozenset(self._unavailable), budget_remaining_usd=budget, stats=stats)
