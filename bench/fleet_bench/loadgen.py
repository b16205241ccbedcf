"""The load generator: a separate process that offers jobs at a paced rate and times them.

    python -m fleet_bench.loadgen --nats URL --prefix P --plan plan.json

It speaks only the public contract: async JetStream publishes to ``<p>.submit`` (acks
collected in batches), a core subscription to ``<p>.result.*`` for the Results and one to
``<p>.ledger.committed`` for the ledger's commit notices. A job is *done* when its Result
has arrived and the ledger has committed it.

Per job (this process's monotonic clock):
    e2e latency       Result receipt - publish
    overhead          e2e latency - the emulator's own time (sum of the Attempts' provider_ms,
                      which the emulator reports in ``openai-processing-ms``; 0 when absent,
                      so overhead is then the whole e2e latency)
    added             e2e latency - the provider call time the worker measured around the
                      HTTP call (sum of the Attempts' latency_ms): LiteLLM's "added latency",
                      proxy latency minus a direct call's
    commit latency    commit notice receipt - publish

A plan with ``"closed_loop": true`` runs closed-loop request-reply steps instead
(``fleet_bench.closedloop``: the fleet, the floor and the direct HTTP call).

The plan is a JSON list of steps ``{"name", "rate", "duration_s", "drain_s", "shift_s",
"max_outstanding"}`` (``max_outstanding`` makes a step closed-loop: it publishes at ``rate``
at most, but never lets more jobs than that be in flight);
``{"ramp": true}`` at the top level stops after the first step that did not keep up
(``ramp_from`` names the first step that may stop it). Every loop is bounded in count and
time. The report (JSON) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from fleet_bench.stats import percentile
from fleet_bench.tracking import Job, Tracker
from fleet_shared.subjects import Subjects

#: A job fits on one screen and is routed to the local model (complexity <= 3 -> local_mlx).
PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring."
#: A step "keeps up" when this share of its offered rate completed inside the window ...
KEEP_UP_SHARE = 0.95
#: ... and its last job was done within this long (plus shift_s) after the last publish.
KEEP_UP_TAIL_S = 1.0
#: async publishes in flight at most (nats-py stalls beyond it)
MAX_PENDING_PUBLISHES = 20_000
#: pacing tick
TICK_S = 0.002


def _pcts(values: list[float]) -> dict[str, float | None]:
    out = {f"p{q}": _round(percentile(values, q)) for q in (50, 95, 99)}
    out["max"] = _round(max(values) if values else None)
    out["mean"] = _round(sum(values) / len(values) if values else None)
    return out


def _round(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


class LoadGen:
    def __init__(
        self,
        nats_url: str,
        prefix: str,
        run_tag: str,
        pids: dict[str, int] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.pids = pids or {}
        self.database_url = database_url
        self.pg_pids: list[int] = []
        self.subjects = Subjects(prefix)
        self.run_tag = run_tag
        self.tracker = Tracker()
        # connected by __aenter__
        self.nc: NATS
        self.js: JetStreamContext
        self.publish_errors = 0

    async def __aenter__(self) -> LoadGen:
        self.nc = await nats.connect(self.nats_url, name="bench-loadgen", max_reconnect_attempts=3)
        self.js = self.nc.jetstream(publish_async_max_pending=MAX_PENDING_PUBLISHES)
        pending = 4 * 1024 * 1024
        await self.nc.subscribe(self.subjects.result_all, cb=self.tracker.on_result, pending_msgs_limit=pending)
        await self.nc.subscribe(self.subjects.ledger_committed, cb=self.tracker.on_commit, pending_msgs_limit=pending)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    def _payload(self, job_id: str) -> bytes:
        return msgspec.json.encode({"id": job_id, "prompt": PROMPT, "task_type": "code_generation", "complexity": 2})

    async def _publish(self, job_id: str, step: int) -> None:
        payload = self._payload(job_id)
        self.tracker.jobs[job_id] = Job(sent=time.perf_counter(), step=step)
        try:
            fut = await self.js.publish_async(self.subjects.submit, payload, wait_stall=5.0)
        except Exception:
            self.publish_errors += 1
            return
        fut.add_done_callback(self._on_ack)  # acks are counted, never awaited one by one

    def _on_ack(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.publish_errors += 1

    async def _collect_acks(self, timeout_s: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.js.publish_async_completed(), timeout_s)
        except TimeoutError:
            pass

    async def warm_up(self, count: int, timeout_s: float) -> dict:
        """Send ``count`` jobs one by one until each is done: proves the fleet is ready."""
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        done = 0
        for i in range(count):
            job_id = f"{self.run_tag}-w-{i}"
            # the first job may be sent before every consumer exists: resend a few times
            while time.perf_counter() < deadline:
                await self._publish(job_id, step=-1)
                await self._collect_acks()
                if await self._wait_done([job_id], min(5.0, max(0.1, deadline - time.perf_counter()))):
                    done += 1
                    break
                del self.tracker.jobs[job_id]
                job_id += "r"
            if time.perf_counter() >= deadline:
                break
        return {"warmup_jobs": count, "warmup_done": done, "warmup_s": round(time.perf_counter() - t0, 3)}

    async def _wait_done(self, job_ids: list[str], timeout_s: float, step: int | None = None) -> bool:
        """Wait until every job is done (for a step: until its done count reaches len(job_ids))."""
        deadline = time.perf_counter() + timeout_s
        while True:
            if step is not None:
                if self.tracker.done_by_step.get(step, 0) >= len(job_ids):
                    return True
            elif all(self.tracker.jobs[j].done_at for j in job_ids):
                return True
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.tracker.done_event.clear()
            try:
                await asyncio.wait_for(self.tracker.done_event.wait(), min(left, 0.05))
            except TimeoutError:
                pass

    async def run_step(self, index: int, step: dict) -> dict:
        rate = float(step["rate"])
        duration = float(step["duration_s"])
        total = max(1, int(rate * duration))
        ids = [f"{self.run_tag}-{index}-{n}" for n in range(total)]
        await self.find_pg_backends()
        cpu0 = self._cpu()
        t0 = time.perf_counter()
        n = 0
        hard_stop = t0 + duration * 3 + 5  # a publisher that falls far behind gives up
        # closed loop when max_outstanding is set: never more than that many jobs not yet done
        cap = int(step.get("max_outstanding") or 0)
        while n < total and time.perf_counter() < hard_stop:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            if cap:
                due = min(due, self.tracker.done_by_step.get(index, 0) + cap)
            while n < due:
                await self._publish(ids[n], index)
                n += 1
            await asyncio.sleep(TICK_S)
        t_end = time.perf_counter()
        cpu = {name: round(100 * (s - cpu0.get(name, 0.0)) / (t_end - t0), 1) for name, s in self._cpu().items()}
        await self._collect_acks()
        sent_ids = ids[:n]
        drained = await self._wait_done(sent_ids, float(step.get("drain_s", 30.0)), step=index)
        summary = self._summarise(step, sent_ids, t0, t_end, drained)
        rate = summary["done_per_s"]
        # CPU time each process spends per job done: what a job costs, whatever the noise
        per_job = {name: round(10 * pct / rate, 3) for name, pct in cpu.items()} if rate > 0 else {}
        return summary | {"cpu_pct": cpu, "cpu_ms_per_job": per_job}

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far of the fleet's processes (given by --pids), of this one, and of
        the PostgreSQL backends serving the case's database (all of them summed)."""
        from fleet_bench.infra import proc_cpu_s

        pids = {**self.pids, "loadgen": os.getpid()}
        out = {name: proc_cpu_s(pid) for name, pid in pids.items()}
        if self.pg_pids:
            out["postgres"] = sum(proc_cpu_s(pid) for pid in self.pg_pids)
        return out

    async def find_pg_backends(self) -> None:
        """The pids of the backends connected to the case's database (the ledger's pool)."""
        if not self.database_url:
            return
        import asyncpg

        try:
            conn = await asyncpg.connect(self.database_url, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
        except Exception:  # CPU of PostgreSQL is context only
            return
        self.pg_pids = [r["pid"] for r in rows]

    def _summarise(self, step: dict, ids: list[str], t0: float, t_end: float, drained: bool) -> dict:
        jobs = [self.tracker.jobs[j] for j in ids]
        sent = len(jobs)
        duration = t_end - t0
        shift = float(step.get("shift_s", 0.0))
        warm = min(1.0, 0.2 * duration)
        lo, hi = t0 + warm + shift, t_end + shift
        done_in_window = sum(1 for j in jobs if j.done_at and lo <= j.done_at <= hi)
        results_in_window = sum(1 for j in jobs if j.result_at and lo <= j.result_at <= hi)
        done = [j for j in jobs if j.done_at]
        with_result = [j for j in jobs if j.result_at]
        e2e = [(j.result_at - j.sent) * 1000 for j in with_result]
        overhead = [(j.result_at - j.sent) * 1000 - j.provider_own_ms for j in with_result if j.success]
        added = [(j.result_at - j.sent) * 1000 - j.provider_ms for j in with_result if j.success]
        own = [j.provider_own_ms for j in with_result if j.success]
        commit = [(j.committed_at - j.sent) * 1000 for j in jobs if j.committed_at]
        provider = [j.provider_ms for j in with_result if j.success]
        last_done = max((j.done_at for j in done), default=0.0)
        sent_rate = sent / duration if duration > 0 else 0.0
        window = max(1e-9, hi - lo)
        done_rate = done_in_window / window
        kept_up = (
            drained
            and done_rate >= KEEP_UP_SHARE * sent_rate
            and (last_done - t_end) <= KEEP_UP_TAIL_S + shift + 0.5 * (percentile(e2e, 50) or 0) / 1000
        )
        return {
            "name": step.get("name", ""),
            "offered_per_s": step["rate"],
            "sent_per_s": round(sent_rate, 1),
            "duration_s": round(duration, 3),
            "sent": sent,
            "results": len(with_result),
            "successes": sum(1 for j in with_result if j.success),
            "failures": sum(1 for j in with_result if not j.success),
            "missing": sent - len(with_result),  # no Result by the end of the drain wait
            "committed": sum(1 for j in jobs if j.committed_at),
            "done": len(done),
            "drained": drained,
            "done_per_s": round(done_rate, 1),
            "results_per_s": round(results_in_window / window, 1),
            "success_rate": round(sum(1 for j in with_result if j.success) / sent, 5) if sent else 0.0,
            "tail_s": round(last_done - t_end, 3) if last_done else None,
            "kept_up": bool(kept_up),
            "e2e_ms": _pcts(e2e),
            "overhead_ms": _pcts(overhead),
            "added_ms": _pcts(added),
            "provider_own_ms": _pcts(own),
            "commit_ms": _pcts(commit),
            "provider_ms": _pcts(provider),
        }


async def run(args: argparse.Namespace) -> dict:
    with open(args.plan) as fh:
        plan = json.load(fh)
    report: dict = {"steps": []}
    pids = dict(item.split("=", 1) for item in args.pids.split(",") if item) if args.pids else {}
    if plan.get("closed_loop"):
        from fleet_bench.closedloop import run_closed

        nc = await nats.connect(args.nats, name="bench-loadgen", max_reconnect_attempts=3)
        try:
            return await run_closed(nc, plan, {k: int(v) for k, v in pids.items()}, args.database_url)
        finally:
            await nc.close()
    async with LoadGen(
        args.nats, args.prefix, args.run_tag, {k: int(v) for k, v in pids.items()}, args.database_url
    ) as gen:
        report.update(await gen.warm_up(plan.get("warmup", 5), plan.get("warmup_timeout_s", 60.0)))
        if report["warmup_jobs"] and report["warmup_done"] == 0:
            report["error"] = "fleet never completed a warm-up job"
            return report
        ramp_from = plan.get("ramp_from")
        ramping = False
        for index, step in enumerate(plan["steps"]):
            ramping = ramping or (plan.get("ramp") and (ramp_from is None or step.get("name") == ramp_from))
            summary = await gen.run_step(index, step)
            report["steps"].append(summary)
            print(
                json.dumps(
                    {k: summary[k] for k in ("name", "offered_per_s", "sent_per_s", "done_per_s", "kept_up")}
                    | {"e2e_p99": summary["e2e_ms"]["p99"], "overhead_p50": summary["overhead_ms"]["p50"]}
                ),
                file=sys.stderr,
                flush=True,
            )
            if ramping and not summary["kept_up"]:
                break
        report["publish_errors"] = gen.publish_errors
        report["unknown_results"] = gen.tracker.unknown_results
        report["unknown_commits"] = gen.tracker.unknown_commits
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.loadgen")
    parser.add_argument("--nats", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--plan", required=True, help="JSON file: {steps: [...], warmup, ramp, ramp_from}")
    parser.add_argument("--run-tag", default="b")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pids", default="", help="name=pid,... whose CPU use is reported per step")
    parser.add_argument("--database-url", default="", help="the case's database: its backends' CPU is reported too")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    with open(args.out, "w") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
