"""A gateway in front of a test fleet (``provider_fleet``: emulators, workers, router,
ledger on a private nats-server and a real PostgreSQL), listening on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fleet_gateway.access import key_digest
from fleet_gateway.app import Gateway
from fleet_gateway.settings import GatewaySettings
from fleet_shared.config import Settings
from tests.fleet_harness import Fleet, LedgerWatch
from tests.provider_fleet import provider_fleet

#: A key the test gateways accept, under the name ``test-team``.
GATEWAY_KEY = "gw-test-key-0c1d2e3f4a5b"
GATEWAY_KEY_NAME = "test-team"


@dataclass
class GatewayFleet:
    gateway: Gateway
    fleet: Fleet
    watch: LedgerWatch
    emulators: dict

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def openai_base(self) -> str:
        return self.gateway.url + "/v1"


@contextlib.asynccontextmanager
async def gateway_fleet(
    settings: Settings, *, keys: bool = True, ledger: bool = True, **gateway_overrides: Any
) -> AsyncIterator[GatewayFleet]:
    accepted = {key_digest(GATEWAY_KEY): GATEWAY_KEY_NAME} if keys else {}
    gateway_settings = GatewaySettings.from_env({}, fleet=settings, port=0, keys=accepted, **gateway_overrides)
    async with provider_fleet(settings, ledger=ledger) as (fleet, watch, emulators):
        async with Gateway(gateway_settings) as gateway:
            yield GatewayFleet(gateway, fleet, watch, emulators)
