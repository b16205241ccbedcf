"""Provider emulators, checked over raw HTTP: body shapes, listings, markers, auth, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import pytest

from fleet_emulators import Faults, parse_faults, running_emulator

KEY = "sk-emulator-test-0123456789"
AUTH = {
    "lmstudio": {},
    "openai": {"authorization": f"Bearer {KEY}"},
    "anthropic": {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    "gemini": {"x-goog-api-key": KEY},
}
PROVIDERS = tuple(AUTH)
OPENAI_MODEL = {"openai": "gpt-4o", "lmstudio": "qwen/qwen3-30b-a3b-2507"}


@asynccontextmanager
async def serving(provider: str, *, latency_ms: float = 0.0, timeout_s: float = 5.0):
    """An httpx client whose base URL is the emulator's (as the SDKs would take it)."""
    async with running_emulator(provider, latency_ms=latency_ms) as url:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
            yield client


def chat(provider: str, text: str, *, system: str | None = None, max_tokens: int | None = None) -> tuple[str, dict]:
    """The chat path and body for ``provider``, as its SDK would send them."""
    if provider == "gemini":
        body: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if max_tokens:
            body["generationConfig"] = {"maxOutputTokens": max_tokens}
        return "/v1beta/models/gemini-2.5-pro:generateContent", body
    if provider == "anthropic":
        body = {"model": "claude-sonnet-4-5", "max_tokens": max_tokens or 100}
        body["messages"] = [{"role": "user", "content": text}]
        if system:
            body["system"] = [{"type": "text", "text": system}]  # the block form
        return "/v1/messages", body
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    body = {"model": OPENAI_MODEL[provider], "messages": messages}
    if max_tokens:
        body["max_tokens"] = max_tokens
    return "/chat/completions", body


async def post_chat(client: httpx.AsyncClient, provider: str, text: str, *, headers=None, **kw) -> httpx.Response:
    path, body = chat(provider, text, **kw)
    return await client.post(path, json=body, headers=AUTH[provider] if headers is None else headers)


# -- success bodies ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "lmstudio"])
async def test_openai_completion_shape(provider):
    async with serving(provider) as client:
        response = await post_chat(client, provider, "Hello  world")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    body = response.json()
    model = OPENAI_MODEL[provider]
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "service_tier", "system_fingerprint"}
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == model
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": f"[{provider} emulator · {model}] Hello world",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = body["usage"]
    assert usage["prompt_tokens"] == 3 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.anyio
async def test_anthropic_message_shape():
    async with serving("anthropic") as client:
        body = (await post_chat(client, "anthropic", "Hello", max_tokens=4)).json()
    assert body["id"].startswith("msg_") and (body["type"], body["role"]) == ("message", "assistant")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [{"type": "text", "text": "[anthropic emula"}]  # 4 tokens of ~4 chars
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (2, 4)


@pytest.mark.anyio
async def test_gemini_response_shape():
    async with serving("gemini") as client:
        body = (await post_chat(client, "gemini", "Hello", system="Be kind")).json()
    candidate = body["candidates"][0]
    assert candidate == {
        "content": {"parts": [{"text": "[gemini emulator · gemini-2.5-pro] Hello"}], "role": "model"},
        "finishReason": "STOP",
        "index": 0,
    }
    usage = body["usageMetadata"]
    assert usage["promptTokenCount"] == 3
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert body["modelVersion"] == "gemini-2.5-pro"


# -- model listings -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "lmstudio"])
async def test_openai_model_listing(provider):
    async with serving(provider) as client:
        body = (await client.get("/models", headers=AUTH[provider])).json()
    assert body["object"] == "list"
    assert all(m["object"] == "model" and m["id"] and m["owned_by"] for m in body["data"])


@pytest.mark.anyio
async def test_lmstudio_native_listing():
    async with serving("lmstudio") as client:
        body = (await client.get(client.base_url.join("/api/v0/models"))).json()
    ids = [m["id"] for m in body["data"]]
    assert ids == ["qwen/qwen3-30b-a3b-2507", "mistralai/devstral-small-2507"]
    for model in body["data"]:
        assert (model["type"], model["compatibility_type"], model["state"]) == ("llm", "mlx", "loaded")
        assert model["publisher"] and model["arch"] and model["quantization"] and model["max_context_length"] > 0


@pytest.mark.anyio
async def test_anthropic_and_gemini_listings():
    async with serving("anthropic") as client:
        anthropic = (await client.get("/v1/models", headers=AUTH["anthropic"])).json()
    async with serving("gemini") as client:
        gemini = (await client.get("/v1beta/models", headers=AUTH["gemini"])).json()
    assert anthropic["has_more"] is False and anthropic["first_id"] == anthropic["data"][0]["id"]
    assert {"id", "type", "display_name", "created_at"} == set(anthropic["data"][0])
    assert "models/gemini-2.5-pro" in [m["name"] for m in gemini["models"]]
    assert all("generateContent" in m["supportedGenerationMethods"] for m in gemini["models"])


# -- markers ------------------------------------------------------------------------------


def test_parse_faults_matches_provider_and_star():
    assert parse_faults("plain prompt", "openai") == Faults()
    assert parse_faults("[emulate:openai:error=500]", "openai").error == 500
    assert parse_faults("[emulate:*:error=503]", "gemini").error == 503
    assert parse_faults("[emulate:anthropic:error=500]", "openai") == Faults()
    assert parse_faults("[emulate:lmstudio:hang]", "lmstudio").hang


def test_parse_faults_combines_markers_first_of_each_kind_wins():
    text = "a [emulate:gemini:error=401] [emulate:*:error=429] b [emulate:*:latency_ms=2000] [emulate:*:retry_after=3]"
    assert parse_faults(text, "openai") == Faults(error=429, latency_ms=2000.0, retry_after_s=3.0)
    assert parse_faults(text, "gemini") == Faults(error=401, latency_ms=2000.0, retry_after_s=3.0)


def test_parse_faults_ignores_malformed_markers():
    assert parse_faults("[emulate:openai:error=5000] [emulate:openai:boom] [emulate:OpenAI:hang]", "openai") == Faults()


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_marker_in_system_prompt_applies(provider):
    async with serving(provider) as client:
        response = await post_chat(client, provider, "hi", system=f"[emulate:{provider}:error=500]")
    assert response.status_code == 500


@pytest.mark.anyio
async def test_marker_for_another_provider_is_ignored():
    async with serving("openai") as client:
        response = await post_chat(client, "openai", "[emulate:anthropic:error=500] [emulate:gemini:hang]")
    assert response.status_code == 200


# -- error shapes -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_error_shape_and_rate_limit_headers():
    async with serving("openai") as client:
        response = await post_chat(client, "openai", "[emulate:openai:error=429]")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.anyio
async def test_anthropic_rate_limit_and_overload():
    async with serving("anthropic") as client:
        limited = await post_chat(client, "anthropic", "[emulate:*:error=429] [emulate:*:retry_after=2]")
        overloaded = await post_chat(client, "anthropic", "[emulate:anthropic:error=529]")
    assert limited.headers["retry-after"] == "2"
    datetime.fromisoformat(limited.headers["anthropic-ratelimit-requests-reset"])  # RFC 3339
    assert limited.json()["error"]["type"] == "rate_limit_error" and limited.json()["type"] == "error"
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"


@pytest.mark.anyio
async def test_gemini_rate_limit_carries_retry_info():
    async with serving("gemini") as client:
        response = await post_chat(client, "gemini", "[emulate:gemini:error=429]")
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"} in error["details"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "body"), [("anthropic", {"model": "m", "messages": []}), ("openai", b"{not json")]
)
async def test_malformed_request_is_400(provider, body):
    path, _ = chat(provider, "x")
    async with serving(provider) as client:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = await client.post(path, headers=AUTH[provider], **kwargs)
    assert response.status_code == 400


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("key", [None, "bad-0123456789abcdef"])
async def test_openai_rejects_missing_or_bad_key(key):
    async with serving("openai") as client:
        response = await post_chat(client, "openai", "hi", headers={"authorization": f"Bearer {key}"} if key else {})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "bad-0123456789abcdef" not in response.text  # the key is shown masked


@pytest.mark.anyio
@pytest.mark.parametrize("key", [None, "bad"])
async def test_anthropic_rejects_missing_or_bad_key(key):
    headers = {"anthropic-version": "2023-06-01"} | ({"x-api-key": key} if key else {})
    async with serving("anthropic") as client:
        response = await post_chat(client, "anthropic", "hi", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.anyio
async def test_anthropic_requires_a_version_header():
    async with serving("anthropic") as client:
        response = await post_chat(client, "anthropic", "hi", headers={"x-api-key": KEY})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_gemini_auth():
    async with serving("gemini") as client:
        missing = await post_chat(client, "gemini", "hi", headers={})
        bad = await post_chat(client, "gemini", "hi", headers={"x-goog-api-key": "bad-key"})
        models = await client.get("/v1beta/models", headers={"x-goog-api-key": "bad-key"})
        query_key = await client.post(chat("gemini", "hi")[0], params={"key": KEY}, json=chat("gemini", "hi")[1])
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    for rejected in (bad, models):
        error = rejected.json()["error"]
        assert (rejected.status_code, error["status"]) == (400, "INVALID_ARGUMENT")
        assert "API_KEY_INVALID" in [d.get("reason") for d in error["details"]]
    assert query_key.status_code == 200


@pytest.mark.anyio
async def test_lmstudio_needs_no_key():
    async with serving("lmstudio") as client:
        assert (await post_chat(client, "lmstudio", "hi", headers={})).status_code == 200


# -- latency and hang ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_process_and_marker_latency_add_up():
    async with serving("openai", latency_ms=30) as client:
        started = time.perf_counter()
        response = await post_chat(client, "openai", "[emulate:openai:latency_ms=40]")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200 and elapsed >= 0.07


@pytest.mark.anyio
async def test_hang_never_answers():
    async with serving("anthropic", timeout_s=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post_chat(client, "anthropic", "[emulate:*:hang]")


# -- the CLI ------------------------------------------------------------------------------


def test_cli_serves_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet_emulators", "--provider", "openai", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline().strip()  # printed once the socket is listening
        assert line.startswith("emulator openai listening on http://127.0.0.1:") and line.endswith("/v1")
        url = line.rsplit(" ", 1)[1]
        response = httpx.post(f"{url}/chat/completions", headers=AUTH["openai"], json=chat("openai", "hi")[1])
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.stdout.close()


def test_the_emulator_process_keeps_the_collector_off_requests_it_holds():
    import gc

    from fleet_emulators.__main__ import GEN0_THRESHOLD, tune_gc

    before = gc.get_threshold()
    tune_gc()
    try:
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
