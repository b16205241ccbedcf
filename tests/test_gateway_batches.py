"""The OpenAI Batch API on the gateway, through the official openai SDK and the real fleet:
files.create -> batches.create -> batches.retrieve until completed -> files.content."""

from __future__ import annotations

import asyncio
import io
import time

import asyncpg
import msgspec
import openai
import pytest

from fleet_gateway.batches import job_id_of
from tests.gateway_harness import GATEWAY_KEY, GATEWAY_KEY_NAME, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url, ack_wait_s=10.0)


def request_line(custom_id: str, text: str, model: str = "auto") -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 64}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(msgspec.json.encode(row) + b"\n" for row in rows)


async def until_ended(client: openai.AsyncOpenAI, batch_id: str, timeout_s: float = 60.0):
    """Poll as a batch client does (bounded): the batch's status is what the test observes."""
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        await asyncio.sleep(0.1)


async def test_a_batch_runs_every_line_once_and_the_output_is_in_openai_shape(settings, database_url):
    rows = [request_line(f"req-{i}", f"batch question {i}") for i in range(12)]
    rows.append(request_line("forced", "use openai", model="openai"))
    rows.append(request_line("doomed", "fail [emulate:*:error=503]"))
    async with gateway_fleet(settings) as gw:
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0, timeout=30)
        uploaded = await client.files.create(file=("input.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        again = await client.files.retrieve(uploaded.id)
        content = await client.files.content(uploaded.id)
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ended = await until_ended(client, batch.id)
        listed = await client.batches.list()
        output = (await client.files.content(ended.output_file_id)).content
        errors = (await client.files.content(ended.error_file_id)).content if ended.error_file_id else b""
        job_ids = [job_id_of(batch.id, row["custom_id"]) for row in rows]
        await gw.watch.wait_for(job_ids)
        await client.close()
        calls = sum(handle.emulator.calls["chat"] for handle in gw.emulators.values())
    conn = await asyncpg.connect(database_url)
    try:
        ledger = await conn.fetch(
            "SELECT job_id, api_key_name FROM routing_decisions WHERE job_id = ANY($1::text[])", job_ids
        )
    finally:
        await conn.close()
    assert (again.id, again.purpose, again.bytes) == (uploaded.id, "batch", len(jsonl(rows)))
    assert content.content == jsonl(rows)
    assert batch.status == "in_progress" and ended.status == "completed"
    assert ended.request_counts.total == 14 and ended.request_counts.completed == 13
    assert ended.request_counts.failed == 1
    assert batch.id in [b.id for b in listed.data]
    answered = [msgspec.json.decode(line) for line in output.splitlines()]
    failed = [msgspec.json.decode(line) for line in errors.splitlines()]
    assert [a["custom_id"] for a in answered] == [r["custom_id"] for r in rows[:-1]]  # once each, in order
    assert [f["custom_id"] for f in failed] == ["doomed"]
    for line in answered:
        assert set(line) == {"id", "custom_id", "response", "error"} and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "chat.completion"
        assert line["response"]["request_id"] == job_id_of(batch.id, line["custom_id"])
    forced = next(a for a in answered if a["custom_id"] == "forced")
    assert forced["response"]["body"]["model"] == "gpt-4o"
    assert "batch question 3" in answered[3]["response"]["body"]["choices"][0]["message"]["content"]
    assert failed[0]["response"]["status_code"] == 503
    assert failed[0]["response"]["body"]["error"]["code"] == "all_models_failed"
    assert sorted(r["job_id"] for r in ledger) == sorted(job_ids)  # one row per request
    assert {r["api_key_name"] for r in ledger} == {GATEWAY_KEY_NAME}
    models = len(gw.fleet.services["router"].policy.registry.models)
    assert calls == 13 + models  # each answered line called one model; the doomed one each model once


async def test_a_resubmitted_batch_create_never_runs_a_job_twice(settings):
    rows = [request_line(f"r{i}", f"twice {i}") for i in range(4)]
    async with gateway_fleet(settings, ledger=False) as gw:
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0, timeout=30)
        uploaded = await client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        key = {"Idempotency-Key": "batch-once"}
        first = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", extra_headers=key
        )
        second = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", extra_headers=key
        )
        ended = await until_ended(client, first.id)
        await client.close()
        calls = sum(handle.emulator.calls["chat"] for handle in gw.emulators.values())
    assert first.id == second.id and ended.request_counts.completed == 4
    assert calls == 4


async def test_bad_batch_input_gets_a_400_and_unknown_ids_a_404(settings):
    async with gateway_fleet(settings, ledger=False) as gw:
        client = openai.AsyncOpenAI(api_key=GATEWAY_KEY, base_url=gw.openai_base, max_retries=0, timeout=30)
        bad = await client.files.create(file=("bad.jsonl", io.BytesIO(b'{"custom_id": "x"}\n')), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="line 1"):
            await client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
        with pytest.raises(openai.BadRequestError, match="endpoint"):
            await client.batches.create(input_file_id=bad.id, endpoint="/v1/embeddings", completion_window="24h")
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_nope")
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve("file-nope")
        await client.close()
