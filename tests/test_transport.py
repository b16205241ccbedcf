"""The aiohttp transport behind the workers' httpx client: every aiohttp failure maps to the
httpx exception an httpcore transport would raise, and the lean client keeps httpx's API."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
import yarl

from fleet_emulators import running_emulator
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
