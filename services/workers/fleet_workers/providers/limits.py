"""The providers' rate-limit headers, read into "seconds until the limit resets".

    OpenAI     x-ratelimit-{limit,remaining,reset}-{requests,tokens}; reset is a Go-style
               duration: "1s", "6m0s", "20ms", "1h2m3.5s"
    Anthropic  anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
               remaining,reset}; reset is an RFC 3339 time
    (Gemini sends none: its 429 carries RetryInfo.retryDelay, read in ``errors``.)

``retry_after_s`` in ``errors`` prefers ``retry-after-ms`` and ``retry-after``; these are
its fallback on a 429, and on a success they tell the worker that a limit is spent
(remaining 0) before the provider has to answer 429.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KINDS = (
    ("x-ratelimit-remaining-", "x-ratelimit-reset-", ("requests", "tokens")),
    ("anthropic-ratelimit-", "anthropic-ratelimit-", ("requests", "tokens", "input-tokens", "output-tokens")),
)


def parse_reset(value: str, now: float | None = None) -> float | None:
    """Seconds from ``now`` until a reset given as a duration or an RFC 3339 time."""
    value = value.strip()
    if not value:
        return None
    if "T" in value:  # an RFC 3339 time
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    parts = _DURATION_RE.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _resets(headers: Mapping[str, str], *, spent_only: bool) -> list[float]:
    raw = getattr(headers, "raw", None)  # httpx.Headers: look at the bytes, no decoding
    if raw is not None:
        spent = any(b"ratelimit" in name.lower() for name, _ in raw)
    else:  # aiohttp's headers (the worker's lean path) or a plain mapping: str names
        spent = any("ratelimit" in name.lower() for name in headers)
    if not spent:
        return []  # the common case: one pass over the names instead of twelve look-ups
    found = []
    for remaining_prefix, reset_prefix, kinds in _KINDS:
        for kind in kinds:
            if remaining_prefix.startswith("anthropic"):
                remaining = headers.get(f"{remaining_prefix}{kind}-remaining")
                reset = headers.get(f"{reset_prefix}{kind}-reset")
            else:
                remaining = headers.get(f"{remaining_prefix}{kind}")
                reset = headers.get(f"{reset_prefix}{kind}")
            if reset is None or (spent_only and remaining not in ("0", "0.0")):
                continue
            seconds = parse_reset(reset)
            if seconds is not None:
                found.append(seconds)
    return found


def reset_after_s(headers: Mapping[str, str]) -> float | None:
    """On a 429 without retry-after: the longest reset any rate-limit header names."""
    return max(_resets(headers, spent_only=False), default=None)


def spent_reset_s(headers: Mapping[str, str]) -> float | None:
    """On a success: when a limit whose ``remaining`` is 0 resets (None: nothing is spent)."""
    return max(_resets(headers, spent_only=True), default=None)
