"""The aiohttp transport behind the workers' httpx client: every aiohttp failure maps to the
httpx exception an httpcore transport would raise, and the lean client keeps httpx's API."""

from __future__ import annotations

import contextlib
import gzip
import json

import aiohttp
import httpx
import pytest
import yarl
from aiohttp import web

from fleet_emulators import running_emulator
from fleet_shared.config import ProviderEndpoint, Secret, Settings
from fleet_shared.schema import ChatMessage
from fleet_workers.providers import ProviderError, ProviderRequest, make_adapter
from fleet_workers.service import http_client
from fleet_workers.transport import AiohttpTransport, LeanAsyncClient, map_aiohttp_errors

REQUEST = httpx.Request("GET", "http://127.0.0.1:9/")
URL = yarl.URL("http://127.0.0.1:9/")
KEY = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError("slow"), httpx.ReadTimeout),
        (aiohttp.ClientConnectorError(KEY, OSError(111, "refused")), httpx.ConnectError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.ClientConnectionError("gone"), httpx.NetworkError),
        (
            aiohttp.ClientResponseError(aiohttp.RequestInfo(URL, "GET", {}, URL), (), status=400, message="bad line"),
            httpx.RemoteProtocolError,
        ),
    ],
)
def test_every_aiohttp_failure_maps_to_httpx(raised, expected):
    with pytest.raises(expected) as info, map_aiohttp_errors(REQUEST):
        raise raised
    assert type(info.value) is expected and info.value.__cause__ is raised


def test_timeouts_while_connecting():
    with pytest.raises(httpx.ConnectTimeout), map_aiohttp_errors(REQUEST, connecting=True):
        raise aiohttp.ConnectionTimeoutError("connect")
    with pytest.raises(httpx.PoolTimeout), map_aiohttp_errors(REQUEST, connecting=True):
        raise TimeoutError()


@pytest.mark.anyio
async def test_lean_client_get_post_stream_and_timeouts():
    async with running_emulator("openai", latency_ms=0) as url:
        client = LeanAsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(0.5))
        listing = await client.get(f"{url}/models", headers={"authorization": "Bearer sk-x"})
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with client.stream(
            "POST", f"{url}/chat/completions", json=body, headers={"authorization": "Bearer sk-x"}
        ) as streamed:
            lines = [line async for line in streamed.aiter_lines() if line]
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                f"{url}/chat/completions",
                json={**body, "messages": [{"role": "user", "content": "[emulate:openai:hang]"}]},
                headers={"authorization": "Bearer sk-x"},
            )
        await client.aclose()
    assert listing.status_code == 200 and listing.json()["object"] == "list"
    assert lines[-1] == "data: [DONE]"


@pytest.mark.anyio
async def test_connection_refused_is_connect_error():
    async with running_emulator("openai") as url:
        pass
    client = LeanAsyncClient(transport=AiohttpTransport(), timeout=2.0)
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{url}/models")
    await client.aclose()


@pytest.mark.anyio
async def test_provider_call_benchmark_runs():
    from fleet_bench.worker_calls import provider_calls_per_s

    report = await provider_calls_per_s(concurrency=4, duration_s=0.3)
    assert report["provider_calls"] > 0 and report["provider_calls_errors"] == 0
    assert report["reference_raw_aiohttp_calls_per_s"] > 0


# -- the worker's lean path (post_json without httpx objects) ---------------------------


@contextlib.asynccontextmanager
async def provider_answering(status: int, headers: dict[str, str], body: bytes):
    """A loopback HTTP server answering every POST with ``status``, ``headers`` and ``body``."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


COMPLETION = {
    "model": "m",
    "choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
}
REQUEST_OF_ONE = ProviderRequest(model="m", messages=[ChatMessage("user", "hi")])


@pytest.mark.anyio
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_the_workers_client_reads_a_success_and_its_spent_rate_limit(compressed):
    body = json.dumps(COMPLETION).encode()
    headers = {"content-type": "application/json", "x-ratelimit-remaining-requests": "0"}
    headers["X-RateLimit-Reset-Requests"] = "3s"  # names are case-insensitive
    if compressed:
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    async with provider_answering(200, headers, body) as url:
        client = http_client(Settings(), timeout_s=2.0)
        adapter = make_adapter("openai", ProviderEndpoint("openai", url, Secret("sk-test")), client)
        assert isinstance(client, LeanAsyncClient) and client.aiohttp_transport is not None
        try:
            reply = await adapter.call(REQUEST_OF_ONE)
        finally:
            await adapter.aclose()
    assert (reply.content, reply.tokens_in, reply.tokens_out) == ("hello", 3, 2)
    assert reply.limit_reset_s == 3.0


@pytest.mark.anyio
async def test_the_workers_client_classifies_an_error_answer():
    body = json.dumps({"error": {"type": "rate_limit_error", "message": "slow down sk-test"}}).encode()
    async with provider_answering(429, {"retry-after": "2", "content-type": "application/json"}, body) as url:
        client = http_client(Settings(), timeout_s=2.0)
        adapter = make_adapter("openai", ProviderEndpoint("openai", url, Secret("sk-test")), client)
        try:
            with pytest.raises(ProviderError) as info:
                await adapter.call(REQUEST_OF_ONE)
        finally:
            await adapter.aclose()
    error = info.value
    assert (error.code, error.status, error.retry_after_s) == ("rate_limited", 429, 2.0)
    assert "slow down ***" in error.message  # the key echoed back is redacted
