"""``FleetLink.answer`` turns "no router" into the 503 a client retries (its request-reply
is ``fleet_shared.requests``, tested in tests/test_requests.py)."""

from __future__ import annotations

import pytest

from fleet_gateway.errors import ApiError
from fleet_gateway.fleet import FleetLink
from fleet_shared.schema import Job

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_no_router_is_a_503_the_client_may_retry(make_settings):
    async with FleetLink(make_settings()) as fleet:
        with pytest.raises(ApiError) as raised:
            await fleet.answer(Job(prompt="hi", id="a" * 32), timeout_s=10)
    assert raised.value.status == 503 and raised.value.code == "no_router"
