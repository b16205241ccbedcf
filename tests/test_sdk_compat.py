"""The emulators, proven against the official SDKs (``openai``, ``anthropic``,
``google-genai``) pointed at each emulator's base URL: every success and stream parses, and
every error class raises the SDK's own exception class for it."""

from __future__ import annotations

from contextlib import asynccontextmanager

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from fleet_emulators import running_emulator

pytestmark = [
    pytest.mark.anyio,
    # google-genai subclasses aiohttp's ClientSession, which aiohttp discourages (not ours to fix)
    pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning"),
]

KEY = "sk-sdk-compat-5e6f7a8b9c0d"
BAD_KEY = "bad-key-5e6f7a8b9c0d1e2f"
PROMPT = "Write a haiku about queues and give it a title please"
TIMEOUT_S = 1.0


# -- OpenAI (and LM Studio, the same protocol) ---------------------------------------------

OPENAI_MODELS = {"openai": "gpt-4o", "lmstudio": "qwen/qwen3-30b-a3b-2507"}


@asynccontextmanager
async def openai_client(provider: str = "openai", key: str = KEY):
    async with running_emulator(provider) as url:
        client = openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0, timeout=TIMEOUT_S)
        try:
            yield client
        finally:
            await client.close()


def chat_args(provider: str, text: str = PROMPT, **kw) -> dict:
    return {"model": OPENAI_MODELS[provider], "messages": [{"role": "user", "content": text}], **kw}


@pytest.mark.parametrize("provider", ["openai", "lmstudio"])
async def test_openai_sdk_success_stream_and_models(provider):
    async with openai_client(provider) as client:
        completion = await client.chat.completions.create(**chat_args(provider))
        stream = await client.chat.completions.create(
            **chat_args(provider), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        models = await client.models.list()
    assert completion.choices[0].finish_reason == "stop" and completion.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens
    assert OPENAI_MODELS[provider] in [m.id for m in models.data]


@pytest.mark.parametrize(
    ("marker", "exc"),
    [
        ("error=400", openai.BadRequestError),
        ("error=401", openai.AuthenticationError),
        ("error=403", openai.PermissionDeniedError),
        ("error=404", openai.NotFoundError),
        ("error=429", openai.RateLimitError),
        ("error=500", openai.InternalServerError),
        ("error=503", openai.InternalServerError),
        ("fault=context_length", openai.BadRequestError),
        ("hang", openai.APITimeoutError),
    ],
)
async def test_openai_sdk_errors(marker, exc):
    async with openai_client() as client:
        with pytest.raises(exc) as info:
            await client.chat.completions.create(**chat_args("openai", f"hi [emulate:openai:{marker}]"))
    if marker == "fault=context_length":
        assert info.value.code == "context_length_exceeded"
    if marker == "error=429":
        assert info.value.response.headers["retry-after"] == "1"


async def test_openai_sdk_bad_key():
    async with openai_client(key=BAD_KEY) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(**chat_args("openai"))
    assert info.value.code == "invalid_api_key" and BAD_KEY not in str(info.value)


async def test_openai_sdk_finish_reasons_raise_in_parse():
    async with openai_client() as client:
        with pytest.raises(openai.ContentFilterFinishReasonError):
            await client.chat.completions.parse(**chat_args("openai", "x [emulate:openai:fault=content_filter]"))
        with pytest.raises(openai.LengthFinishReasonError):
            await client.chat.completions.parse(**chat_args("openai", PROMPT, max_completion_tokens=2))


@pytest.mark.parametrize(
    ("fault", "exc"),
    [("stream_error", openai.APIError), ("cut", openai.APIConnectionError), ("stall", openai.APITimeoutError)],
)
async def test_openai_sdk_stream_faults(fault, exc):
    async with openai_client() as client:
        with pytest.raises(exc):
            stream = await client.chat.completions.create(
                **chat_args("openai", f"{PROMPT} [emulate:openai:fault={fault}]"), stream=True
            )
            async for _ in stream:
                pass


# -- Anthropic -----------------------------------------------------------------------------


ANTHROPIC_MODEL = "claude-sonnet-4-6"


@asynccontextmanager
async def anthropic_client(key: str = KEY):
    async with running_emulator("anthropic") as url:
        client = anthropic.AsyncAnthropic(api_key=key, base_url=url, max_retries=0, timeout=TIMEOUT_S)
        try:
            yield client
        finally:
            await client.close()


def message_args(text: str = PROMPT, **kw) -> dict:
    # the SDK warns on models past their deprecation date; the emulator answers for any model
    return {
        "model": ANTHROPIC_MODEL,
        "max_tokens": kw.pop("max_tokens", 200),
        "messages": [{"role": "user", "content": text}],
        **kw,
    }


async def test_anthropic_sdk_success_stream_and_models():
    async with anthropic_client() as client:
        message = await client.messages.create(**message_args())
        async with client.messages.stream(**message_args()) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        models = await client.models.list()
    assert message.stop_reason == "end_turn" and message.content[0].text
    assert "".join(pieces) == message.content[0].text == final.content[0].text
    assert final.usage.output_tokens == message.usage.output_tokens and final.stop_reason == "end_turn"
    assert any(m.id.startswith("claude-sonnet-4") for m in models.data)


async def test_anthropic_sdk_refusal_and_truncation_parse():
    async with anthropic_client() as client:
        refused = await client.messages.create(**message_args("x [emulate:anthropic:fault=content_filter]"))
        cut = await client.messages.create(**message_args(max_tokens=2))
    assert refused.stop_reason == "refusal" and refused.content == []
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


@pytest.mark.parametrize(
    ("marker", "exc"),
    [
        ("error=400", anthropic.BadRequestError),
        ("error=401", anthropic.AuthenticationError),
        ("error=403", anthropic.PermissionDeniedError),
        ("error=404", anthropic.NotFoundError),
        ("error=429", anthropic.RateLimitError),
        ("error=500", anthropic.InternalServerError),
        ("error=503", anthropic.ServiceUnavailableError),
        ("error=529", anthropic.OverloadedError),
        ("fault=context_length", anthropic.BadRequestError),
        ("hang", anthropic.APITimeoutError),
    ],
)
async def test_anthropic_sdk_errors(marker, exc):
    async with anthropic_client() as client:
        with pytest.raises(exc) as info:
            await client.messages.create(**message_args(f"hi [emulate:anthropic:{marker}]"))
    if marker == "error=529":
        assert info.value.type == "overloaded_error"
    if marker == "fault=context_length":
        assert "prompt is too long" in info.value.api_message


async def test_anthropic_sdk_bad_key():
    async with anthropic_client(key=BAD_KEY) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(**message_args())


# The Anthropic SDK (2.17, the locked version) wraps a transport failure during stream
# iteration as it does one before the response starts: a cut body is a connection error,
# a stalled one a timeout (APITimeoutError), against the real API as here.
@pytest.mark.parametrize(
    ("fault", "exc"),
    [
        ("stream_error", anthropic.APIStatusError),
        ("cut", anthropic.APIConnectionError),
        ("stall", anthropic.APITimeoutError),
    ],
)
async def test_anthropic_sdk_stream_faults(fault, exc):
    async with anthropic_client() as client:
        with pytest.raises(exc) as info:
            async with client.messages.stream(**message_args(f"{PROMPT} [emulate:anthropic:fault={fault}]")) as stream:
                async for _ in stream.text_stream:
                    pass
    if fault == "stream_error":
        assert info.value.type == "overloaded_error"


# -- Gemini --------------------------------------------------------------------------------


@asynccontextmanager
async def gemini_client(key: str = KEY):
    async with running_emulator("gemini") as url:
        options = genai_types.HttpOptions(base_url=url, timeout=int(TIMEOUT_S * 1000))
        client = genai.Client(api_key=key, http_options=options)
        try:
            yield client.aio
        finally:
            await client.aio.aclose()


async def test_gemini_sdk_success_stream_and_models():
    async with gemini_client() as client:
        response = await client.models.generate_content(model="gemini-2.5-pro", contents=PROMPT)
        chunks = [c async for c in await client.models.generate_content_stream(model="gemini-2.5-pro", contents=PROMPT)]
        pager = await client.models.list()
        names = [m.name async for m in pager]
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert "".join(c.text or "" for c in chunks) == response.text
    assert chunks[-1].usage_metadata.candidates_token_count == response.usage_metadata.candidates_token_count
    assert "models/gemini-2.5-pro" in names


async def test_gemini_sdk_safety_block_and_truncation_parse():
    async with gemini_client() as client:
        unsafe = await client.models.generate_content(
            model="gemini-2.5-pro", contents="x [emulate:gemini:fault=content_filter]"
        )
        blocked = await client.models.generate_content(
            model="gemini-2.5-pro", contents="x [emulate:gemini:fault=blocked]"
        )
        cut = await client.models.generate_content(
            model="gemini-2.5-pro", contents=PROMPT, config=genai_types.GenerateContentConfig(max_output_tokens=2)
        )
    assert unsafe.candidates[0].finish_reason == genai_types.FinishReason.SAFETY and unsafe.text is None
    assert blocked.prompt_feedback.block_reason == genai_types.BlockedReason.SAFETY
    assert cut.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS


@pytest.mark.parametrize(
    ("marker", "exc", "status"),
    [
        ("error=400", genai_errors.ClientError, "INVALID_ARGUMENT"),
        ("error=403", genai_errors.ClientError, "PERMISSION_DENIED"),
        ("error=404", genai_errors.ClientError, "NOT_FOUND"),
        ("error=429", genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
        ("error=500", genai_errors.ServerError, "INTERNAL"),
        ("error=503", genai_errors.ServerError, "UNAVAILABLE"),
        ("fault=context_length", genai_errors.ClientError, "INVALID_ARGUMENT"),
    ],
)
async def test_gemini_sdk_errors(marker, exc, status):
    async with gemini_client() as client:
        with pytest.raises(exc) as info:
            await client.models.generate_content(model="gemini-2.5-pro", contents=f"hi [emulate:gemini:{marker}]")
    assert info.value.status == status
    if marker == "error=429":
        assert any("RetryInfo" in d.get("@type", "") for d in info.value.details["error"]["details"])


async def test_gemini_sdk_bad_key_is_400_api_key_invalid():
    async with gemini_client(key=BAD_KEY) as client:
        with pytest.raises(genai_errors.ClientError) as info:
            await client.models.generate_content(model="gemini-2.5-pro", contents=PROMPT)
    assert info.value.code == 400 and "API_KEY_INVALID" in str(info.value.details)


async def test_gemini_sdk_midstream_error():
    async with gemini_client() as client:
        with pytest.raises(genai_errors.ServerError) as info:
            stream = await client.models.generate_content_stream(
                model="gemini-2.5-pro", contents=f"{PROMPT} [emulate:gemini:fault=stream_error]"
            )
            async for _ in stream:
                pass
    assert info.value.status == "UNAVAILABLE"
