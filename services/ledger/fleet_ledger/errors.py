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
from asyncpg.exceptions import _base as asyncpg_base  # the client-side errors live only here

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
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
    asyncpg_base.UnsupportedServerFeatureError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS) and not isinstance(exc, PERMANENT_CLIENT_ERRORS)
