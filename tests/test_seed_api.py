"""The seed's own examples, run as a seed user would: the Python blocks of the seed's
"Quick Start" and "Analytics & Monitoring" sections, read from the seed file at test time,
with only their import lines changed to ``from modelrouter import ...``.

They run in a separate Python process (as a user's script would) against an in-process
fleet with emulators: the synchronous RouterAnalytics calls block their caller, so they
must not share the fleet's event loop. The Quick Start blocks share one namespace (the
"Custom Routing" block uses the ``client`` of "Direct Router Usage") inside one async
function (they ``await``); the Analytics block runs both at top level and inside a running
event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from tests.client_harness import fresh_database
from tests.fleet_harness import running_fleet
from tests.provider_fleet import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
#: the seed file: ../shared/seed/ beside the repository (FLEET_SEED_FILE names another copy)
SEED = Path(os.environ.get("FLEET_SEED_FILE") or REPO.parent / "shared" / "seed" / "000_e9be170cc9a84fd6.md")

_IMPORT = re.compile(r"^from\s+core\.[\w.]+\s+import\s+(.+)$", re.MULTILINE)


def seed_blocks(section: str) -> list[str]:
    """The ```python blocks under the level-2 heading ``section`` of the seed."""
    text = SEED.read_text()
    match = re.search(rf"^## {re.escape(section)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"the seed has no section {section!r}"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.DOTALL)


def with_our_imports(code: str) -> str:
    """Only the import lines change: ``from core.x.y import A, B`` -> ``from modelrouter import A, B``."""
    return _IMPORT.sub(lambda m: f"from modelrouter import {m.group(1)}", code)


def in_async_function(code: str, keep: list[str]) -> str:
    """``code`` as the body of ``async def seed()``, run with asyncio, printing ``keep`` as JSON."""
    body = textwrap.indent(code, "    ")
    names = ", ".join(f"{n!r}: {n}" for n in keep)
    return (
        "import asyncio, json\n"
        f"async def seed():\n{body}\n    return {{{names}}}\n"
        "print('SEED-JSON ' + json.dumps(asyncio.run(seed()), default=str))\n"
    )


def at_top_level(code: str, keep: list[str]) -> str:
    names = ", ".join(f"{n!r}: {n}" for n in keep)
    return f"{code}\nimport json\nprint('SEED-JSON ' + json.dumps({{{names}}}, default=str))\n"


async def run_script(script: str, env: dict[str, str]) -> tuple[dict, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, f"seed snippet failed:\n{script}\n--- stderr ---\n{err.decode()}"
    stdout = out.decode()
    (line,) = [x for x in stdout.splitlines() if x.startswith("SEED-JSON ")]
    return json.loads(line.removeprefix("SEED-JSON ")), stdout


@pytest.fixture
def seed_file():
    if not SEED.exists():
        pytest.skip(f"the seed file is not beside the repository ({SEED}); nothing to run")
    return SEED


@pytest.fixture
def own_database_url(postgres_admin_dsn):
    """A database of this test's own: the analytics totals count only its jobs."""
    with fresh_database(postgres_admin_dsn) as url:
        yield url


async def test_seed_snippets_run_with_only_their_imports_changed(seed_file, make_settings, own_database_url):
    quick = [with_our_imports(b) for b in seed_blocks("Quick Start")]
    analytics = [with_our_imports(b) for b in seed_blocks("Analytics & Monitoring")]
    assert len(quick) == 3 and len(analytics) == 1
    assert all("from core" not in b for b in quick + analytics)

    settings = make_settings(database_url=own_database_url, daily_budget_usd=5.0)
    env = {**os.environ, "NATS_URL": settings.nats_url, "FLEET_SUBJECT_PREFIX": settings.subject_prefix}
    env.pop("FLEET_DAILY_BUDGET_USD", None)
    async with running_fleet(settings) as (_, watch):
        got, _ = await run_script(in_async_function("\n".join(quick), ["response", "result"]), env)
        response, result = got["response"], got["result"]
        # 1. Basic Usage: the coder agent, complexity 3 -> a free local model
        assert response["success"] and response["content"]
        assert response["model"] == "local_mlx" and response["task_type"] == "code_generation"
        # 3. Custom Routing overwrote `result` of 2. Direct Router Usage: force_model honoured
        assert result["success"] and result["model"] == "local_mlx" and "force_model" in result["reasoning"]

        # 2. Direct Router Usage on its own, to see its result (reasoning, complexity 7 -> claude)
        direct, _ = await run_script(in_async_function(quick[1], ["result"]), env)
        assert direct["result"]["success"] and direct["result"]["model"] == "claude"
        assert direct["result"]["cost_usd"] > 0
        await watch.wait_for([response["job_id"], result["job_id"], direct["result"]["job_id"]])
        await eventually(lambda: len(watch.committed) >= 4 and len(watch.decided) >= 4)  # + the first claude job

        keep = ["performance", "costs", "recommendations"]
        for script in (at_top_level(analytics[0], keep), in_async_function(analytics[0], keep)):
            got, printed = await run_script(script, env)
            assert {"local_mlx", "claude"} <= set(got["performance"])
            assert f"Models tracked: {len(got['performance'])}" in printed
            # two claude jobs (Direct Router Usage ran twice); local models are free
            assert got["costs"]["total_cost"] == pytest.approx(2 * direct["result"]["cost_usd"])
            assert f"Total cost: ${got['costs']['total_cost']:.6f}" in printed
            assert isinstance(got["recommendations"], list)


async def test_budget_remaining_uses_the_configured_budget(make_settings, database_url):
    """``get_daily_budget_remaining()`` without an argument: the ledger's FLEET_DAILY_BUDGET_USD,
    or the client's when set in its environment; sync calls work inside a running loop."""
    settings = make_settings(database_url=database_url, daily_budget_usd=5.0)
    env = {**os.environ, "NATS_URL": settings.nats_url, "FLEET_SUBJECT_PREFIX": settings.subject_prefix}
    env.pop("FLEET_DAILY_BUDGET_USD", None)
    script = (
        "from modelrouter import RouterAnalytics\n"
        "analytics = RouterAnalytics()\n"
        "budget = analytics.get_daily_budget_remaining()\n"
        "twin = await analytics.aget_daily_budget_remaining()\n"
    )
    async with running_fleet(settings):
        got, _ = await run_script(in_async_function(script, ["budget", "twin"]), env)
        assert got["budget"]["budget"] == 5.0 and got["twin"]["budget"] == 5.0
        assert got["budget"]["remaining"] <= 5.0
        env["FLEET_DAILY_BUDGET_USD"] = "2.5"
        got, _ = await run_script(in_async_function(script, ["budget", "twin"]), env)
        assert got["budget"]["budget"] == 2.5 and got["twin"]["budget"] == 2.5
