"""Batch pipelines: many jobs through the fleet with flow control, in order, resumably.

    async for result in client.batch(jobs, max_in_flight=64):
        ...

How a job runs exactly once, even across crashes and re-runs:

* its id is stable (given, or derived from the line's content and position);
* before anything else its Result is looked up by id in the RESULTS stream: a job already
  done is not submitted again (its stored Result is the output);
* otherwise, if the journal says an earlier run submitted it, it is only waited for: the
  JOBS stream holds it durably and the fleet will finish it;
* otherwise it is submitted on ``<p>.submit`` with ``Nats-Msg-Id`` = its id (JetStream
  drops a second copy within the de-duplication window), and the id is appended to the
  journal once JetStream has acknowledged it.

Results arrive on one ordered JetStream consumer of ``<p>.result.*`` (new messages only)
created before any lookup, so no Result can slip between the lookup and the wait.
Memory is bounded by the window (``max_in_flight`` running, ``window`` waiting to be
written in order) plus the journal's id set; the input is read as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.js import api

from fleet_router.policy import IntelligentModelRouter
from fleet_shared.schema import ErrorInfo, Result, result_decoder
from modelrouter.batch_input import BatchItem, from_objects
from modelrouter.client import UnifiedModelClient


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How a batch runs.

    Parameters:
        max_in_flight: jobs submitted and not yet finished, at most.
        rate: submissions per second, at most (None: as fast as the window allows).
        ordered: yield results in input order (else as they finish).
        window: with ``ordered``, results held back for order at most (default 8 x max_in_flight).
        max_cost_usd: stop submitting once the spend so far plus the router's estimate of
            the jobs in flight would pass this; the rest get a failed ``max_cost_reached``
            Result (not stored: a later run with a higher cap runs them).
        journal: file of submitted ids; re-runs with the same journal never submit twice.
    """

    max_in_flight: int = 64
    rate: float | None = None
    ordered: bool = True
    window: int | None = None
    max_cost_usd: float | None = None
    journal: Path | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.max_cost_usd is not None and self.max_cost_usd < 0:
            raise ValueError("max_cost_usd must not be negative")


@dataclass
class BatchStats:
    """Counters a progress display reads (updated as the batch runs)."""

    total: int | None = None
    done: int = 0
    failed: int = 0
    resumed: int = 0  # done by an earlier run: their stored Result was read back
    in_flight: int = 0
    skipped_for_cost: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def rate(self) -> float:
        """Jobs per second run by this run (resumed ones are not work of this run)."""
        elapsed = time.monotonic() - self.started
        return (self.finished - self.resumed) / elapsed if elapsed > 0 else 0.0


class Journal:
    """Append-only file of submitted job ids (one per line), flushed after each."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.ids: set[str] = set()
        self._fh: Any = None
        if path is not None:
            if path.exists():
                with open(path) as fh:
                    self.ids = {line.strip() for line in fh if line.strip()}
            self._fh = open(path, "a")  # noqa: SIM115 (closed by close())

    def add(self, job_id: str) -> None:
        self.ids.add(job_id)
        if self._fh is not None:
            self._fh.write(job_id + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _failed(job_id: str, code: str, message: str) -> Result:
    return Result(job_id=job_id, success=False, error=ErrorInfo(code, message))


class BatchRun:
    """One run of a batch. ``results()`` yields each item's Result (as a dict)."""

    def __init__(self, client: UnifiedModelClient, items: Iterable[BatchItem], options: BatchOptions) -> None:
        self.client = client
        self.items = items
        self.options = options
        self.stats = BatchStats()
        self.journal = Journal(options.journal)
        self._router = IntelligentModelRouter(client.settings.registry()) if options.max_cost_usd is not None else None
        self._waiting: dict[str, list[asyncio.Future[Result]]] = {}
        self._in_flight = asyncio.Semaphore(options.max_in_flight)
        self._estimates: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_submit_at = 0.0

    async def results(self) -> AsyncIterator[tuple[BatchItem, dict[str, Any]]]:
        """(item, Result dict) for every input item, in input order unless ``ordered=False``."""
        js = await self.client.jetstream()
        sub = await js.subscribe(
            self.client.subjects.result_all,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            cb=self._on_result,
        )
        window = self.options.window or 8 * self.options.max_in_flight
        queue: asyncio.Queue[tuple[BatchItem, asyncio.Future[Result]] | None] = asyncio.Queue(
            maxsize=window if self.options.ordered else 0
        )
        producer = asyncio.create_task(self._produce(queue))
        try:
            if self.options.ordered:
                while (entry := await queue.get()) is not None:
                    item, future = entry
                    yield item, msgspec.to_builtins(await future)
            else:
                async for pair in self._as_finished(queue):
                    yield pair
            await producer  # surfaces a failure of the producer
        finally:
            producer.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(producer, *self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self.journal.close()

    async def _as_finished(
        self, queue: asyncio.Queue[tuple[BatchItem, asyncio.Future[Result]] | None]
    ) -> AsyncIterator[tuple[BatchItem, dict[str, Any]]]:
        pending: dict[asyncio.Future[Result], BatchItem] = {}
        getter: asyncio.Task[Any] | None = asyncio.ensure_future(queue.get())
        while getter is not None or pending:
            waits: set[asyncio.Future[Any]] = set(pending)
            if getter is not None:
                waits.add(getter)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if getter is not None and getter in done:
                entry = getter.result()
                if entry is None:
                    getter = None
                else:
                    pending[entry[1]] = entry[0]
                    getter = asyncio.ensure_future(queue.get())
            for future in done:
                if future in pending:
                    yield pending.pop(future), msgspec.to_builtins(future.result())

    async def _produce(self, queue: asyncio.Queue[tuple[BatchItem, asyncio.Future[Result]] | None]) -> None:
        loop = asyncio.get_running_loop()
        for item in self.items:
            future: asyncio.Future[Result] = loop.create_future()
            future.add_done_callback(self._count)
            await queue.put((item, future))
            if item.rejected is not None:
                future.set_result(item.rejected)
                continue
            await self._in_flight.acquire()
            await self._pace()
            task = asyncio.create_task(self._run_one(item, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*list(self._tasks))
        await queue.put(None)

    async def _pace(self) -> None:
        if self.options.rate is None:
            return
        now = time.monotonic()
        self._next_submit_at = max(self._next_submit_at, now)
        delay = self._next_submit_at - now
        self._next_submit_at += 1.0 / self.options.rate
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run_one(self, item: BatchItem, future: asyncio.Future[Result]) -> None:
        job_id = item.job_id
        self._waiting.setdefault(job_id, []).append(future)
        self.stats.in_flight += 1
        try:
            stored = await self.client.stored_result(job_id)
            if stored is not None:
                self.stats.resumed += 1
                self._resolve(stored)
            elif job_id not in self.journal.ids:
                over = self._over_budget(item)
                if over is not None:
                    self.stats.skipped_for_cost += 1
                    self._resolve(over)
                else:
                    assert item.job is not None  # noqa: S101 (rejected items never get here)
                    await self.client.submit_job(item.job)
                    self.journal.add(job_id)
            await future
        finally:
            self.stats.in_flight -= 1
            self._estimates.pop(job_id, None)
            self._in_flight.release()

    def _over_budget(self, item: BatchItem) -> Result | None:
        """A ``max_cost_reached`` Result when this job could take the batch over its cap."""
        if self._router is None or self.options.max_cost_usd is None or item.job is None:
            return None
        estimate = self._router.route(item.job).estimated_cost_usd
        committed = self.stats.cost_usd + sum(self._estimates.values())
        if committed + estimate > self.options.max_cost_usd:
            return _failed(
                item.job_id,
                "max_cost_reached",
                f"not run: ${committed:.6f} spent or committed + est. ${estimate:.6f} > --max-cost ${self.options.max_cost_usd:g}",
            )
        self._estimates[item.job_id] = estimate
        return None

    async def _on_result(self, msg: Any) -> None:
        job_id = msg.subject.rpartition(".")[2]
        if job_id not in self._waiting:
            return
        with contextlib.suppress(msgspec.MsgspecError):
            self._resolve(result_decoder.decode(msg.data))

    def _resolve(self, result: Result) -> None:
        for future in self._waiting.pop(result.job_id, []):
            if not future.done():
                future.set_result(result)

    def _count(self, future: asyncio.Future[Result]) -> None:
        if future.cancelled():
            return
        result = future.result()
        if result.success:
            self.stats.done += 1
        else:
            self.stats.failed += 1
        self.stats.cost_usd += result.cost_usd


async def run_batch(
    client: UnifiedModelClient, jobs: Iterable[Any], options: BatchOptions
) -> AsyncIterator[dict[str, Any]]:
    """``client.batch(jobs)``: the Result dict of each job (see ``BatchOptions``)."""
    items: Iterator[BatchItem] = from_objects(jobs, known_models=client.settings.registry().models)
    async for _, result in BatchRun(client, items, options).results():
        yield result
