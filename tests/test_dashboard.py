"""The dashboard in a real browser: a fleet (nats-server, PostgreSQL, emulators, workers,
router, ledger, gateway) serves a few dozen jobs over several models, some escalating or
failing through the emulators' fault markers; then headless Chromium (Debian's ``chromium``
package: ``apt-get install -y chromium``) loads ``/dashboard`` and the numbers the page shows
are checked against the ledger's tables, read with SQL.

The page marks ``<body data-ready="1">`` once every panel has been drawn; Chromium's virtual
time runs the page's scripts without waiting in real time, and network fetches hold virtual
time still, so ``--dump-dom`` returns the drawn page. Set ``FLEET_DASHBOARD_SCREENSHOT`` to a
path to keep the screenshot (docs/dashboard.png was taken so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from html.parser import HTMLParser

import asyncpg
import httpx
import pytest

from tests.fleet_harness import LedgerWatch
from tests.gateway_harness import GATEWAY_KEY, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless Chromium is missing: install Debian's package (apt-get install -y chromium)",
)


@pytest.fixture
def settings(make_settings, own_database_url):
    return make_settings(
        database_url=own_database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0, daily_budget_usd=5.0
    )


def traffic() -> list[dict]:
    """40 jobs: local, forced commercial models, local failures escalated, jobs that fail."""
    jobs = [{"prompt": f"summarise note {i}", "complexity": 2} for i in range(14)]
    jobs += [{"prompt": f"explain item {i}", "context": {"force_model": "openai"}} for i in range(8)]
    jobs += [{"prompt": f"prove lemma {i}", "context": {"force_model": "claude"}} for i in range(6)]
    jobs += [{"prompt": f"translate line {i}", "context": {"force_model": "gemini"}} for i in range(4)]
    jobs += [
        {"prompt": f"[emulate:lmstudio:error=500] sort list {i}", "task_type": "code_generation", "complexity": 2}
        for i in range(5)
    ]
    jobs += [{"prompt": f"[emulate:*:error=500] doomed {i}", "complexity": 5} for i in range(2)]
    jobs += [{"prompt": "[emulate:gemini:error=503] busy", "context": {"force_model": "gemini"}}]
    return [{**job, "id": f"dash-{n:02d}"} for n, job in enumerate(jobs)]


async def chromium(url: str, tmp_path, *extra: str) -> str:
    """Run headless Chromium on ``url``; its stdout (the DOM with ``--dump-dom``)."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=4000",  # past the first refresh, short of the next (5 s)
        *extra,
        url,
    ]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


class Page(HTMLParser):
    """The dumped DOM's figures: text by element id, model rows by ``data-model``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.value: dict[str, str] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self._open: list[tuple[str, dict[str, str]]] = []
        self._row: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "tr" and "data-model" in a:
            self._row = a["data-model"]
            self.rows[self._row] = {}
        if "id" in a and "data-value" in a:
            self.value[a["id"]] = a["data-value"]
        if tag not in ("input", "meta", "br", "img"):
            self._open.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        for _, a in self._open:
            if "id" in a:
                self.text[a["id"]] = self.text.get(a["id"], "") + data
            if "data-field" in a and self._row is not None:
                row = self.rows[self._row]
                row[a["data-field"]] = row.get(a["data-field"], "") + data


def usd(value: float) -> str:
    """As the page writes money (``usd`` in dashboard.html)."""
    return f"${value:.2f}" if value >= 10 else f"${value:.6f}"


async def ledger_figures(dsn: str) -> dict:
    today = (time.time() // 86_400) * 86_400
    conn = await asyncpg.connect(dsn)
    try:
        jobs = await conn.fetchrow(
            "SELECT count(*) AS jobs, count(*) FILTER (WHERE success) AS ok FROM routing_decisions "
            "WHERE finished_at >= $1",
            today,
        )
        cost = await conn.fetchval("SELECT COALESCE(sum(cost_usd), 0) FROM attempts WHERE at >= $1", today)
        models = await conn.fetch(
            "SELECT model, count(*) AS attempts, count(*) FILTER (WHERE success) AS ok, sum(cost_usd) AS cost "
            "FROM attempts WHERE at >= $1 GROUP BY model",
            today,
        )
    finally:
        await conn.close()
    return {"jobs": jobs["jobs"], "ok": jobs["ok"], "cost": cost, "models": {r["model"]: r for r in models}}


@needs_chromium
async def test_dashboard_shows_what_the_ledger_holds(settings, own_database_url, tmp_path):
    async with gateway_fleet(settings) as gw:
        watch = LedgerWatch(decisions=True)
        subjects = gw.fleet.subjects
        await gw.fleet.nc.subscribe(subjects.ledger_committed, cb=watch.on_msg)
        await gw.fleet.nc.subscribe(subjects.ledger_committed_events, cb=watch.on_msg)
        jobs = traffic()
        results = []
        for wave in (jobs[:20], jobs[20:]):
            results += await asyncio.gather(*(gw.fleet.request(job, timeout=60) for job in wave))
        await watch.wait_for([job["id"] for job in jobs], timeout=60)
        assert sum(not r.success for r in results) >= 2 and sum(len(r.attempts) > 1 for r in results) >= 5

        url = f"{gw.url}/dashboard#key={GATEWAY_KEY}"
        page = Page(await chromium(url, tmp_path, "--dump-dom"))
        shot = tmp_path / "dashboard.png"
        await chromium(url, tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", "--hide-scrollbars")
        ledger = await ledger_figures(own_database_url)

    assert page.body.get("data-ready") == "1", "the page never finished its first refresh"
    for panel in ("overview", "models", "health", "queues", "escalations", "decisions"):
        assert page.text.get(f"{panel}-error", "") == "", page.text[f"{panel}-error"]
    assert ledger["jobs"] == len(jobs)
    assert page.text["jobs-today"] == str(ledger["jobs"])
    assert page.text["successes-today"] == str(ledger["ok"])
    assert page.text["failures-today"] == str(ledger["jobs"] - ledger["ok"])
    assert page.text["cost-today"] == usd(ledger["cost"]) and ledger["cost"] > 0
    assert float(page.value["cost-today"]) == pytest.approx(ledger["cost"])
    assert page.text["budget-today"] == "$5.00" and float(page.value["budget-today"]) == 5.0
    assert set(ledger["models"]) <= set(page.rows)
    for model, row in ledger["models"].items():
        shown = page.rows[model]
        assert (shown["attempts"], shown["successes"]) == (str(row["attempts"]), str(row["ok"])), model
        assert shown["cost"] == usd(row["cost"]), model
    # the other panels drew from the fleet too
    assert "local_mlx" in page.text["flows"] and "given up" in page.text["flows"]
    assert "worker: openai" in page.text["queue-bars"]
    assert page.text["deadletter"] == "0"
    assert "dash-" in page.text["decision-list"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("FLEET_DASHBOARD_SCREENSHOT"):
        shutil.copy(shot, os.environ["FLEET_DASHBOARD_SCREENSHOT"])


async def test_dashboard_api_needs_a_key_when_keys_are_configured(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            page = await http.get("/dashboard")
            refused = await http.get("/dashboard/api/health.json")
            health = await http.get("/dashboard/api/health.json", headers={"authorization": f"Bearer {GATEWAY_KEY}"})
            no_ledger = await http.get("/dashboard/api/overview.json", headers={"x-api-key": GATEWAY_KEY})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" in page.text and "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    assert health.status_code == 200
    phases = {m["model"]: m["phase"] for m in health.json()["models"]}
    assert set(phases) >= {"local_mlx", "openai", "claude", "gemini"} and set(phases.values()) <= {"up", "unknown"}
    assert no_ledger.status_code == 503 and no_ledger.json()["error"]["code"] == "no_ledger"
