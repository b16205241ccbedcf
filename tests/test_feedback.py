"""Feedback end to end (issue 11 item 7): the gateway's POST /v1/feedback and raw NATS
publishes land in the ledger's feedback table once per message; invalid feedback is a dead
letter with its reason; the performance report carries each model's feedback. A real
fleet, gateway, nats-server and PostgreSQL (a database of this module's own)."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import msgspec
import pytest

from fleet_ledger.analytics import RouterAnalytics
from fleet_ledger.writer import Envelope, write_batch
from fleet_shared.publish import DEAD_REASON_HEADER
from fleet_shared.schema import Feedback
from tests.client_harness import fresh_database
from tests.gateway_harness import GATEWAY_KEY, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(scope="module")
def own_database_url(postgres_admin_dsn):
    with fresh_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture
async def gw(make_settings, own_database_url):
    async with gateway_fleet(make_settings(database_url=own_database_url, ack_wait_s=10.0)) as gw:
        yield gw


class Committed:
    """The ledger's feedback commit notices (waited on, never slept for)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._changed = asyncio.Condition()

    async def on_msg(self, msg) -> None:
        async with self._changed:
            self.ids.update(json.loads(msg.data)["feedback"])
            self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.ids) >= count)

        await asyncio.wait_for(enough(), 30)


async def feedback_rows(database_url: str, job_id: str) -> list[dict]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM feedback WHERE job_id = $1 ORDER BY score", job_id)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_feedback_from_the_gateway_and_nats_reaches_the_ledger_and_the_report(gw, own_database_url):
    fleet = gw.fleet
    committed = Committed()
    await fleet.nc.subscribe(fleet.subjects.ledger_committed_feedback, cb=committed.on_msg)
    result_in_ledger = asyncio.Event()

    async def on_results_committed(msg) -> None:
        if "fb-job-1" in json.loads(msg.data)["job_ids"]:
            result_in_ledger.set()

    await fleet.nc.subscribe(fleet.subjects.ledger_committed, cb=on_results_committed)
    await fleet.nc.flush()
    served = await fleet.request({"id": "fb-job-1", "prompt": "Explain CAP", "task_type": "reasoning", "complexity": 8})
    assert served.success
    # the requester hears before the Result is stored: the report joins feedback to its row
    await asyncio.wait_for(result_in_ledger.wait(), 30)
    async with httpx.AsyncClient(base_url=gw.url) as http:
        # either key kind
        bearer = await http.post(
            "/v1/feedback",
            json={"job_id": "fb-job-1", "score": 5, "comment": "spot on"},
            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
        )
        api_key = await http.post(
            "/v1/feedback", json={"job_id": "fb-job-1", "score": 2.5}, headers={"x-api-key": GATEWAY_KEY}
        )
    assert bearer.status_code == api_key.status_code == 202
    assert bearer.json()["status"] == "accepted" and bearer.json()["id"].startswith("feedback-")
    # a client on NATS alone
    await fleet.js.publish(fleet.subjects.feedback, b'{"job_id": "fb-job-1", "score": 3.5}')
    await committed.wait_for(3)
    rows = await feedback_rows(own_database_url, "fb-job-1")
    assert [(r["score"], r["comment"]) for r in rows] == [(2.5, ""), (3.5, ""), (5.0, "spot on")]
    assert bearer.json()["id"] in {r["msg_id"] for r in rows}

    async with RouterAnalytics(own_database_url) as analytics:
        report = await analytics.get_model_performance_report()
    assert report[served.model]["feedback_count"] == 3
    assert report[served.model]["avg_feedback_score"] == pytest.approx((5 + 2.5 + 3.5) / 3)
    assert all(
        p["feedback_count"] == 0 and p["avg_feedback_score"] is None for m, p in report.items() if m != served.model
    )


async def test_bad_feedback_is_a_400_at_the_gateway_and_a_dead_letter_on_nats(gw):
    fleet = gw.fleet
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for body, param in (
            ({"job_id": "j", "score": 9}, "score"),
            ({"job_id": "has space", "score": 3}, "job_id"),
            ({"score": 3}, None),
        ):
            bad = await http.post("/v1/feedback", json=body, headers=auth)
            error = bad.json()["error"]
            assert bad.status_code == 400 and error["type"] == "invalid_request_error", body
            assert error["param"] == param, (body, error)
        assert (await http.post("/v1/feedback", content=b"{", headers=auth)).status_code == 400
        assert (await http.post("/v1/feedback", json={"job_id": "j", "score": 3})).status_code == 401

    dead = await fleet.js.subscribe(fleet.subjects.deadletter(fleet.subjects.feedback_stream), ordered_consumer=True)
    await fleet.js.publish(fleet.subjects.feedback, b'{"job_id": "fb-bad", "score": 0}')
    msg = await dead.next_msg(timeout=30)
    assert json.loads(msg.data) == {"job_id": "fb-bad", "score": 0}
    reason = msg.headers[DEAD_REASON_HEADER]
    assert reason.startswith("undecodable") and "$.score" in reason
    await dead.unsubscribe()


async def test_a_message_written_twice_is_one_row(own_database_url):
    note = msgspec.convert({"job_id": "fb-twice", "score": 4}, Feedback)
    conn = await asyncpg.connect(own_database_url)
    try:
        from fleet_ledger.migrate import migrate

        await migrate(conn)
        for _ in range(2):  # a redelivery: the same message id
            await write_batch(conn, [Envelope(note, 1.0, "FEEDBACK:7"), Envelope(note, 1.0, "FEEDBACK:7")])
        count = await conn.fetchval("SELECT count(*) FROM feedback WHERE job_id = 'fb-twice'")
    finally:
        await conn.close()
    assert count == 1
