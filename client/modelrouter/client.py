"""Python client of the fleet: the seed's UnifiedModelClient, speaking the public wire contract.

    router = IntelligentModelRouter()
    client = UnifiedModelClient(router)
    result = await client.generate("Analyze microservices", TaskType.REASONING, complexity=7)
    if result["success"]: print(result["content"])

``generate`` waits for the final Result (``<p>.request``); ``stream`` yields the answer's
tokens as they come (``<p>.stream.<job_id>``), then the Result; ``submit`` only makes the
job durable (``<p>.submit``) and returns its id; ``result`` reads a Result later by job id;
``batch`` runs many jobs with flow control (``modelrouter.batch``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from fleet_shared.config import Settings
from fleet_shared.publish import MSG_ID_HEADER, js_publish, stored_result
from fleet_shared.schema import Job, Result, TaskType, encode, result_decoder, stream_chunk_decoder
from fleet_shared.subjects import Subjects
from modelrouter.connection import FleetUnavailable, client_settings, connect

if TYPE_CHECKING:
    from modelrouter.batch import BatchOptions


class UnifiedModelClient:
    """Sends jobs to the fleet and returns Results as plain dicts (``result["success"]``).

    Parameters:
        router: an ``IntelligentModelRouter``; optional, used by ``preview`` (and batch
            dry runs) to show locally which model the fleet would choose.
        settings: connection settings (default: ``Settings.from_env()``: NATS_URL,
            FLEET_SUBJECT_PREFIX, the NATS credentials).
        nats_url, prefix: override NATS_URL / FLEET_SUBJECT_PREFIX.
        timeout_s: how long ``generate`` and ``result`` wait for a Result.
    """

    def __init__(
        self,
        router: Any = None,
        *,
        settings: Settings | None = None,
        nats_url: str | None = None,
        prefix: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.router = router
        self.settings = client_settings(settings, nats_url=nats_url, prefix=prefix)
        self.subjects = Subjects(self.settings.subject_prefix)
        self.timeout_s = timeout_s
        self._nc: NATS | None = None
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> UnifiedModelClient:
        await self.connection()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.drain()

    async def connection(self) -> NATS:
        """The client's NATS connection, opened on first use.

        Raises:
            FleetUnavailable: NATS did not answer.
        """
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.settings, name="modelrouter")
        return self._nc

    async def jetstream(self) -> JetStreamContext:
        return (await self.connection()).jetstream()

    @staticmethod
    def build_job(
        prompt: str | None = None,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        """A validated Job (raises msgspec.ValidationError with the field's path)."""
        raw = {"prompt": prompt, "task_type": task_type, "complexity": complexity, "context": context, **fields}
        if isinstance(task_type, TaskType):
            raw["task_type"] = task_type.value
        return msgspec.convert({k: v for k, v in raw.items() if v is not None}, Job)

    async def generate(
        self,
        prompt: str,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a job and wait for its final Result (after any escalation).

        Raises:
            msgspec.ValidationError: the job is invalid (the message names the field).
            FleetUnavailable: NATS or the router did not answer within ``timeout_s``.
        """
        job = self.build_job(prompt, task_type, complexity, context, **fields)
        return msgspec.to_builtins(await self.run_job(job))

    async def run_job(self, job: Job) -> Result:
        """Send a validated Job on ``<p>.request`` and wait for its Result."""
        nc = await self.connection()
        try:
            msg = await nc.request(
                self.subjects.request,
                encode(job),
                timeout=self.timeout_s,
                headers={MSG_ID_HEADER: job.id or uuid.uuid4().hex},
            )
        except nats.errors.NoRespondersError as exc:
            raise FleetUnavailable(f"no router answers {self.subjects.request} (is the fleet running?)") from exc
        except nats.errors.TimeoutError as exc:
            raise FleetUnavailable(f"no Result within {self.timeout_s:g}s") from exc
        return result_decoder.decode(msg.data)

    async def stream(
        self,
        prompt: str | None = None,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run a job with ``stream: true``; yield ``{"type": "chunk", ...StreamChunk}`` as
        tokens come, then ``{"type": "result", "result": {...}}``. A chunk with ``done`` and
        an ``error`` ends a failed attempt; a new ``attempt_no`` starts the next model's answer."""
        job_id = fields.setdefault("id", uuid.uuid4().hex)
        job = self.build_job(prompt, task_type, complexity, context, stream=True, **fields)
        nc = await self.connection()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_chunk(msg: Any) -> None:
            queue.put_nowait(msg)

        sub = await nc.subscribe(self.subjects.stream(job_id), cb=on_chunk)
        pending = asyncio.ensure_future(self.run_job(job))
        pending.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (msg := await queue.get()) is not None:
                yield {"type": "chunk", **msgspec.to_builtins(stream_chunk_decoder.decode(msg.data))}
            result = await pending
            await nc.flush()  # chunks already on their way are delivered before the Result is shown
            while not queue.empty():
                msg = queue.get_nowait()
                yield {"type": "chunk", **msgspec.to_builtins(stream_chunk_decoder.decode(msg.data))}
            yield {"type": "result", "result": msgspec.to_builtins(result)}
        finally:
            pending.cancel()
            await sub.unsubscribe()

    async def submit(
        self,
        prompt: str | None = None,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        """Make a job durable and return its id at once; read the Result later with ``result``."""
        job_id: str = fields.setdefault("id", uuid.uuid4().hex)
        await self.submit_job(self.build_job(prompt, task_type, complexity, context, **fields))
        return job_id

    async def submit_job(self, job: Job) -> bool:
        """Store a Job (with an id) on ``<p>.submit``, de-duplicated on its id.

        Returns:
            False when the JOBS stream already held this id (within its de-duplication window).
        """
        if job.id is None:
            raise ValueError("submit_job needs a job with an id")
        js = await self.jetstream()
        try:
            ack = await js_publish(js, self.subjects.submit, encode(job), msg_id=job.id)
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
            raise FleetUnavailable(f"no stream stores {self.subjects.submit} (has the fleet ever run?)") from exc
        return not ack.duplicate

    async def stored_result(self, job_id: str) -> Result | None:
        """The Result of ``job_id`` if the fleet has one (RESULTS stream), else None."""
        data = await stored_result(await self.jetstream(), self.subjects, job_id)
        return None if data is None else result_decoder.decode(data)

    async def result(self, job_id: str, *, wait: bool = True, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The Result of ``job_id``: kept in the RESULTS stream, so it can be read at any time.
        With ``wait``, waits up to ``timeout_s`` (default ``timeout_s`` of the client).

        Raises:
            FleetUnavailable: ``wait`` and no Result came in time.
        """
        js = await self.jetstream()
        subject = self.subjects.result(job_id)
        sub = await js.subscribe(subject, ordered_consumer=True) if wait else None
        try:
            found = await self.stored_result(job_id)
            if found is not None or sub is None:
                return None if found is None else msgspec.to_builtins(found)
            limit = self.timeout_s if timeout_s is None else timeout_s
            try:
                msg = await sub.next_msg(timeout=limit)
            except nats.errors.TimeoutError as exc:
                raise FleetUnavailable(f"no Result for {job_id} within {limit:g}s") from exc
            return msgspec.to_builtins(result_decoder.decode(msg.data))
        finally:
            if sub is not None:
                await sub.unsubscribe()

    def preview(
        self,
        prompt: str,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Which model the routing policy would choose now (needs ``router``)."""
        if self.router is None:
            raise ValueError("preview needs UnifiedModelClient(router=IntelligentModelRouter())")
        decision = self.router.route(self.build_job(prompt, task_type, complexity, context))
        return {
            "model": decision.model.id if decision.model else None,
            "reasoning": decision.reasoning,
            "estimated_cost_usd": decision.estimated_cost_usd,
        }

    def batch(
        self, jobs: Iterable[Any], options: BatchOptions | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Run many jobs: ``async for result in client.batch(jobs)``. Each item is a Job, a
        dict in Job shape, an OpenAI chat-completions body or ``{"prompt": ...}``; results
        come in input order (``ordered=False``: as they finish). See ``modelrouter.batch``."""
        from modelrouter.batch import BatchOptions, run_batch

        opts = options or BatchOptions(**kwargs)
        results: AsyncIterator[dict[str, Any]] = run_batch(self, jobs, opts)
        return results


def result_from_dict(data: dict[str, Any]) -> Result:
    return msgspec.convert(data, Result)
