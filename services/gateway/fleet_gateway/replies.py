"""Request-reply on the gateway's hot path: leaner than ``nc.request``, same wire exchange.

nats-py's ``request`` parks each reply in its wildcard inbox subscription's queue, wakes that
subscription's task to run a callback that resolves the request's future, names each request
with a NUID plus ``token_hex(2)`` (an ``urandom`` call), and times out through
``asyncio.wait_for`` (a second future and its callbacks). Per request that is measurable in
the gateway's CPU (docs/gateway.md, Performance). ``Replies`` subscribes once to
``_INBOX.<nuid>.*`` and hands nats-py a dispatcher where a subscription takes its one-shot
``future``: the connection's reader then calls its ``set_result`` with each reply as it is
parsed, which resolves the waiting request's future at once. Inbox tokens are a counter
(unique under the connection's random prefix), and the timeout is one timer handle.
"""

from __future__ import annotations

import asyncio
from typing import cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError

#: the header and value of the server's "no responders" status reply
_STATUS, _NO_RESPONDERS = "Status", "503"


class _Dispatch:
    """Stands where nats-py keeps a subscription's one-shot future: its reader calls
    ``set_result`` with every message of the subscription (after checking ``cancelled``)."""

    __slots__ = ("prefix_len", "waiting")

    def __init__(self, prefix_len: int) -> None:
        self.prefix_len = prefix_len
        #: inbox token -> the future of the request waiting for it
        self.waiting: dict[str, asyncio.Future[Msg]] = {}

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        waiter = self.waiting.pop(msg.subject[self.prefix_len :], None)
        if waiter is not None and not waiter.done():  # a late reply finds nobody: dropped
            waiter.set_result(msg)


def _expire(waiter: asyncio.Future[Msg]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Replies:
    """``await replies.request(subject, payload, timeout_s)`` -> the reply's payload.
    ``start`` once the connection is up; the subscription lives as long as the connection
    (nats-py renews it on reconnect, and drains it with the connection)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._dispatch = _Dispatch(0)
        self._sent = 0
        self._sub: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        # kept: get_running_loop costs a getpid() syscall per call on Python 3.11
        self._loop = asyncio.get_running_loop()
        self._prefix = self.nc.new_inbox() + "."
        self._dispatch = _Dispatch(len(self._prefix))
        # nats-py types ``future`` as an asyncio.Future; it only calls the two methods above
        self._sub = await self.nc.subscribe(self._prefix + "*", future=cast("asyncio.Future[Msg]", self._dispatch))

    @property
    def waiting(self) -> int:
        """Requests sent and not yet answered, timed out or cancelled."""
        return len(self._dispatch.waiting)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes:
        """Publish ``payload`` on ``subject`` and wait for its one reply.

        Raises:
            NoRespondersError: nobody subscribes to ``subject``.
            TimeoutError: no reply within ``timeout_s``.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("Replies.request before start")
        self._sent += 1
        token = str(self._sent)
        waiter: asyncio.Future[Msg] = loop.create_future()
        self._dispatch.waiting[token] = waiter
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token)
            msg = await waiter
        finally:
            timer.cancel()
            self._dispatch.waiting.pop(token, None)  # timed out or cancelled: forget the token
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            raise NoRespondersError
        return msg.data
