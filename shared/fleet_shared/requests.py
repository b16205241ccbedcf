"""Request-reply that sends at once and is awaited later: ``await send(...)`` returns a
future of the reply, so a caller can send a stored publish, then a core message, then wait
for the ack; or send a look-up and do its own work while it travels.

Why not ``nc.request``: it sends and waits in one call (a second message can only be sent
first from another task), and every call draws an ``os.urandom`` token, a NUID and runs
``asyncio.wait_for`` (a coroutine, a future and a timer): a visible share of the router's
CPU per job, which makes four requests per job. Here a connection's replies come to one
wildcard inbox (subscribed on first use; nats-py resubscribes it after a reconnect), told
apart by a counter, handed over as they are read (``_Handover``); one timer, not one per
request, fails those past their timeout. The connection's event loop is looked up once:
on Python 3.11 every ``asyncio.get_running_loop()`` is a ``getpid`` system call (its fork
check), a few per cent of the router's CPU at four requests per job.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable
from typing import cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

#: the status header of a server's answer to a request nobody is subscribed for
_STATUS = "Status"
_NO_RESPONDERS = "503"
#: how often replies past their timeout are failed: a timeout fires up to this late
SWEEP_S = 0.1


class Replies:
    """The replies of one connection (``for_connection`` gives the connection's one)."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._tokens = itertools.count()
        #: token -> (the reply, the loop time it is given up at)
        self._waiting: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._subscribed: asyncio.Future[Subscription] | None = None
        #: the connection's loop (a connection lives on one), looked up on first use
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Requests sent whose reply has not come, failed or been given up on yet."""
        return len(self._waiting)

    async def send(
        self, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        """Publish a request now; the future gets the reply, or ``nats.errors.TimeoutError``
        after ``timeout`` s, or ``NoRespondersError`` when nobody listens on ``subject``.

        Raises:
            nats.errors.Error: the publish itself failed (connection closed, too large...).
        """
        return (await self._send(subject, payload, timeout, headers))[1]

    async def request(
        self, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """``send`` and wait for the reply; a caller cancelled meanwhile leaves nothing behind.

        Raises:
            nats.errors.TimeoutError: no reply within ``timeout`` s.
            NoRespondersError: nobody listens on ``subject``.
        """
        token, reply = await self._send(subject, payload, timeout, headers)
        try:
            return await reply
        finally:
            self._waiting.pop(token, None)

    async def _send(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None
    ) -> tuple[str, asyncio.Future[Msg]]:
        subscribed = self._subscribed
        if subscribed is None:
            inbox = self._prefix + "*"
            subscribed = self._subscribed = asyncio.ensure_future(
                self._nc.subscribe(inbox, future=cast("asyncio.Future[Msg]", _Handover(self._on_reply)))
            )
        try:
            await subscribed  # at once after the first time: a done future does not yield
        except BaseException:
            self._subscribed = None  # the next request tries again
            raise
        token = str(next(self._tokens))
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        reply: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = (reply, loop.time() + timeout)
        if self._sweep is None:
            self._sweep = loop.call_later(SWEEP_S, self._expire)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._waiting.pop(token, None)
            reply.cancel()
            raise
        return token, reply

    def _on_reply(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is None or waiting[0].done():  # given up on already
            return
        reply = waiting[0]
        if not msg.data and msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            reply.set_exception(NoRespondersError())
        else:
            reply.set_result(msg)

    def _expire(self) -> None:
        """Fail the replies past their time, forget those their caller gave up on; again in
        ``SWEEP_S`` while any is waiting."""
        loop = self._loop or asyncio.get_running_loop()  # set: _send scheduled this sweep
        now = loop.time()
        over = [t for t, (reply, until) in self._waiting.items() if until <= now or reply.done()]
        for token in over:
            reply, _ = self._waiting.pop(token)
            if not reply.done():
                reply.set_exception(NatsTimeoutError())
        self._sweep = loop.call_later(SWEEP_S, self._expire) if self._waiting else None


class _Handover:
    """Hands each reply to ``on_reply`` as nats-py's reader reads it. ``subscribe(future=)``
    is how nats-py answers its own old-style requests: a message for such a subscription
    goes to ``future.set_result`` at once, where a ``cb`` subscription queues it for a task
    of its own (a queue put and get and a task wake-up per reply). This stand-in never
    completes, so every reply of the inbox comes here."""

    def __init__(self, on_reply: Callable[[Msg], None]) -> None:
        self.set_result = on_reply

    def cancelled(self) -> bool:
        return False


_by_connection: weakref.WeakKeyDictionary[NATS, Replies] = weakref.WeakKeyDictionary()


def for_connection(nc: NATS) -> Replies:
    """The connection's ``Replies`` (made on first use)."""
    replies = _by_connection.get(nc)
    if replies is None:
        replies = _by_connection[nc] = Replies(nc)
    return replies
