"""How a client reaches the fleet: settings from the environment, one NATS connection.

Every client object (UnifiedModelClient, RouterAnalytics, the CLI) reads the same variables
as the fleet's processes (NATS_URL, FLEET_SUBJECT_PREFIX, NATS_USER / NATS_PASSWORD /
NATS_TOKEN / NATS_CREDS / NATS_NKEY_SEED / NATS_TLS_*, FLEET_DAILY_BUDGET_USD) through
``fleet_shared.config.Settings.from_env``, and connects with the same credentials
(``fleet_shared.bus.credentials``). Unlike a fleet process, a client gives up when NATS
does not answer, with ``FleetUnavailable`` naming the URL.
"""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS

from fleet_shared import bus
from fleet_shared.config import Settings

log = logging.getLogger("modelrouter")

#: Connection tries (each server) before a client reports NATS unreachable; the same number
#: bounds every later reconnect, so a client does not hang forever on a dead server.
CONNECT_ATTEMPTS = 5
RECONNECT_WAIT_S = 0.5


class FleetError(Exception):
    """Base of the client's errors: each has a one-line message fit for a terminal."""


class FleetUnavailable(FleetError):
    """NATS (or the service asked) did not answer."""


def client_settings(
    settings: Settings | None = None, *, nats_url: str | None = None, prefix: str | None = None
) -> Settings:
    """``settings`` or the environment's, with ``nats_url`` / ``prefix`` overriding them.

    Raises:
        FleetError: the environment holds an invalid setting (the message names it).
    """
    overrides: dict[str, Any] = {}
    if nats_url:
        overrides["nats_url"] = nats_url
    if prefix:
        overrides["subject_prefix"] = prefix
    try:
        if settings is None:
            return Settings.from_env(**overrides)
        if overrides:
            import msgspec

            return msgspec.structs.replace(settings, **overrides)
        return settings
    except Exception as exc:  # msgspec.ValidationError, OSError from a *_FILE secret
        raise FleetError(f"invalid settings: {exc}") from exc


async def connect(settings: Settings, *, name: str = "modelrouter") -> NATS:
    """A NATS connection with the fleet's credentials.

    Raises:
        FleetUnavailable: no server of NATS_URL answered.
    """

    async def on_error(exc: Exception) -> None:
        log.debug("nats error: %s", exc)

    servers = [s.strip() for s in settings.nats_url.split(",")]
    try:
        return await nats.connect(
            servers=servers,
            name=name,
            connect_timeout=2,
            max_reconnect_attempts=CONNECT_ATTEMPTS,
            reconnect_time_wait=RECONNECT_WAIT_S,
            error_cb=on_error,
            **bus.credentials(settings),
        )
    except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
        raise FleetUnavailable(f"NATS is not reachable at {settings.nats_url} ({exc})") from exc
    except nats.errors.Error as exc:  # authorization violation, TLS handshake
        raise FleetUnavailable(f"NATS at {settings.nats_url} refused the connection: {exc}") from exc
