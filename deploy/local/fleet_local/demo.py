"""A demo client that knows only the public wire contract: JSON jobs on ``<prefix>.request``.

    python -m fleet_local.demo [--timeout 60]

Sends a dozen jobs of mixed task types and complexities at once, each a NATS request whose
reply is the job's final Result, and prints what the router chose and why. On purpose the
jobs and Results are plain nats-py and ``json``: any NATS client can do this. (Only the
NATS credentials are read with the project's ``Settings``, as every fleet process reads them.)

Settings come from the environment, else from ``.run/cluster.env`` (written by ``make up``):
NATS_URL, FLEET_SUBJECT_PREFIX, FLEET_LMSTUDIO_EMULATED (when 1, one job asks the LM
Studio emulator to fail with HTTP 500, to show two local attempts escalating to a
commercial model), and the NATS_* credentials (NATS_USER/NATS_PASSWORD, NATS_TOKEN,
NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*, and their ``_FILE`` forms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

from fleet_shared.bus import credentials
from fleet_shared.config import Settings

#: (task_type, complexity, prompt, context): one row per demo job.
JOBS: list[tuple[str, int, str, dict[str, Any] | None]] = [
    ("completion", 1, "Complete the sentence: The quick brown fox", None),
    ("code_generation", 5, "Write a thread-safe LRU cache in Python with type hints.", None),
    ("code_refactor", 3, "Refactor: for i in range(len(xs)): print(xs[i])", None),
    ("code_refactor", 7, "Split a 400-line Django view into services, keeping behaviour.", None),
    ("reasoning", 4, "If all bloops are razzies and no razzies are lazzies, can a bloop be a lazzie?", None),
    ("reasoning", 9, "Prove that there are infinitely many primes of the form 4k+3.", None),
    ("analysis", 6, "Compare event sourcing with CRUD for an order-management system.", None),
    ("analysis", 10, "Assess the failure modes of a multi-region active-active Postgres setup.", None),
    ("creative", 2, "Write a haiku about message queues.", None),
    ("creative", 8, "Write a short story in which a load balancer falls in love.", None),
    ("completion", 5, "Summarise the CAP theorem in two sentences.", {"force_model": "openai"}),
]
#: The twelfth job: a simple code job that goes local first. The LM Studio emulator fails
#: every prompt carrying this marker with HTTP 500 (only added when LM Studio is emulated).
LOCAL_ERROR_PROMPT = "Write a bash one-liner that counts lines in a file."
LOCAL_ERROR_MARKER = " [emulate:lmstudio:error=500]"
#: Read from the environment, else from the env file.
_KEYS = ("NATS_URL", "FLEET_SUBJECT_PREFIX", "FLEET_LMSTUDIO_EMULATED")


def load_env(env_file: Path) -> dict[str, str]:
    """The environment, over the KEY=VALUE lines of ``env_file`` when it exists."""
    values: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    # NATS_* too: the credentials (NATS_USER, NATS_TOKEN_FILE, NATS_CREDS, TLS...) every process uses
    return {**values, **{k: v for k, v in os.environ.items() if v and (k in _KEYS or k.startswith("NATS_"))}}


def build_jobs(inject_local_error: bool) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]  # fresh ids: a re-run must not be served old results
    marker = LOCAL_ERROR_MARKER if inject_local_error else ""
    rows = JOBS + [("code_generation", 2, LOCAL_ERROR_PROMPT + marker, None)]
    jobs = []
    for n, (task_type, complexity, prompt, context) in enumerate(rows, 1):
        job = {"id": f"demo-{tag}-{n:02d}", "prompt": prompt, "task_type": task_type,
               "complexity": complexity, "max_tokens": 256}  # fmt: skip
        if context:
            job["context"] = context
        jobs.append(job)
    return jobs


async def send(nc: nats.NATS, subject: str, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The Result, or a stand-in Result saying why none came."""
    try:
        reply = await nc.request(subject, json.dumps(job).encode(), timeout=timeout_s)
    except NatsTimeout:
        return {
            "job_id": job["id"],
            "success": False,
            "error": {"code": "timeout", "message": f"no reply in {timeout_s:.0f}s"},
        }
    except NoRespondersError:
        return {
            "job_id": job["id"],
            "success": False,
            "error": {"code": "no_responders", "message": "is the router up?"},
        }
    try:
        return json.loads(reply.data)
    except ValueError:
        return {
            "job_id": job["id"],
            "success": False,
            "error": {"code": "bad_reply", "message": reply.data[:80].decode(errors="replace")},
        }


def _attempts(result: dict[str, Any]) -> str:
    chain = [f"{a.get('model')}{'' if a.get('success') else ':x'}" for a in result.get("attempts") or []]
    return f"{len(chain)} " + " > ".join(chain) if chain else "0"


def _row(job: dict[str, Any], result: dict[str, Any]) -> list[str]:
    error = result.get("error") or {}
    why = result.get("reasoning") or ""
    if not result.get("success"):
        why = f"FAILED {error.get('code', '?')}: {error.get('message', '')} {why}".strip()
    return [job["id"].rsplit("-", 1)[1], f"{job['task_type']}/{job['complexity']}", result.get("model") or "-",
            _attempts(result), f"${result.get('cost_usd', 0.0):.5f}", why.replace("\n", " ")]  # fmt: skip


def print_table(jobs: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    header = ["job", "task/cx", "model", "attempts", "cost", "reasoning"]
    rows = [header] + [_row(j, r) for j, r in zip(jobs, results)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    room = max(30, shutil.get_terminal_size((160, 24)).columns - sum(widths) - 2 * 5)
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths)]
        reason = row[5] if len(row[5]) <= room else row[5][: room - 3] + "..."
        print("  ".join(cells + [reason]))
    ok = sum(1 for r in results if r.get("success"))
    cost = sum(r.get("cost_usd") or 0.0 for r in results)
    print(f"\n{ok}/{len(results)} succeeded, total cost ${cost:.5f}")


async def _quiet(exc: Exception) -> None:
    pass  # nats-py would print a traceback per failed connect; main() reports the failure once


async def connect_client(nats_url: str, settings: Settings | None) -> nats.NATS:
    """The demo's connection, with the credentials in ``settings``; fails in seconds, not
    after nats-py's default minutes of retries, when nothing is there."""
    return await nats.connect(
        servers=nats_url.split(","),
        connect_timeout=5,
        max_reconnect_attempts=2,
        error_cb=_quiet,
        **(credentials(settings) if settings else {}),
    )


async def run_demo(
    nats_url: str, prefix: str, *, inject_local_error: bool, timeout_s: float = 60.0, settings: Settings | None = None
) -> int:
    """Send the demo jobs concurrently and print the table; 0 when every job succeeded.
    ``settings`` supplies the NATS credentials (user/password, token, nkey, creds, TLS)."""
    jobs = build_jobs(inject_local_error)
    nc = await connect_client(nats_url, settings)
    try:
        print(f"\nsending {len(jobs)} jobs to {prefix}.request ...\n")
        results = await asyncio.gather(*(send(nc, f"{prefix}.request", j, timeout_s) for j in jobs))
    finally:
        await nc.close()
    print_table(jobs, list(results))
    return 0 if all(r.get("success") for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each Result")
    parser.add_argument("--env-file", type=Path, default=Path(".run/cluster.env"))
    args = parser.parse_args(argv)
    env = load_env(args.env_file)
    nats_url = env.get("NATS_URL") or "nats://127.0.0.1:4222"
    try:
        return asyncio.run(
            run_demo(
                nats_url,
                env.get("FLEET_SUBJECT_PREFIX") or "llm",
                inject_local_error=env.get("FLEET_LMSTUDIO_EMULATED") == "1",
                timeout_s=args.timeout,
                settings=Settings.from_env(env),
            )
        )
    except (OSError, NoServersError) as exc:
        print(f"cannot reach NATS at {nats_url}: {exc!r} (is the fleet up? `make up`)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
