"""The router's picture of live state: recent outcomes per model and task type (decaying
statistics replayed from the attempt stream, the same on every router: ``fleet_router.adaptive``), fleet-wide availability (the health board in NATS KV, written by the prober and
the workers) and the budgets left (fleet-wide, in NATS KV: ``fleet_shared.budget``)."""

from __future__ import annotations

import time

from fleet_router.adaptive import PerformanceBook
from fleet_router.policy import LiveState
from fleet_shared.availability import PROVIDER_ASKED, HealthBoard
from fleet_shared.budget import BudgetBook
from fleet_shared.schema import Attempt

#: The statistics are recomputed (decayed to now) at most this often without a new outcome.
STATS_REFRESH_S = 0.5
#: Error classes that make a provider unusable until its configuration changes (used only
#: without a health board; with one, the board is the fleet-wide source of truth).
DISABLING_ERRORS = frozenset({"auth"})


class LiveStateTracker:
    """Recent outcomes per model, unavailable and ramping models, and the budgets left."""

    def __init__(
        self,
        *,
        board: HealthBoard | None = None,
        budgets: BudgetBook | None = None,
        performance: PerformanceBook | None = None,
        stats_refresh_s: float = STATS_REFRESH_S,
    ) -> None:
        self.board = board
        #: the fleet's budgets, followed from NATS KV (None: no limits)
        self.budgets = budgets
        #: recent outcomes per model and task type (fed by ``fleet_router.feed``)
        self.performance = performance or PerformanceBook()
        self._performance_version = -1
        self._stats_built_at = -float("inf")
        #: the statistics in a snapshot are at most this old (a rebuild decays every model's)
        self.stats_refresh_s = stats_refresh_s
        self._unavailable: set[str] = set()
        self._snapshot: LiveState | None = None  # rebuilt only after a new observation
        self._board_version = -1
        self._budgets_version = -1
        self._valid_until = float("inf")  # the next moment a cooldown or ramp changes phase

    def observe(
        self, attempt: Attempt, *, at: float | None = None, job_id: str | None = None, task_type: str | None = None
    ) -> None:
        """One attempt's outcome (``at``: its stream timestamp; default now)."""
        self.performance.attempt(attempt, at=time.time() if at is None else at, job_id=job_id, task_type=task_type)
        if self.board is None:
            if attempt.success and attempt.model in self._unavailable:
                self._unavailable.discard(attempt.model)
                self._snapshot = None
            elif attempt.error and attempt.error.code in DISABLING_ERRORS:
                self._unavailable.add(attempt.model)
                self._snapshot = None

    def snapshot(self, now: float | None = None) -> LiveState:
        now = time.time() if now is None else now
        board_changed = self.board is not None and self.board.version != self._board_version
        budgets_changed = self.budgets is not None and self.budgets.version != self._budgets_version
        # decaying statistics change with time too: rebuilt at most every ``stats_refresh_s``
        stats_stale = self.performance.version > 0 and now - self._stats_built_at >= self.stats_refresh_s
        if self._snapshot is None or board_changed or budgets_changed or stats_stale or now >= self._valid_until:
            self._snapshot = self._build(now)
        return self._snapshot

    def _build(self, now: float) -> LiveState:
        self._performance_version, self._stats_built_at = self.performance.version, now
        stats, task_stats = self.performance.snapshot(now)
        budget_left: dict[str, float] = {}
        if self.budgets is not None:
            self._budgets_version = self.budgets.version
            budget_left = self.budgets.remaining(self.budgets.config.every_scope(), now)
        unavailable, ramp, cooling_until = set(self._unavailable), {}, {}
        self._valid_until = float("inf")
        if self.board is not None:
            self._board_version = self.board.version
            for model, state in list(self.board.models.items()):
                phase = state.phase(now)
                if phase in ("down", "cooling"):
                    unavailable.add(model)
                if phase == "cooling" and state.reason in PROVIDER_ASKED:
                    cooling_until[model] = state.until
                elif phase == "ramping":
                    ramp[model] = state.admitted_share(now)
                if phase == "cooling":
                    self._valid_until = min(self._valid_until, state.until)
                elif phase == "ramping":
                    # the admitted share grows continuously: refresh at least every 1% of the ramp
                    self._valid_until = min(self._valid_until, now + max(0.01, state.ramp_s / 100))
        windows = dict(self.board.windows) if self.board is not None else {}
        return LiveState(
            unavailable=frozenset(unavailable),
            budget_left=budget_left,
            stats=stats,
            task_stats=task_stats,
            ramp=ramp,
            cooling_until=cooling_until,
            context_windows=windows,
        )
