"""Tools, tool choice and JSON answers through the gateway, with the official SDKs, through
the real fleet: each provider's adapter sends them in its wire form, each emulator answers
a tool call (or JSON) in its provider's exact shape, and the gateway maps it back."""

from __future__ import annotations

import json

import pytest

from tests.gateway_harness import gateway_fleet
from tests.test_gateway_sdk import anthropic_client, openai_client

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0)


@pytest.mark.parametrize(
    "model,answered_by",
    [("gpt-4o", "openai"), ("local_mlx", "local_mlx"), ("gemini", "gemini"), ("claude", "claude")],
)
async def test_openai_tool_call_then_tool_result_follow_up(settings, model, answered_by):
    question = {"role": "user", "content": "Use get_weather: what is the weather in Paris?"}
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[question], tools=[WEATHER], tool_choice="auto", seed=7, top_p=0.9, stop=["\n\n"]
        )
        first = raw.parse()
        call = first.choices[0].message.tool_calls[0]
        follow_up = await client.chat.completions.create(
            model=model,
            tools=[WEATHER],
            messages=[
                question,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
            ],
        )
        await client.close()
    assert raw.headers["x-router-model"] == answered_by
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "emulated", "unit": "c"}
    assert follow_up.choices[0].finish_reason == "stop" and not follow_up.choices[0].message.tool_calls
    assert follow_up.choices[0].message.content.endswith("sunny, 21 C")


async def test_openai_streamed_tool_call_and_forced_tool_choice(settings):
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        stream = await client.chat.completions.create(
            model="openai",
            messages=[{"role": "user", "content": "what is the weather in Oslo?"}],  # names no tool
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
        chunks = [c async for c in stream]
        plain = await client.chat.completions.create(
            model="openai", messages=[{"role": "user", "content": "what is the weather in Oslo?"}], tools=[WEATHER]
        )
        await client.close()
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert calls and calls[0].function.name == "get_weather" and calls[0].id
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "emulated", "unit": "c"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert plain.choices[0].finish_reason == "stop"  # auto, and the prompt names no tool: text
    assert not plain.choices[0].message.tool_calls


async def test_openai_json_schema_and_json_object(settings):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    async with gateway_fleet(settings) as gw:
        client = openai_client(gw)
        structured = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "describe a person"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema, "strict": True},
            },
        )
        loose = await client.chat.completions.create(
            model="local_mlx",
            messages=[{"role": "user", "content": "answer in JSON"}],
            response_format={"type": "json_object"},
        )
        with pytest.raises(Exception) as refused:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
                response_format={"type": "xml"},
            )
        await client.close()
    person = json.loads(structured.choices[0].message.content)
    assert set(person) == {"name", "age", "tags"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int) and isinstance(person["tags"], list)
    assert json.loads(loose.choices[0].message.content)["answer"].startswith("[lmstudio emulator")
    assert getattr(refused.value, "status_code", None) == 400


async def test_anthropic_tool_use_blocks_plain_and_streamed(settings):
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    question = {"role": "user", "content": "What is the weather in Paris? call get_weather"}
    async with gateway_fleet(settings) as gw:
        client = anthropic_client(gw)
        message = await client.messages.create(model="claude", max_tokens=300, tools=[tool], messages=[question])
        use = next(b for b in message.content if b.type == "tool_use")
        answer = await client.messages.create(
            model="claude",
            max_tokens=300,
            tools=[tool],
            messages=[
                question,
                {"role": "assistant", "content": [use.model_dump()]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
            ],
        )
        async with client.messages.stream(
            model="openai",
            max_tokens=300,
            tools=[tool],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "weather?"}],
        ) as stream:
            final = await stream.get_final_message()
        await client.close()
    assert message.stop_reason == "tool_use" and message.model == "claude-sonnet-4-6"
    assert use.name == "get_weather" and use.input == {"city": "emulated"} and use.id
    assert answer.stop_reason == "end_turn" and answer.content[0].text.endswith("sunny, 21 C")
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and final.model == "gpt-4o"
    assert streamed[0].name == "get_weather" and streamed[0].input == {"city": "emulated"}
