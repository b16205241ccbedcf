"""Request-reply that sends at once and is awaited later: ``await send(...)`` returns a
future of the reply, so a caller can send a stored publish, then a core message, then wait
for the ack; or send a look-up and do its own work while it travels.

Why not ``nc.request``: it sends and waits in one call (a second message can only be sent
first from another task), and every call draws an ``os.urandom`` token, a NUID and runs
``asyncio.wait_for`` (a coroutine, a future and a timer): a visible share of the router's
CPU per job, which makes four requests per job. Here a connection's replies come to one
wildcard inbox (subscribed on first use; nats-py resubscribes it after a reconnect), told
apart by a counter; a timer handle gives up on a reply.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

#: the status header of a server's answer to a request nobody is subscribed for
_STATUS = "Status"
_NO_RESPONDERS = "503"


class Replies:
    """The replies of one connection (``for_connection`` gives the connection's one)."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._subscribed: asyncio.Future[Subscription] | None = None

    async def send(
        self, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        """Publish a request now; the future gets the reply, or ``nats.errors.TimeoutError``
        after ``timeout`` s, or ``NoRespondersError`` when nobody listens on ``subject``.

        Raises:
            nats.errors.Error: the publish itself failed (connection closed, too large...).
        """
        subscribed = self._subscribed
        if subscribed is None:
            subscribed = self._subscribed = asyncio.ensure_future(
                self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
            )
        try:
            await subscribed  # at once after the first time: a done future does not yield
        except BaseException:
            self._subscribed = None  # the next request tries again
            raise
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = reply
        expiry = loop.call_later(timeout, self._expire, token)
        reply.add_done_callback(lambda _: self._forget(token, expiry))  # answered, expired or cancelled
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._waiting.pop(token, None)
            reply.cancel()
            raise
        return reply

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if reply is None or reply.done():  # given up on already
            return
        if not msg.data and msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            reply.set_exception(NoRespondersError())
        else:
            reply.set_result(msg)

    def _forget(self, token: str, expiry: asyncio.TimerHandle) -> None:
        expiry.cancel()
        self._waiting.pop(token, None)

    def _expire(self, token: str) -> None:
        reply = self._waiting.pop(token, None)
        if reply is not None and not reply.done():
            reply.set_exception(NatsTimeoutError())


_by_connection: weakref.WeakKeyDictionary[NATS, Replies] = weakref.WeakKeyDictionary()


def for_connection(nc: NATS) -> Replies:
    """The connection's ``Replies`` (made on first use)."""
    replies = _by_connection.get(nc)
    if replies is None:
        replies = _by_connection[nc] = Replies(nc)
    return replies
