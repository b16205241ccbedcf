"""Shadow traffic: a copy of a job in an experiment with ``shadow = "<model>"`` goes to that
model too. The copy is a job of its own (id ``<job id>-shadow``) submitted on <p>.submit:

* forced to the shadow model with no fallback, so a failure is recorded, not escalated;
* no reply inbox and its own Result subject, so its answer is never returned to the caller
  (it is kept in the RESULTS stream under its own id, and its row is in the ledger with
  ``shadow_of`` and ``variant = 'shadow'``);
* its metadata loses ``key_name`` and ``team``: its cost is reserved against the fleet's,
  the shadow model's (``model:<id>``) and its provider's budgets like any paid call, never
  against the caller's key or team budget.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext

from fleet_router.rules import SHADOW_EXPERIMENT, SHADOW_OF
from fleet_shared.publish import js_publish
from fleet_shared.schema import CONTEXT_NO_FALLBACK, METADATA_KEY_NAME, METADATA_TEAM, Job, encode
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router.shadow")

SUFFIX = "-shadow"


def shadow_id(job_id: str) -> str:
    return job_id[: 128 - len(SUFFIX)] + SUFFIX


def shadow_job(job_id: str, job: Job, *, model: str, experiment: str | None) -> Job:
    """The copy of ``job`` that ``model`` answers for the record."""
    meta = {k: v for k, v in (job.metadata or {}).items() if k not in (METADATA_KEY_NAME, METADATA_TEAM)}
    meta[SHADOW_OF] = job_id
    if experiment:
        meta[SHADOW_EXPERIMENT] = experiment
    context = {**(job.context or {}), "force_model": model, CONTEXT_NO_FALLBACK: True}
    return msgspec.structs.replace(job, id=shadow_id(job_id), metadata=meta, context=context, stream=False)


async def send_shadow(
    js: JetStreamContext, subjects: Subjects, job_id: str, job: Job, *, model: str, experiment: str | None
) -> None:
    """Submit the shadow copy (de-duplicated on its id: a redelivered job sends it once).
    A copy that cannot be sent is logged: the job itself goes on."""
    copy = shadow_job(job_id, job, model=model, experiment=experiment)
    try:
        await js_publish(js, subjects.submit, encode(copy), msg_id=shadow_id(job_id))
    except Exception as exc:
        log.warning("job %s: shadow copy to %s not sent: %s", job_id, model, exc)
