"""A TCP relay in front of a provider (or PostgreSQL) that breaks things on purpose.

* ``down()`` / ``up()``: stop listening and drop every connection / listen again on the
  same port: a provider going away and coming back (connection refused meanwhile);
* ``cut_marker``: a request containing these bytes gets its response cut in the middle of
  the body and the connection dropped: a stream cut mid-answer, as a proxy or a flaky
  network does it (the status line and headers arrive, the answer does not all arrive).
"""

from __future__ import annotations

import asyncio
import contextlib

from fleet_local.embedded import free_port

HEADER_END = b"\r\n\r\n"


class Relay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int, *, cut_marker: bytes | None = None) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_marker = cut_marker
        self.cuts = 0  # responses cut so far
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def up(self) -> Relay:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        cut = asyncio.Event()
        try:
            await asyncio.gather(self._requests(reader, up_writer, cut), self._responses(up_reader, writer, cut))
        finally:
            self._writers -= {writer, up_writer}
            writer.close()
            up_writer.close()

    async def _requests(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, cut: asyncio.Event) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                seen = tail + data
                if self.cut_marker and self.cut_marker in seen:
                    cut.set()
                tail = seen[-len(self.cut_marker or b"") :]
                dst.write(data)
                await dst.drain()
        dst.close()

    async def _responses(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, cut: asyncio.Event) -> None:
        buffered = b""
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if not cut.is_set():
                    dst.write(data)
                    await dst.drain()
                    continue
                buffered += data
                end = buffered.find(HEADER_END)
                if end >= 0 and len(buffered) > end + len(HEADER_END) + 1:
                    body_at = end + len(HEADER_END)
                    dst.write(buffered[: body_at + (len(buffered) - body_at) // 2])
                    await dst.drain()
                    self.cuts += 1
                    break  # drop the rest and the connection
        dst.close()
