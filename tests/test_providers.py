"""Provider adapters: against their emulators over loopback HTTP, and against MockTransport.

The emulator tests prove each adapter speaks its provider's real protocol (the emulators
check auth headers and body shapes as the real APIs do); the MockTransport cases cover the
failures an emulator does not produce. ``test_every_error_class_is_produced`` keeps the
two tables honest: every code in ERROR_CLASSES must come out of at least one case. What the
adapters send and how they read rich success bodies: test_provider_requests.py.
"""

from __future__ import annotations

import email.utils
import time
from contextlib import asynccontextmanager

import httpx
import pytest

from fleet_emulators import running_emulator
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.schema import ChatMessage
from fleet_shared.subjects import PROVIDERS
from fleet_workers.providers import ERROR_CLASSES, ProviderError, ProviderRequest, make_adapter
from fleet_workers.service import http_client
from tests.provider_mocks import KEY, MODELS, mock_adapter, openai_choice, raise_, respond

STOP = {"lmstudio": "stop", "openai": "stop", "anthropic": "end_turn", "gemini": "STOP"}
TRUNCATED = {"lmstudio": "length", "openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}
KEYED = ("openai", "anthropic", "gemini")  # LM Studio takes any key, or none

#: marker -> error class, for every provider's emulator
EMULATOR_FAULTS = [
    ("error=500", "server_error"),
    ("error=429", "rate_limited"),
    ("error=529", "overloaded"),
    ("error=503", "overloaded"),
    ("error=401", "auth"),
    ("error=400", "invalid_request"),
    ("hang", "timeout"),
]


def ask(provider: str, text: str, **fields) -> ProviderRequest:
    return ProviderRequest(model=MODELS[provider], messages=[ChatMessage("user", text)], **fields)


def tokens(chars: int) -> int:
    return max(1, (chars + 3) // 4)  # the emulators' estimate


@asynccontextmanager
async def emulated(provider: str, *, key: str | None = KEY, timeout_s: float = 5.0, lean: bool = False):
    """The provider's adapter against its emulator; ``lean``: over the worker's own client
    (httpx's API on aiohttp, whose whole answers skip httpx's objects), else plain httpx."""
    async with running_emulator(provider) as url:
        endpoint = ProviderEndpoint(provider, url, Secret(key) if key else None)
        client = http_client(Settings(), timeout_s=timeout_s) if lean else httpx.AsyncClient(timeout=timeout_s)
        adapter = make_adapter(provider, endpoint, client)
        try:
            yield adapter
        finally:
            await adapter.aclose()


async def failure(adapter, request: ProviderRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await adapter.call(request)
    assert KEY not in str(info.value) and KEY not in info.value.message
    return info.value


# -- against the emulators --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("lean", [False, True], ids=["httpx", "worker_client"])
async def test_success(provider, lean):
    async with emulated(provider, lean=lean) as adapter:
        reply = await adapter.call(ask(provider, "Say   hello", system="Be brief.", temperature=0.2))
    expected = f"[{provider} emulator · {MODELS[provider]}] Say hello"
    assert reply.content == expected
    assert reply.tokens_in == tokens(len("Be brief.") + len("Say   hello"))  # the system prompt arrived
    assert reply.tokens_out == tokens(len(expected))
    assert reply.finish_reason == STOP[provider]
    assert reply.provider_model == MODELS[provider]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_providers_own_time_when_it_reports_one(provider):
    # OpenAI sends openai-processing-ms on every answer; LM Studio, Anthropic and Gemini do not
    async with emulated(provider) as adapter:
        reply = await adapter.call(ask(provider, "hello [emulate:*:latency_ms=20]"))
        streamed = await adapter.call(ask(provider, "hello [emulate:*:latency_ms=20]", stream=True))
    for r in (reply, streamed):
        if provider == "openai":
            assert r.provider_ms is not None and 20 <= r.provider_ms < 5000
        else:
            assert r.provider_ms is None


@pytest.mark.anyio
async def test_lmstudio_emulator_reports_its_own_time_when_asked():
    async with running_emulator("lmstudio", report_processing_ms=True) as url:
        adapter = make_adapter("lmstudio", ProviderEndpoint("lmstudio", url, None), httpx.AsyncClient())
        try:
            reply = await adapter.call(ask("lmstudio", "hello"))
        finally:
            await adapter.aclose()
    assert reply.provider_ms is not None and reply.provider_ms >= 0


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_truncation_reports_the_providers_finish_reason(provider):
    async with emulated(provider) as adapter:
        reply = await adapter.call(ask(provider, "a long enough prompt to be cut", max_tokens=3))
    assert reply.finish_reason == TRUNCATED[provider]
    assert reply.tokens_out == 3
    assert reply.content == f"[{provider} emulator · {MODELS[provider]}]"[:12]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("marker", "code"), EMULATOR_FAULTS)
@pytest.mark.parametrize("lean", [False, True], ids=["httpx", "worker_client"])
async def test_fault_marker_gives_error_class(provider, marker, code, lean):
    async with emulated(provider, timeout_s=0.3, lean=lean) as adapter:
        error = await failure(adapter, ask(provider, f"hi [emulate:{provider}:{marker}]"))
    assert error.code == code
    if marker.startswith("error="):
        assert error.status == int(marker.removeprefix("error="))
    if code == "rate_limited":
        assert error.retry_after_s == 1.0  # header, or Gemini's RetryInfo


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("lean", [False, True], ids=["httpx", "worker_client"])
async def test_marker_in_system_prompt_and_custom_retry_after(provider, lean):
    async with emulated(provider, lean=lean) as adapter:
        error = await failure(adapter, ask(provider, "hi", system="[emulate:*:error=429] [emulate:*:retry_after=2.5]"))
    assert (error.code, error.retry_after_s) == ("rate_limited", 2.5)


@pytest.mark.anyio
@pytest.mark.parametrize("provider", KEYED)
@pytest.mark.parametrize("key", ["bad-key-0123456789abcdef", None])
@pytest.mark.parametrize("lean", [False, True], ids=["httpx", "worker_client"])
async def test_bad_or_missing_key_is_auth(provider, key, lean):
    async with emulated(provider, key=key, lean=lean) as adapter:
        with pytest.raises(ProviderError) as info:
            await adapter.call(ask(provider, "hi"))
    assert info.value.code == "auth"
    assert "bad-key-0123456789abcdef" not in str(info.value)


@pytest.mark.anyio
async def test_lmstudio_needs_no_key():
    async with emulated("lmstudio", key=None) as adapter:
        reply = await adapter.call(ask("lmstudio", "hi"))
    assert reply.finish_reason == "stop"


@pytest.mark.anyio
async def test_connection_refused_on_a_closed_port():
    async with running_emulator("openai") as url:
        pass  # the port is closed again once the block exits
    adapter = make_adapter("openai", ProviderEndpoint("openai", url, Secret(KEY)), httpx.AsyncClient(timeout=2.0))
    error = await failure(adapter, ask("openai", "hi"))
    await adapter.aclose()
    assert error.code == "connection"


# -- MockTransport: failures the emulators do not produce ----------------------------


def openai_error(message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def gemini_error(status: int, code: str, message: str, *details: dict) -> dict:
    return {"error": {"code": status, "message": message, "status": code, "details": list(details)}}


def case(case_id: str, provider: str, handler, code: str, retry_after_s: float | None = None):
    return pytest.param(provider, handler, code, retry_after_s, id=case_id)


ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
CONTEXT_MESSAGES = {
    "openai": openai_error("This model's maximum context length is 128000 tokens.", "context_length_exceeded"),
    "anthropic": anthropic_error("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    "gemini": gemini_error(
        400,
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ),
}

MOCK_CASES = [
    case("connect", "openai", raise_(httpx.ConnectError("[Errno 111] Connection refused")), "connection"),
    case("protocol", "gemini", raise_(httpx.RemoteProtocolError("peer closed")), "connection"),
    case("read-timeout", "anthropic", raise_(httpx.ReadTimeout("timed out")), "timeout"),
    case("not-json", "openai", respond(200, b"<html>proxy page</html>"), "bad_response"),
    case("no-choices", "openai", respond(200, {"choices": []}), "bad_response"),
    case("wrong-shape", "anthropic", respond(200, {"content": "text", "usage": {}}), "bad_response"),
    case("no-candidates", "gemini", respond(200, {"modelVersion": "x"}), "bad_response"),
    *(case(f"{p}-context", p, respond(400, body), "context_length") for p, body in CONTEXT_MESSAGES.items()),
    case(
        "gemini-key-invalid",
        "gemini",
        respond(400, gemini_error(400, "INVALID_ARGUMENT", "no", {"@type": ERROR_INFO, "reason": "API_KEY_INVALID"})),
        "auth",
    ),
    case(
        "gemini-retryinfo",
        "gemini",
        respond(429, gemini_error(429, "RESOURCE_EXHAUSTED", "quota", {"@type": RETRY_INFO, "retryDelay": "7s"})),
        "rate_limited",
        7.0,
    ),
    case(
        "retry-after-ms",
        "openai",
        respond(429, openai_error("slow down"), {"retry-after-ms": "1500", "retry-after": "2"}),
        "rate_limited",
        1.5,
    ),
    case("anthropic-529", "anthropic", respond(529, anthropic_error("overloaded_error", "Overloaded")), "overloaded"),
    case("html-502", "openai", respond(502, b"<html>Bad gateway</html>"), "server_error"),
    case("404", "openai", respond(404, openai_error("no such model", "model_not_found")), "invalid_request"),
    case("lmstudio-string-error", "lmstudio", respond(400, {"error": "Model not loaded"}), "invalid_request"),
    case("openai-400-filter", "openai", respond(400, openai_error("flagged", "content_filter")), "content_filtered"),
    case("openai-finish-filter", "openai", respond(200, openai_choice("content_filter", None)), "content_filtered"),
    case("openai-refusal", "openai", respond(200, openai_choice("stop", None, refusal="I can't.")), "content_filtered"),
    case(
        "anthropic-refusal",
        "anthropic",
        respond(200, {"content": [], "usage": {"input_tokens": 1, "output_tokens": 0}, "stop_reason": "refusal"}),
        "content_filtered",
    ),
    case("gemini-safety", "gemini", respond(200, {"candidates": [{"finishReason": "SAFETY"}]}), "content_filtered"),
    case("gemini-blocked", "gemini", respond(200, {"promptFeedback": {"blockReason": "OTHER"}}), "content_filtered"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "handler", "code", "retry_after_s"), MOCK_CASES)
async def test_error_mapping(provider, handler, code, retry_after_s):
    adapter = mock_adapter(provider, handler)
    error = await failure(adapter, ask(provider, "hi"))
    await adapter.aclose()
    assert error.code == code
    assert error.retry_after_s == retry_after_s
    if code in ("timeout", "connection"):
        assert isinstance(error.__cause__, httpx.TransportError)  # raised `from` the original


@pytest.mark.anyio
async def test_retry_after_as_http_date():
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    handler = respond(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": when})
    adapter = mock_adapter("anthropic", handler)
    error = await failure(adapter, ask("anthropic", "hi"))
    assert error.code == "rate_limited"
    assert 60 < error.retry_after_s <= 120


@pytest.mark.anyio
async def test_a_key_echoed_by_the_provider_is_redacted():
    echoed = openai_error(f"Incorrect API key provided: {KEY}.", "invalid_api_key")
    adapter = mock_adapter("openai", respond(401, echoed))
    error = await failure(adapter, ask("openai", "hi"))
    assert error.code == "auth" and "***" in error.message


def test_every_error_class_is_produced():
    covered = {code for _, code in EMULATOR_FAULTS} | {case.values[2] for case in MOCK_CASES}
    assert covered == set(ERROR_CLASSES)
