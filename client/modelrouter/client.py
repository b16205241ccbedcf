"""Python client of the fleet: the seed's UnifiedModelClient, speaking the public wire contract.

    async with UnifiedModelClient() as client:
        result = await client.generate("Analyze microservices", TaskType.REASONING, complexity=7)
        if result["success"]: print(result["content"])

``generate`` waits for the final Result (``<p>.request``); ``submit`` only makes the job
durable (``<p>.submit``) and returns its id; ``result`` reads a Result later by job id.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from fleet_shared.publish import MSG_ID_HEADER
from fleet_shared.schema import Job, Result, TaskType, encode, result_decoder
from fleet_shared.subjects import Subjects


class UnifiedModelClient:
    """Sends jobs to the fleet and returns Results as plain dicts (``result["success"]``).

    Parameters:
        router: an ``IntelligentModelRouter``; optional, used by ``preview`` to show locally
            which model the fleet would choose (the fleet's router decides for real).
        nats_url: defaults to ``NATS_URL`` or nats://127.0.0.1:4222.
        prefix: subject prefix, defaults to ``FLEET_SUBJECT_PREFIX`` or ``llm``.
        timeout_s: how long ``generate`` waits for a Result.
    """

    def __init__(
        self, router: Any = None, *, nats_url: str | None = None, prefix: str | None = None, timeout_s: float = 120.0
    ) -> None:
        self.router = router
        self.nats_url = nats_url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
        self.subjects = Subjects(prefix or os.environ.get("FLEET_SUBJECT_PREFIX", "llm"))
        self.timeout_s = timeout_s
        self._nc: NATS | None = None

    async def __aenter__(self) -> UnifiedModelClient:
        await self._conn()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    async def _conn(self) -> NATS:
        if self._nc is None:
            self._nc = await nats.connect(self.nats_url, name="fleet-client")
        return self._nc

    @staticmethod
    def build_job(
        prompt: str,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict | None = None,
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
        context: dict | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a job and wait for its final Result (after any escalation)."""
        job = self.build_job(prompt, task_type, complexity, context, **fields)
        nc = await self._conn()
        msg = await nc.request(
            self.subjects.request,
            encode(job),
            timeout=self.timeout_s,
            headers={MSG_ID_HEADER: job.id or uuid.uuid4().hex},
        )
        return msgspec.to_builtins(result_decoder.decode(msg.data))

    async def submit(
        self,
        prompt: str,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict | None = None,
        **fields: Any,
    ) -> str:
        """Make a job durable and return its id at once; read the Result later with ``result``."""
        fields.setdefault("id", uuid.uuid4().hex)
        job = self.build_job(prompt, task_type, complexity, context, **fields)
        if job.id is None:  # the caller passed id=None
            raise ValueError("submit needs a job id: leave id out to get a generated one")
        nc = await self._conn()
        await nc.jetstream().publish(self.subjects.submit, encode(job), headers={MSG_ID_HEADER: job.id})
        return job.id

    async def result(self, job_id: str, *, wait: bool = True) -> dict[str, Any] | None:
        """The Result of ``job_id``: kept in the RESULTS stream, so it can be read at any time."""
        nc = await self._conn()
        js = nc.jetstream()
        subject = self.subjects.result(job_id)
        try:
            stored = await js.get_last_msg(self.subjects.results_stream, subject)
            return msgspec.to_builtins(result_decoder.decode(stored.data or b""))
        except NotFoundError:
            if not wait:
                return None
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            msg = await sub.next_msg(timeout=self.timeout_s)
            return msgspec.to_builtins(result_decoder.decode(msg.data))
        finally:
            await sub.unsubscribe()

    def preview(
        self,
        prompt: str,
        task_type: TaskType | str | None = None,
        complexity: int | None = None,
        context: dict | None = None,
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


def result_from_dict(data: dict[str, Any]) -> Result:
    return msgspec.convert(data, Result)
