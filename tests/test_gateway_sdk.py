"""The official ``openai`` and ``anthropic`` SDKs against the gateway, through the real
fleet (nats-server, PostgreSQL, the provider emulators): every answer parses, names the
model that answered, and carries the router's headers."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.gateway_harness import GATEWAY_KEY, GATEWAY_KEY_NAME, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0)


def openai_client(gw, key: str = GATEWAY_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=gw.openai_base, max_retries=0, timeout=30.0)


def anthropic_client(gw, key: str = GATEWAY_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=key, base_url=gw.url, max_retries=0, timeout=30.0)


async def test_openai_chat_forced_model_answers_with_router_headers(settings):
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello gateway"}],
            max_tokens=200,
            temperature=0.2,
        )
        completion = raw.parse()
        await client.close()
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.content.startswith("[openai emulator · gpt-4o] hello gateway")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert raw.headers["x-router-model"] == "openai" and raw.headers["x-router-provider"] == "openai"
    assert raw.headers["x-router-attempts"] == "1"
    assert float(raw.headers["x-router-cost-usd"]) > 0
    assert "forced" in raw.headers["x-router-reasoning"]
    assert completion.id == f"chatcmpl-{raw.headers['x-request-id']}"


async def test_openai_auto_lets_the_router_choose_with_hints(settings):
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "prove it"}],
            extra_headers={"x-router-task-type": "reasoning", "x-router-complexity": "8"},
        )
        completion = raw.parse()
        await client.close()
    assert raw.headers["x-router-model"] == "claude"
    assert completion.model == "claude-sonnet-4-6"
    assert "complexity 8" in raw.headers["x-router-reasoning"]


async def test_openai_stream_ends_with_done_and_usage(settings):
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        stream = await client.chat.completions.create(
            model="openai",
            messages=[{"role": "user", "content": "stream me a longer answer about queues and routers please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[openai emulator · gpt-4o] stream me a longer answer")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {"gpt-4o"}


async def test_openai_models_and_responses_api(settings):
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        models = [m.id for m in (await client.models.list()).data]
        one = await client.models.retrieve("claude-sonnet-4-6")
        response = await client.responses.create(
            model="claude", instructions="Answer briefly.", input="what is a router?", max_output_tokens=300
        )
        stream = await client.responses.create(model="claude", input="stream a response please", stream=True)
        events = [event async for event in stream]
        await client.close()
    assert {"auto", "claude", "openai", "gpt-4o", "claude-sonnet-4-6"} <= set(models)
    assert one.id == "claude-sonnet-4-6" and one.owned_by == "anthropic"
    assert response.status == "completed" and response.model == "claude-sonnet-4-6"
    assert response.output_text.startswith("[anthropic emulator · claude-sonnet-4-6] what is a router?")
    assert response.usage.output_tokens > 0
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_anthropic_messages_stream_and_count_tokens(settings):
    async with gateway_fleet(settings) as gw:
        client = anthropic_client(gw)
        message = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=300,
            system="Be brief.",
            messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
        )
        async with client.messages.stream(
            model="claude", max_tokens=300, messages=[{"role": "user", "content": "stream it through the gateway"}]
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        counted = await client.messages.count_tokens(
            model="claude", messages=[{"role": "user", "content": "count these tokens for me please"}]
        )
        await client.close()
    assert message.model == "claude-sonnet-4-6" and message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("[anthropic emulator · claude-sonnet-4-6] hello from the anthropic sdk")
    assert message.usage.output_tokens > 0
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text.startswith("[anthropic emulator · claude-sonnet-4-6] stream it through")
    assert final.stop_reason == "end_turn"
    assert counted.input_tokens > 0


async def test_anthropic_tool_use_and_tool_result_blocks_travel_as_text(settings):
    async with gateway_fleet(settings) as gw:
        client = anthropic_client(gw)
        message = await client.messages.create(
            model="claude",
            max_tokens=300,
            messages=[
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 C"}],
                },
            ],
        )
        await client.close()
    assert "[tool result toolu_1] sunny, 21 C" in message.content[0].text


async def test_http_job_is_in_the_ledger_once_with_the_key_name(settings, database_url):
    import asyncpg

    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        raw = await client.chat.completions.with_raw_response.create(
            model="openai",
            messages=[{"role": "user", "content": "ledger me"}],
            extra_headers={"Idempotency-Key": "ledger-once-1"},
        )
        again = await client.chat.completions.with_raw_response.create(
            model="openai",
            messages=[{"role": "user", "content": "ledger me"}],
            extra_headers={"Idempotency-Key": "ledger-once-1"},
        )
        await client.close()
        await gw.watch.wait_for(["ledger-once-1"])
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT job_id, selected_model, success, api_key_name FROM routing_decisions WHERE job_id = $1",
                "ledger-once-1",
            )
        finally:
            await conn.close()
    assert raw.headers["x-request-id"] == again.headers["x-request-id"] == "ledger-once-1"
    assert raw.parse().choices[0].message.content == again.parse().choices[0].message.content
    assert len(rows) == 1 and rows[0]["success"] and rows[0]["selected_model"] == "openai"
    assert rows[0]["api_key_name"] == GATEWAY_KEY_NAME
    assert gw.emulators["openai"].emulator.calls["chat"] == 1  # the retry did not run the job again
