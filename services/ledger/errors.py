"""Which database failures are worth retrying, and how long to wait before the retry.

    Exception
    ├── transient: retry the whole batch later (nak with a delay; the message stays queued)
    │   ├── OSError, TimeoutError            PostgreSQL unreachable, connection reset, slow
    │   ├── asyncpg.InterfaceError           connection closed under us
    │   ├── PostgresConnectionError (08xxx)  connection lost or refused
    │   ├── OperatorInterventionError (57x)  server shutting down or starting up
    │   ├── InsufficientResourcesError (53x) too many connections, disk full
    │   └── SerializationError (40001), DeadlockDetectedError (40P01)
    └── permanent: anything else (e.g. a value PostgreSQL refuses); retrying cannot help
"""

from __future__ import annotations

import random

import asyncpg

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)

#: First retry delay, in seconds; doubled per delivery up to BACKOFF_CAP_S.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def backoff_s(attempt: int, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Jittered, capped exponential delay before retry number ``attempt`` (1, 2, ...)."""
    ceiling = min(cap_s, base_s * 2 ** max(0, min(attempt, 32) - 1))
    # "equal jitter": at least half the ceiling, so retries never bunch up at zero
    return ceiling / 2 + random.uniform(0, ceiling / 2)
