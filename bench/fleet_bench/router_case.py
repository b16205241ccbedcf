"""The router process's decisions/s with and without inference: its CPU per job routed.

The inference case (``fleet_bench.inference_bench``) times the policy function alone, where
a decision costs ~10 us and inference ~33 us. What an operator sizes is the router
*process*: a job comes off the JOBS stream, is decoded, checked, inferred, routed, and its
Dispatch is published and acked. This case runs one router (and the LM Studio emulator
it routes to; no worker, so each Dispatch stays queued and is counted there) on a private
nats-server, and submits the evaluation prompts in rounds, alternately with their labels
(task type and complexity given: no inference) and without them (both inferred): the
same text, the same decisions path, only inference differs. Each round's figure is the
router's CPU seconds for the round's jobs, read from /proc, so a busy machine slows the
round without changing what it measures much; the ratio is unlabelled decisions/s over
labelled decisions/s, the median of the rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import msgspec
import nats

from fleet_bench import inference_eval
from fleet_bench.infra import Bench, entry, proc_cpu_s, spawn
from fleet_shared.publish import MSG_ID_HEADER

#: Jobs per round; rounds alternate labelled / unlabelled.
JOBS_PER_ROUND = 3000
ROUNDS = 6
#: Jobs of each kind routed before the rounds, not counted.
WARMUP_JOBS = 400
#: Longest wait for a round's Dispatches (a stuck router fails the case, it does not hang it).
ROUND_TIMEOUT_S = 120.0


def job_sets() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(labelled, unlabelled) job bodies of the evaluation prompts (both splits)."""
    labelled, unlabelled = [], []
    bands = {"easy": 2, "medium": 5, "hard": 8}
    for split in inference_eval.SPLITS:
        for example in inference_eval.load(split):
            body = msgspec.to_builtins(example.job)
            body = {k: v for k, v in body.items() if k in ("prompt", "messages", "system") and v}
            unlabelled.append(body)
            labelled.append(body | {"task_type": example.task_type, "complexity": bands.get(example.band, 5)})
    return labelled, unlabelled


async def router_decisions(bench: Bench, *, jobs_per_round: int = JOBS_PER_ROUND, rounds: int = ROUNDS) -> dict:
    labelled, unlabelled = job_sets()
    async with bench.case("router") as env:
        await env.ensure_streams()
        base_url = env.start_emulator(0.0)
        router_env = env.base_env() | {
            "LMSTUDIO_BASE_URL": base_url,
            # no worker on purpose: its Dispatches stay queued, and none is escalated as orphaned
            "FLEET_NO_WORKER_ESCALATE_S": "86400",
        }
        router = spawn("router-0", "router", entry("fleet_router"), router_env, env.dir / "logs")
        env.procs.append(router)
        nc = await nats.connect(env.nats.url, name="bench-router-case")
        try:
            js = nc.jetstream()
            subjects = env.subjects
            # warm-up, not counted: the router's consumer, caches and first-time costs
            for bodies in (labelled, unlabelled):
                await _round(js, subjects, bodies[:WARMUP_JOBS], router.pid)
            cpu: dict[str, list[float]] = {"labelled": [], "unlabelled": []}
            for i in range(rounds):
                name, bodies = ("labelled", labelled) if i % 2 == 0 else ("unlabelled", unlabelled)
                batch = [bodies[k % len(bodies)] for k in range(jobs_per_round)]
                cpu[name].append(await _round(js, subjects, batch, router.pid) / jobs_per_round)
        finally:
            await nc.close()
    with_rate = 1.0 / statistics.median(cpu["unlabelled"])
    without_rate = 1.0 / statistics.median(cpu["labelled"])
    return {
        "router_process_decisions_per_cpu_s_with_inference": round(with_rate, 1),
        "router_process_decisions_per_cpu_s_without": round(without_rate, 1),
        "router_process_inference_ratio": round(with_rate / without_rate, 3),
        "router_process_cpu_ms_per_job": {k: [round(v * 1000, 4) for v in vs] for k, vs in cpu.items()},
    }


async def _round(js, subjects, bodies: list[dict[str, Any]], router_pid: int) -> float:
    """Submit ``bodies`` as new jobs; the router's CPU seconds until each has its Dispatch
    (or, for a job the policy cannot place, its failed Result)."""
    before = await _routed(js, subjects)
    cpu0 = proc_cpu_s(router_pid)
    acks = []
    for body in bodies:
        job_id = uuid.uuid4().hex
        data = msgspec.json.encode(body | {"id": job_id})
        acks.append(await js.publish_async(subjects.submit, data, headers={MSG_ID_HEADER: job_id}))
        if len(acks) >= 512:
            await asyncio.gather(*acks)
            acks = []
    await asyncio.gather(*acks)
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while await _routed(js, subjects) < before + len(bodies):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the router routed {await _routed(js, subjects) - before} of {len(bodies)} jobs")
        await asyncio.sleep(0.05)  # a bench's progress poll, not a test's synchronisation
    return proc_cpu_s(router_pid) - cpu0


async def _routed(js, subjects) -> int:
    dispatched = (await js.stream_info(subjects.dispatch_stream)).state.messages
    answered = (await js.stream_info(subjects.results_stream)).state.messages
    return int(dispatched + answered)
