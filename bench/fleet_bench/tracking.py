"""What the load generator learns of each job it sent: when its Result arrived (and what the
provider calls inside it took) and when the ledger committed it. A job is *done* when both
have happened; ``Tracker`` counts the done jobs per step and wakes whoever waits for them.
Results and commit notices are decoded into small structs of only the fields that are timed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import msgspec


class _Attempt(msgspec.Struct):
    latency_ms: float = 0.0
    provider_ms: float | None = None


class _Result(msgspec.Struct):
    job_id: str
    success: bool
    attempts: list[_Attempt] = []


class _Committed(msgspec.Struct):
    job_ids: list[str] = []


_result_decoder = msgspec.json.Decoder(_Result)
_commit_decoder = msgspec.json.Decoder(_Committed)


@dataclass
class Job:
    sent: float
    step: int
    result_at: float = 0.0
    success: bool = False
    provider_ms: float = 0.0  # the worker's timing of the provider calls
    provider_own_ms: float = 0.0  # the provider's (emulator's) own time, as it reported it
    committed_at: float = 0.0

    @property
    def done_at(self) -> float:
        return max(self.result_at, self.committed_at) if self.result_at and self.committed_at else 0.0


@dataclass
class Tracker:
    jobs: dict[str, Job] = field(default_factory=dict)
    unknown_results: int = 0
    unknown_commits: int = 0
    done_by_step: dict[int, int] = field(default_factory=dict)
    done_event: asyncio.Event = field(default_factory=asyncio.Event)

    def _maybe_done(self, job: Job) -> None:
        if job.result_at and job.committed_at:
            self.done_by_step[job.step] = self.done_by_step.get(job.step, 0) + 1
            self.done_event.set()

    async def on_result(self, msg) -> None:
        now = time.perf_counter()
        try:
            r = _result_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            self.unknown_results += 1
            return
        job = self.jobs.get(r.job_id)
        if job is None or job.result_at:
            self.unknown_results += job is None
            return
        job.result_at = now
        job.success = r.success
        job.provider_ms = sum(a.latency_ms for a in r.attempts)
        job.provider_own_ms = sum(a.provider_ms or 0.0 for a in r.attempts)
        self._maybe_done(job)

    async def on_commit(self, msg) -> None:
        now = time.perf_counter()
        try:
            ids = _commit_decoder.decode(msg.data).job_ids
        except msgspec.MsgspecError:
            return
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None:
                self.unknown_commits += 1
            elif not job.committed_at:
                job.committed_at = now
                self._maybe_done(job)
