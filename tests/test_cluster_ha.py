"""The fleet on a three-node NATS JetStream cluster (R3 streams), as ``make up NODES=3
WORKERS=N`` runs it, every service a real subprocess (see ``tests/cluster_fleet.py``):

(a) three workers of one provider share 1,000 jobs: none called twice at the provider, none
    lost, each worker a fair share;
(b) SIGKILL the nats-server leading the JOBS stream mid-load, then start it again: every
    accepted job gets exactly one Result and one ledger row; the time to recover is reported;
(c) a rolling restart of every service, one by one, under load loses nothing.

Load is paced by progress (at most ``WINDOW`` jobs without a Result), so jobs are still
being published while things break; every wait is a bounded poll of an observable count.
The figures each case measures are printed (``pytest -s``) and recorded in docs/operate.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest

from fleet_local import cluster
from tests.chaos.load import JobSpec, Outcome, check_invariants, collect, send, wait_for_ledger
from tests.cluster_fleet import ClusterFleet, make_forced_jobs
from tests.test_cluster import _private_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

#: Jobs published but without a Result, at most (the load keeps flowing through the chaos).
WINDOW, CHUNK = 150, 25
WAIT_S = 180.0


async def results_stored(fleet: ClusterFleet, at_least: int, timeout_s: float = WAIT_S) -> int:
    """Until the RESULTS stream holds ``at_least`` Results (polled; a leader election or a
    reconnect in between only delays the answer)."""
    deadline = time.monotonic() + timeout_s
    count = -1
    while True:
        with contextlib.suppress(Exception):
            count = (await fleet.js.stream_info(fleet.subjects.results_stream)).state.messages
            if count >= at_least:
                return count
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} of {at_least} Results stored after {timeout_s}s")
        await asyncio.sleep(0.05)


async def send_paced(fleet: ClusterFleet, jobs: list[JobSpec], accepted: dict[str, float]) -> None:
    """Publish in chunks, each once the fleet is within ``WINDOW`` of the published count;
    ``accepted``: job id -> when its publish was acked."""

    async def one(job: JobSpec) -> None:
        await send(fleet, job)  # retried (same Nats-Msg-Id) until JetStream acks it
        accepted[job.job_id] = time.monotonic()

    for start in range(0, len(jobs), CHUNK):
        await results_stored(fleet, start - WINDOW)
        await asyncio.gather(*(one(job) for job in jobs[start : start + CHUNK]))


async def run_load(fleet: ClusterFleet, database_url: str, jobs: list[JobSpec], chaos=None) -> dict[str, float]:
    """Send the jobs while ``chaos(fleet)`` runs; wait until every Result and ledger row is
    there; assert one of each per job, all successful. Returns job id -> accepted time."""
    accepted: dict[str, float] = {}
    sender = asyncio.create_task(send_paced(fleet, jobs, accepted))
    try:
        if chaos is not None:
            await chaos(fleet)
        await sender
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    await results_stored(fleet, len(jobs))
    await wait_for_ledger(database_url, [j.job_id for j in jobs], timeout_s=WAIT_S)
    outcome = await collect(fleet, database_url, jobs, Outcome())
    tally = check_invariants(jobs, outcome)  # one Result, one ledger row, attempts as told
    assert tally == {"success": len(jobs), "failed": 0}
    assert all(fleet.alive().values()), fleet.alive()
    return accepted


def doubled_calls(fleet: ClusterFleet, jobs: list[JobSpec]) -> dict[str, int]:
    per_job = fleet.counts.per_job()
    assert set(per_job) == {j.job_id for j in jobs}, "a job never reached the provider"
    return {job: n for job, n in per_job.items() if n > 1}


def report(case: str, **figures) -> None:
    print(f"\nCLUSTER-HA {case}: " + json.dumps(figures, sort_keys=True))


# -- (a) N workers of one provider share the work ---------------------------------------


@pytest.mark.anyio
async def test_three_workers_of_one_provider_share_1000_jobs(tmp_path, database_url, prefix):
    jobs = make_forced_jobs(1000, "share", ["openai"])
    # few slots per worker and a provider taking 30 ms: no single worker can take it all
    env = {"FLEET_WORKER_CONCURRENCY": "8", "FLEET_ACK_WAIT_S": "10"}
    async with ClusterFleet(
        tmp_path, database_url, prefix=prefix, workers={"openai": 3}, env=env, latency_ms=30
    ) as fleet:
        started = time.monotonic()
        await run_load(fleet, database_url, jobs)
        took = time.monotonic() - started
    split = fleet.counts.per_worker()
    doubled = doubled_calls(fleet, jobs)
    report("share", jobs=len(jobs), split=dict(split), doubled=len(doubled), lost=0, seconds=round(took, 1))
    assert doubled == {}, f"jobs called more than once at the provider: {doubled}"
    assert set(split) == {"worker-openai-1", "worker-openai-2", "worker-openai-3"}, split
    assert min(split.values()) >= len(jobs) // 10, f"a worker got under 10 % of the jobs: {split}"


# -- (b) the JOBS stream's leader is SIGKILLed and comes back ---------------------------


@pytest.mark.anyio
async def test_sigkill_the_jobs_stream_leader_then_restart_it(tmp_path, database_url, prefix):
    jobs = make_forced_jobs(600, "leader", ["openai"])
    seen: dict[str, float] = {}
    killed_node: list[str] = []

    async def chaos(fleet: ClusterFleet) -> None:
        stream = fleet.subjects.jobs_stream
        await results_stored(fleet, 150)
        leader = await fleet.stream_leader(stream)
        node = fleet.cluster.node_named(leader)
        seen["killed"] = time.monotonic()
        node.kill()  # SIGKILL: no goodbye to its peers
        deadline = time.monotonic() + 60
        while (await fleet.stream_leader(stream)) == leader:  # peers still name the dead one
            assert time.monotonic() < deadline, f"{stream} kept its dead leader {leader}"
            await asyncio.sleep(0.05)
        seen["elected"] = time.monotonic()
        await results_stored(fleet, 300)  # the fleet went on without the node
        await asyncio.to_thread(node.start)
        seen["restarted"] = time.monotonic()
        killed_node.append(leader)

    async with ClusterFleet(tmp_path, database_url, prefix=prefix, workers={"openai": 2}) as fleet:
        accepted = await run_load(fleet, database_url, jobs, chaos)
        # the restarted node caught up: every replica of JOBS is current again (bounded)
        deadline = time.monotonic() + 60
        while not await fleet.replicas_current(fleet.subjects.jobs_stream):
            assert time.monotonic() < deadline, "the restarted node never caught up with JOBS"
            await asyncio.sleep(0.1)
    killed = seen["killed"]
    after = sorted(t for t, _ in fleet.result_times if t > killed)
    after_new_job = sorted(t for t, job in fleet.result_times if t > killed and accepted.get(job, 0) > killed)
    figures = {
        "jobs": len(jobs),
        "accepted_after_kill": sum(1 for t in accepted.values() if t > killed),
        "lost": 0,
        "doubled_results": 0,
        "doubled_provider_calls": len(doubled_calls(fleet, jobs)),
        "new_leader_s": round(seen["elected"] - killed, 3),
        "next_result_s": round(after[0] - killed, 3),
        "first_result_of_a_job_accepted_after_kill_s": round(after_new_job[0] - killed, 3),
        "killed_node": killed_node[0],
    }
    report("leader-kill", **figures)
    assert figures["accepted_after_kill"] > 0, "no job was published after the kill: not mid-load"


# -- (c) a rolling restart of every service ---------------------------------------------


@pytest.mark.anyio
async def test_a_rolling_restart_of_every_service_loses_nothing(tmp_path, database_url, prefix):
    jobs = make_forced_jobs(600, "rolling", ["openai", "claude"])
    order = ["router", "worker-openai-1", "worker-openai-2", "worker-anthropic-1", "ledger"]
    took: dict[str, float] = {}

    async def chaos(fleet: ClusterFleet) -> None:
        for step, name in enumerate(order, 1):
            await results_stored(fleet, 80 * step)
            started = time.monotonic()
            await fleet.restart(name)  # SIGTERM, wait for the exit, start, wait for its ping
            took[name] = round(time.monotonic() - started, 2)

    workers = {"openai": 2, "anthropic": 1}
    async with ClusterFleet(tmp_path, database_url, prefix=prefix, workers=workers) as fleet:
        await run_load(fleet, database_url, jobs, chaos)
    doubled = doubled_calls(fleet, jobs)
    report("rolling", jobs=len(jobs), lost=0, doubled_results=0, doubled_provider_calls=len(doubled),
           restart_s=took)  # fmt: skip
    assert list(took) == order
    assert doubled == {}, f"a graceful stop let a job be called twice: {doubled}"


# -- make up NODES=3 WORKERS=2 ------------------------------------------------------------


def test_make_up_with_three_nodes_and_two_workers_per_provider(tmp_path):
    """The CLI as ``make up NODES=3 WORKERS=2`` runs it, on private ports: three nats nodes,
    every stream at R3, two healthy workers per provider; ``down`` stops it all."""
    run = cluster.RunDir(tmp_path / "run")
    cli = [sys.executable, "-m", "fleet_local.cluster"]
    argv = cli + ["up", "--run-dir", str(run.root), "--no-demo", "--timeout", "90", "--nodes", "3", "--workers", "2"]
    try:
        up = subprocess.run(argv, env=_private_env(), capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "3 clustered nodes; streams and KV buckets at R3" in up.stdout, up.stdout
        rows = {r.name: r for r in cluster.status(run)}
        workers = {f"worker-{p}-{i}" for p in cluster.PROVIDERS for i in (1, 2)}
        assert {"nats-1", "nats-2", "nats-3"} | workers <= set(rows), sorted(rows)
        assert all(r.alive and r.healthy is not False for r in rows.values()), rows
        assert all(rows[w].healthy for w in workers), {w: rows[w].healthy for w in workers}
        state = json.loads(run.file("state.json").read_text())
        assert state["env"]["FLEET_STREAM_REPLICAS"] == "3" and len(state["nats"]["url"].split(",")) == 3
        replicas = asyncio.run(_stream_replicas(state["nats"]["url"], state["env"]["FLEET_SUBJECT_PREFIX"]))
        assert replicas and set(replicas.values()) == {3}, replicas
    finally:
        pids = [r.pid for r in cluster.status(run)]
        cluster.down(run)
    assert pids and not [p for p in pids if cluster.pid_alive(p)]


async def _stream_replicas(url: str, prefix: str) -> dict[str, int]:
    import nats

    nc = await nats.connect(servers=url.split(","))
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name: i.config.num_replicas for i in infos if i.config.name.startswith(prefix.upper())}
    finally:
        await nc.close()
