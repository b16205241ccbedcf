"""Health and discovery: every fleet process registers a NATS micro service, so
``$SRV.PING`` / ``$SRV.INFO`` / ``$SRV.STATS`` find it (used by ``make status``)."""

from __future__ import annotations

import os

from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.service import Service

VERSION = "0.1.0"


async def register(nc: NATS, name: str, *, description: str = "") -> Service:
    """Register this process as micro service ``name`` (pid in the metadata)."""
    return await add_service(
        nc, name=name, version=VERSION, description=description or name, metadata={"pid": str(os.getpid())}
    )
