"""``modelrouter report``: the HTML report of a real fleet's ledger, rendered by headless
Chromium; the numbers the rendered page shows are the ledger's (skipped without Chromium)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import asyncpg
import pytest

from tests.client_harness import cli, fresh_database
from tests.fleet_harness import running_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOBS = [
    {"id": "rep-local-1", "prompt": "Write a sort", "task_type": "code_generation", "complexity": 2},
    {"id": "rep-local-2", "prompt": "Write a parser", "task_type": "code_generation", "complexity": 3},
    {"id": "rep-claude-1", "prompt": "Weigh microservices", "task_type": "reasoning", "complexity": 8},
    {"id": "rep-gpt-1", "prompt": "Summarise the news", "task_type": "completion", "complexity": 5},
    {
        "id": "rep-escalated-1",
        "prompt": "[emulate:lmstudio:error=500] sort a list",
        "task_type": "code_generation",
        "complexity": 2,
    },
]


@pytest.fixture(scope="module")
def own_database_url(postgres_admin_dsn):
    with fresh_database(postgres_admin_dsn) as url:
        yield url


async def render_dom(path: Path, profile: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--dump-dom",
        path.as_uri(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


def shown(dom: str, name: str) -> float:
    found = re.search(rf'data-metric="{name}">\$?([0-9.,]+)<', dom)
    assert found, name
    return float(found.group(1).replace(",", ""))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install -y chromium)")
async def test_the_report_renders_in_chromium_and_shows_the_ledgers_numbers(make_settings, own_database_url, tmp_path):
    settings = make_settings(database_url=own_database_url)
    async with running_fleet(settings) as (fleet, watch):
        results = [await fleet.request(job) for job in JOBS]
        assert all(r.success for r in results)
        await watch.wait_for([job["id"] for job in JOBS])
        out = tmp_path / "report.html"
        run = await cli("report", "--since", "7d", "-o", str(out), "--json", settings=fleet.settings)
        assert run.code == 0, run
    summary = json.loads(run.out)
    text = out.read_text("utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # self-contained: nothing fetched

    dom = await render_dom(out, tmp_path / "profile")
    conn = await asyncpg.connect(own_database_url)
    try:
        total = await conn.fetchval("SELECT sum(cost_usd) FROM attempts")
        jobs = await conn.fetchval("SELECT count(DISTINCT job_id) FROM attempts")
        by_model = dict(await conn.fetch("SELECT model, sum(cost_usd) FROM attempts GROUP BY model"))
        paths = await conn.fetch(
            "SELECT string_agg(model, ' &gt; ' ORDER BY attempt_no) FROM attempts GROUP BY job_id HAVING count(*) > 1"
        )
    finally:
        await conn.close()
    assert shown(dom, "jobs") == jobs == summary["jobs"] == len(JOBS)
    assert shown(dom, "total_cost") == pytest.approx(total, abs=1e-6) and total > 0
    assert shown(dom, "actual_cost") == pytest.approx(total, abs=1e-6)
    assert shown(dom, "savings") == pytest.approx(shown(dom, "baseline_cost") - total, abs=2e-6)
    assert shown(dom, "baseline_cost") > total  # local answers cost nothing at the reference prices' expense
    for model, cost in by_model.items():
        cell = re.search(rf'data-model-cost="{model}">\$([0-9.,]+)<', dom)
        assert cell and float(cell.group(1)) == pytest.approx(cost, abs=1e-6), model
    assert [p[0] for p in paths] and all(p[0] in dom for p in paths)  # every escalation path is listed
    assert dom.count("<svg") >= 5 and "<rect" in dom  # the plots were rendered
