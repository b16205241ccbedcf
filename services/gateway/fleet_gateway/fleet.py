"""The gateway's one link to the fleet: a NATS connection speaking the public contract.

``answer`` sends a Job on ``<p>.request`` and waits for its Result (the router makes the
job durable first, so a gateway that dies mid-request loses nothing: the job finishes and
its Result is kept by id). ``stream`` also subscribes to ``<p>.stream.<job_id>`` before
sending, and yields StreamChunks as they come, then the Result. The health board (a KV
watch) says when a cooling model is back, for ``retry-after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.micro.service import Service

from fleet_gateway.errors import ApiError
from fleet_shared import bus, health, requests
from fleet_shared.availability import HealthBoard
from fleet_shared.config import Settings
from fleet_shared.schema import Job, Result, StreamChunk, encode, result_decoder, stream_chunk_decoder
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.gateway")

SERVICE_NAME = "fleet-gateway"


class FleetLink:
    """Use as ``async with FleetLink(settings) as fleet``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self._nc: NATS | None = None
        self.board: HealthBoard | None = None
        self._service: Service | None = None
        self._replies: requests.Replies | None = None

    async def __aenter__(self) -> FleetLink:
        self._nc = nc = await bus.connect(self.settings, name=SERVICE_NAME)
        try:
            self._replies = requests.for_connection(nc)
            self.board = await HealthBoard.open(nc.jetstream(), self.subjects.health_bucket)
            await self.board.watch()
            self._service = await health.register(nc, SERVICE_NAME, description="OpenAI/Anthropic HTTP gateway")
        except BaseException:
            await nc.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.board is not None:
            await self.board.stop()
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (not reconnecting, not closed)."""
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("FleetLink used outside its `async with`")
        return self._nc

    def retry_after_s(self) -> float | None:
        """Seconds until the first cooling model is back; None when none is cooling."""
        if self.board is None:
            return None
        now = time.time()
        waits = [a.until - now for a in self.board.models.values() if a.phase(now) == "cooling"]
        return max(1.0, min(waits)) if waits else None

    async def answer(self, job: Job, *, timeout_s: float) -> Result:
        """The job's final Result.

        Raises:
            ApiError: 503 when no router answers, 504 after ``timeout_s``.
        """
        if self._replies is None:
            raise RuntimeError("FleetLink used outside its `async with`")
        try:
            # the router takes the job's id from the payload: no Nats-Msg-Id header needed
            data = (await self._replies.request(self.subjects.request, encode(job), timeout=timeout_s)).data
        except NoRespondersError:
            raise ApiError(
                "unavailable", "no router is running to take the request", code="no_router", retry_after_s=1.0
            ) from None
        except TimeoutError:
            raise ApiError(
                "timeout",
                f"no answer within {timeout_s:g}s; the job goes on in the fleet: retry with the same "
                "Idempotency-Key to get its answer",
                code="timeout",
            ) from None
        try:
            return result_decoder.decode(data)
        except msgspec.MsgspecError:
            log.error("job %s: undecodable Result", job.id)
            raise ApiError("internal", "the fleet's answer could not be read", code="bad_result") from None

    async def stream(self, job: Job, *, timeout_s: float) -> AsyncIterator[StreamChunk | Result]:
        """StreamChunks of every attempt as they come, then the Result (always last).

        Raises:
            ApiError: as ``answer``.
        """
        chunks: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_chunk(msg: Msg) -> None:
            chunks.put_nowait(msg.data)

        sub = await self.nc.subscribe(self.subjects.stream(job.id or ""), cb=on_chunk)
        final = asyncio.ensure_future(self.answer(job, timeout_s=timeout_s))
        try:
            while True:
                next_chunk = asyncio.ensure_future(chunks.get())
                await asyncio.wait({next_chunk, final}, return_when=asyncio.FIRST_COMPLETED)
                if not next_chunk.done():
                    next_chunk.cancel()
                    break
                chunk = _decode_chunk(next_chunk.result())
                if chunk is not None:
                    yield chunk
            while not chunks.empty():  # chunks that arrived with the Result
                chunk = _decode_chunk(chunks.get_nowait())
                if chunk is not None:
                    yield chunk
            yield final.result()
        finally:
            final.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _decode_chunk(data: bytes) -> StreamChunk | None:
    try:
        return stream_chunk_decoder.decode(data)
    except msgspec.MsgspecError:
        return None
