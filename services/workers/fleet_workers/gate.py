"""Admission before a provider call: is the model available, and is there rate budget?

``Gate.check`` answers with a ``Verdict``: go, wait (the worker leaves the job in the
queue: outcome ``Wait``), or fail at once (the provider's key is known to be rejected).
A go that took rate budget carries its ``Reservation``; ``Gate.settle`` corrects it to the
tokens the provider reported once the call succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fleet_shared.availability import HealthBoard
from fleet_shared.ratelimit import RateLimiter
from fleet_shared.registry import ModelSpec
from fleet_shared.schema import Dispatch, ErrorInfo
from fleet_shared.tokens import estimate_job_tokens

log = logging.getLogger("fleet.worker")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens taken from a model's TPM window before a call."""

    model: str
    tokens: int
    at: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """Go (nothing set), wait ``wait_s`` (the loop waits at least
    ``fleet_shared.outcome.MIN_WAIT_S``), or fail at once with ``error``."""

    wait_s: float = 0.0
    error: ErrorInfo | None = None
    reservation: Reservation | None = None
    #: why it waits: ``cooldown`` (a provider's 429 / overloaded) or ``limiter`` (the fleet's rpm/tpm)
    wait_source: str = ""


GO = Verdict()


class Gate:
    def __init__(self, board: HealthBoard | None, limiter: RateLimiter | None, *, key_fingerprint: str) -> None:
        self.board = board
        self.limiter = limiter
        self.key_fingerprint = key_fingerprint

    async def check(self, d: Dispatch, spec: ModelSpec | None) -> Verdict:
        now = time.time()
        if self.board is not None:
            state = self.board.get(d.model)
            phase = state.phase(now)
            if phase == "cooling" and state.reason in ("rate_limited", "overloaded"):
                return Verdict(wait_s=state.until - now, wait_source="cooldown")
            if phase == "down" and state.reason == "auth" and state.key_fingerprint == self.key_fingerprint:
                return Verdict(
                    error=ErrorInfo("auth", f"{d.provider}: the configured API key was rejected; not called")
                )
        if self.limiter is not None and spec is not None and (spec.rpm or spec.tpm):
            tokens = estimate_job_tokens(d.job, d.max_tokens)
            try:
                wait = await self.limiter.acquire(d.model, tokens, rpm=spec.rpm, tpm=spec.tpm, now=now)
            except RuntimeError as exc:  # many workers racing for the same counter
                log.info("rate limiter busy for %s: %s", d.model, exc)
                wait = 1.0
            if wait > 0:
                return Verdict(wait_s=wait, wait_source="limiter")
            if spec.tpm:
                return Verdict(reservation=Reservation(d.model, tokens, now))
        return GO

    async def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        """After a successful call: count the tokens used instead of the reservation."""
        if reservation is None or self.limiter is None:
            return
        try:
            await self.limiter.settle(reservation.model, reservation.tokens, used_tokens, acquired_at=reservation.at)
        except Exception as exc:  # NATS away, lost races: the reservation stands (conservative)
            log.info("rate limiter: could not settle %s: %s", reservation.model, exc)
