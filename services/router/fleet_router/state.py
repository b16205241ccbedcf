"""The router's picture of live state: recent outcomes (from the attempt events every worker
publishes), fleet-wide availability (the health board in NATS KV, written by the prober and
the workers) and today's spend."""

from __future__ import annotations

import collections
import time

from fleet_router.policy import LiveState, ModelStats
from fleet_shared.availability import PROVIDER_ASKED, HealthBoard
from fleet_shared.schema import Attempt

#: Outcomes remembered per model for the recent success rate.
WINDOW = 50
#: Error classes that make a provider unusable until its configuration changes (used only
#: without a health board; with one, the board is the fleet-wide source of truth).
DISABLING_ERRORS = frozenset({"auth"})


class LiveStateTracker:
    """Recent outcomes per model, unavailable and ramping models, and today's spend (UTC)."""

    def __init__(self, *, daily_budget_usd: float | None, board: HealthBoard | None = None) -> None:
        self.daily_budget_usd = daily_budget_usd
        self.board = board
        self._outcomes: dict[str, collections.deque[bool]] = collections.defaultdict(
            lambda: collections.deque(maxlen=WINDOW)
        )
        self._unavailable: set[str] = set()
        self._day = self._today()
        self._spent_usd = 0.0
        self._snapshot: LiveState | None = None  # rebuilt only after a new observation
        self._board_version = -1
        self._valid_until = float("inf")  # the next moment a cooldown or ramp changes phase

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86400)

    def observe(self, attempt: Attempt) -> None:
        self._snapshot = None
        self._outcomes[attempt.model].append(attempt.success)
        if self.board is None:
            if attempt.success:
                self._unavailable.discard(attempt.model)
            elif attempt.error and attempt.error.code in DISABLING_ERRORS:
                self._unavailable.add(attempt.model)
        today = self._today()
        if today != self._day:
            self._day, self._spent_usd = today, 0.0
        self._spent_usd += attempt.cost_usd

    def snapshot(self, now: float | None = None) -> LiveState:
        now = time.time() if now is None else now
        board_changed = self.board is not None and self.board.version != self._board_version
        if self._snapshot is None or board_changed or now >= self._valid_until:
            self._snapshot = self._build(now)
        return self._snapshot

    def _build(self, now: float) -> LiveState:
        stats = {m: ModelStats(calls=len(o), failures=o.count(False)) for m, o in self._outcomes.items()}
        budget = None
        if self.daily_budget_usd is not None:
            budget = max(0.0, self.daily_budget_usd - self._spent_usd)
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
            budget_remaining_usd=budget,
            stats=stats,
            ramp=ramp,
            cooling_until=cooling_until,
            context_windows=windows,
        )
