"""Publishing a streamed answer on <p>.stream.<job_id> as StreamChunks (core NATS).

Every attempt numbers its chunks from 0; the last one has ``done: true`` — with no error
when the answer is complete (the end marker), with the error and ``escalated: true`` when
the attempt failed and the job goes on to another model (a client resets what it shows
when the next attempt's chunks start).
"""

from __future__ import annotations

import time
from typing import Any

from nats.aio.client import Client as NATS

from fleet_shared.schema import ErrorInfo, StreamChunk, encode


class StreamPublisher:
    """Chunks of one attempt; also measures the time to the first token."""

    def __init__(self, nc: NATS | None, subject: str, *, job_id: str, attempt_no: int, model: str) -> None:
        self._nc = nc  # None: measure only (the registry asked for a stream, the client did not)
        self._subject = subject
        self._job_id = job_id
        self._attempt_no = attempt_no
        self._model = model
        self._seq = 0
        self._started = time.perf_counter()
        self.ttft_ms: float | None = None

    async def delta(self, text: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self._started) * 1000
        if self._nc is not None:
            await self._publish(self._nc, delta=text)

    async def finish(self, error: ErrorInfo | None) -> None:
        """The end marker of this attempt."""
        if self._nc is not None:
            await self._publish(self._nc, done=True, error=error, escalated=error is not None)

    async def _publish(self, nc: NATS, **fields: Any) -> None:
        chunk = StreamChunk(
            job_id=self._job_id, attempt_no=self._attempt_no, seq=self._seq, model=self._model, **fields
        )
        self._seq += 1
        await nc.publish(self._subject, encode(chunk))
