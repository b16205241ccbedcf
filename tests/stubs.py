"""Doubles for handler tests that need no server: a JetStream message stub (data, headers,
metadata; records how it was settled) and in-memory stand-ins for the core NATS client and
the JetStream context (record what a handler publishes; answer its reads)."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import NotFoundError

from fleet_shared.publish import MSG_ID_HEADER

Metadata = Msg.Metadata


class StubMsg:
    """A JetStream message as a handler sees it. ``settled`` lists the calls made on it
    (("ack",), ("nak", delay), ("term",)); a second settle raises, as nats-py's does."""

    def __init__(
        self,
        data: bytes,
        *,
        subject: str = "t.submit",
        headers: dict[str, str] | None = None,
        stream: str = "JOBS",
        seq: int = 1,
        num_delivered: int = 1,
        num_pending: int = 0,
        timestamp: datetime.datetime | None = None,
    ) -> None:
        self.data = data
        self.subject = subject
        self.headers = headers
        self.reply = f"$JS.ACK.{stream}.c.{num_delivered}.{seq}.{seq}.0.{num_pending}"
        self.metadata = Metadata(
            sequence=Metadata.SequencePair(consumer=seq, stream=seq),
            num_pending=num_pending,
            num_delivered=num_delivered,
            timestamp=timestamp or datetime.datetime.now(datetime.UTC),
            stream=stream,
            consumer="c",
        )
        self.settled: list[tuple] = []
        self.beats = 0
        #: set at the first ack / nak / term
        self.done = asyncio.Event()
        #: set at the first in_progress()
        self.held = asyncio.Event()

    def _settle(self, *call) -> None:
        if self.settled:
            raise AssertionError(f"settled twice: {self.settled} then {call}")
        self.settled.append(call)
        self.done.set()

    async def ack(self) -> None:
        self._settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak", delay)

    async def term(self) -> None:
        self._settle("term")

    async def in_progress(self) -> None:
        self.beats += 1  # not a settle: the message stays in hand
        self.held.set()


class FakeNats:
    """Core NATS: records ``publish`` (replies to requesters, stream chunks)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "", headers=None) -> None:
        self.published.append((subject, payload))

    def on(self, subject: str) -> list[bytes]:
        return [data for s, data in self.published if s == subject]


@dataclass
class Published:
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Limits:
    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload


class FakeJetStream:
    """JetStream in memory: ``publish`` (de-duplicated on Nats-Msg-Id like a stream),
    ``get_last_msg`` over what was published, ``get_msg`` / ``delete_msg`` over ``stored``.

    Parameters:
        max_payload: the server limit ``fleet_shared.publish.check_size`` reads (0: none).
        fail_on: subjects whose publish raises this exception.
    """

    def __init__(self, *, max_payload: int = 0, fail_on: dict[str, Exception] | None = None) -> None:
        self.published: list[Published] = []
        #: (stream, seq) -> a stored message, for get_msg
        self.stored: dict[tuple[str, int], RawStreamMsg] = {}
        self.deleted: list[tuple[str, int]] = []
        self.fail_on = fail_on or {}
        self._ids: set[str] = set()
        self._nc = _Limits(max_payload)  # where check_size looks for the server's limit

    async def publish(self, subject: str, payload: bytes = b"", timeout=None, stream=None, headers=None) -> PubAck:
        if subject in self.fail_on:
            raise self.fail_on[subject]
        headers = dict(headers or {})
        msg_id = headers.get(MSG_ID_HEADER)
        duplicate = msg_id is not None and msg_id in self._ids
        if msg_id is not None:
            self._ids.add(msg_id)
        if not duplicate:
            self.published.append(Published(subject, payload, headers))
        return PubAck(stream="FAKE", seq=len(self.published), duplicate=duplicate)

    async def get_last_msg(self, stream_name: str, subject: str, direct: bool = False) -> RawStreamMsg:
        for msg in reversed(self.published):
            if msg.subject == subject:
                return RawStreamMsg(subject=subject, data=msg.data, headers=msg.headers, stream=stream_name)
        raise NotFoundError()

    async def get_msg(self, stream_name: str, seq: int) -> RawStreamMsg:
        try:
            return self.stored[(stream_name, seq)]
        except KeyError:
            raise NotFoundError() from None

    async def delete_msg(self, stream_name: str, seq: int) -> bool:
        if self.stored.pop((stream_name, seq), None) is None:
            raise NotFoundError()
        self.deleted.append((stream_name, seq))
        return True

    def on(self, subject: str) -> list[Published]:
        return [m for m in self.published if m.subject == subject]
