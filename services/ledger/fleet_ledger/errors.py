"""Which database failures are worth retrying (the delay is ``fleet_shared.loop.backoff_s``).

Exception
├── transient: write the batch again after a backoff (the consumer holds it meanwhile)
│   ├── OSError, TimeoutError            PostgreSQL unreachable, connection reset, slow
│   ├── asyncpg.InterfaceError           connection closed under us (but not the client-side
│   │                                    ones below: a value asyncpg cannot encode is permanent)
│   ├── PostgresConnectionError (08xxx)  connection lost or refused
│   ├── OperatorInterventionError (57x)  server shutting down or starting up
│   ├── InsufficientResourcesError (53x) too many connections, disk full
│   └── SerializationError (40001), DeadlockDetectedError (40P01)
└── permanent: anything else (e.g. a value PostgreSQL refuses); retrying cannot help
"""

from __future__ import annotations

import asyncpg

# asyncpg's client-side DataError (an InterfaceError: a value it cannot encode) has no public
# name: asyncpg.DataError / asyncpg.exceptions.DataError is the server's SQLSTATE 22000 class,
# which shadows it. The other client-side errors below are public.
from asyncpg.exceptions import _base as asyncpg_base

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

#: InterfaceError subclasses that are about the data or the client, not the connection.
PERMANENT_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg_base.DataError,  # e.g. an int outside int32 for an INTEGER column
    asyncpg.ClientConfigurationError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS) and not isinstance(exc, PERMANENT_CLIENT_ERRORS)
