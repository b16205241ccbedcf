"""The bench's lean HTTP client (fleet_bench.http_load): what it parses, and a real
aiohttp server on loopback answered over one reused keep-alive connection."""

from __future__ import annotations

import pytest
from aiohttp import web

from fleet_bench.http_load import LeanClient, _parse, prepare

pytestmark = pytest.mark.anyio


def test_a_response_is_parsed_only_when_complete():
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1"
    assert _parse(bytearray(whole)) == (200, b"hello", len(whole) - len(b"HTTP/1.1"))
    assert _parse(bytearray(whole[:30])) is None
    chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert _parse(bytearray(chunked)) == (404, b"abcde", len(chunked))
    assert _parse(bytearray(chunked[:-4])) is None
    assert _parse(bytearray(b"HTTP/1.1 204 No Content\r\n\r\n")) == (204, b"", 27)


def test_a_prepared_request_names_its_length_and_headers():
    host, port, raw = prepare("http://127.0.0.1:8123/v1/x", b"{}", {"x-a": "1", "content-length": "99"})
    assert (host, port) == ("127.0.0.1", 8123)
    assert raw == b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:8123\r\ncontent-length: 2\r\nx-a: 1\r\n\r\n{}"


async def test_requests_over_one_keep_alive_connection_to_a_real_server():
    peers: set[object] = set()

    async def echo(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        if request.headers.get("x-stream"):
            resp = web.StreamResponse(status=201)
            await resp.prepare(request)
            await resp.write(b"re:")
            await resp.write(body)
            await resp.write_eof()
            return resp
        return web.Response(body=b"re:" + body, status=200)

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = LeanClient()
    try:
        for i in range(5):
            assert await client.post(prepare(f"http://127.0.0.1:{port}/echo", b"%d" % i, {})) == (200, b"re:%d" % i)
        streamed = prepare(f"http://127.0.0.1:{port}/echo", b"s", {"x-stream": "1"})
        assert await client.post(streamed) == (201, b"re:s")  # chunked
        assert len(peers) == 1  # every request on the same connection
    finally:
        client.close()
        await runner.cleanup()
