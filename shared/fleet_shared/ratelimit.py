"""Fleet-wide requests-per-minute and tokens-per-minute limits per model, in NATS KV.

A counter per model per minute window (key ``<model>.<window>``, window = unix minute)
is raised with compare-and-set, so every worker process of the fleet draws from the same
budget. ``acquire`` either takes one request and its tokens from the current window or
says how long to wait for the next one; the worker then leaves the job in the queue
(``nak`` with that delay) instead of calling the provider. The bucket's TTL ages out old
windows (no per-key TTL: nats-server 2.9 has none).

Tokens are first counted the way the providers count them against a TPM limit when a
request starts: the input estimate plus ``max_tokens``. After a successful call ``settle``
replaces that reservation with the tokens the provider reported, so a window is not
exhausted by answers far shorter than their ``max_tokens``. A single job larger than the
whole TPM budget still runs, alone, in a fresh window — otherwise it could never run at all.
"""

from __future__ import annotations

import time

import msgspec
from msgspec import Struct
from nats.js.kv import KeyValue

from fleet_shared.kv import compare_and_set

WINDOW_S = 60.0
#: keys live this long after their last write (two windows: the current and the last)
BUCKET_TTL_S = 2 * WINDOW_S


class Usage(Struct, frozen=True):
    requests: int = 0
    tokens: int = 0


_decoder = msgspec.json.Decoder(Usage)


def fits(used: Usage | None, tokens: int, *, rpm: int | None, tpm: int | None) -> bool:
    """Whether one more request of ``tokens`` fits in a window that has ``used`` so far."""
    used = used or Usage()
    if rpm is not None and used.requests + 1 > rpm:
        return False
    return not (tpm is not None and used.requests > 0 and used.tokens + tokens > tpm)


class RateLimiter:
    """Counters in one KV bucket (``Subjects.rates_bucket``)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def acquire(
        self, model: str, tokens: int, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> float:
        """Take one request of ``tokens`` for ``model``; returns 0.0, or seconds to wait.

        Raises:
            RuntimeError: too many concurrent writers (treat as a short wait).
        """
        if rpm is None and tpm is None:
            return 0.0
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        taken = False

        def change(used: Usage | None) -> Usage | None:
            nonlocal taken
            taken = fits(used, tokens, rpm=rpm, tpm=tpm)
            if not taken:
                return None
            used = used or Usage()
            return Usage(used.requests + 1, used.tokens + tokens)

        await compare_and_set(self.kv, f"{model}.{window}", _decoder, change)
        if taken:
            return 0.0
        return (window + 1) * WINDOW_S - now

    async def settle(self, model: str, reserved: int, used: int, *, acquired_at: float) -> None:
        """Replace a reservation of ``reserved`` tokens taken at ``acquired_at`` by the
        ``used`` tokens the provider reported (never below zero in the window).

        Raises:
            RuntimeError: too many concurrent writers (the reservation then stands).
        """
        delta = used - reserved
        if delta == 0:
            return

        def change(current: Usage | None) -> Usage | None:
            if current is None:  # the window aged out: nothing to correct
                return None
            return Usage(current.requests, max(0, current.tokens + delta))

        await compare_and_set(self.kv, f"{model}.{int(acquired_at // WINDOW_S)}", _decoder, change)

    async def usage(self, model: str, now: float | None = None) -> Usage:
        from fleet_shared.kv import read

        now = time.time() if now is None else now
        stored = await read(self.kv, f"{model}.{int(now // WINDOW_S)}", _decoder)
        value, _ = stored  # unpacked apart from the call: python/mypy#20219 infers T wrongly otherwise
        return value or Usage()
