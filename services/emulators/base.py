"""What every provider emulator shares: the chat request flow, the canned reply, JSON bodies.

A provider's emulator subclasses ``Emulator`` and supplies its wire format: routes,
authentication, request parsing, the success body and the error shape. ``Emulator.chat``
is the one request flow: authenticate, parse, apply the prompt's faults, answer.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import msgspec
from aiohttp import web

from fleet_emulators.faults import parse_faults

_encoder = msgspec.json.Encoder()

#: How much of the last message the canned reply echoes back.
ECHO_CHARS = 120


class BadRequest(Exception):
    """The request body is well-formed JSON but not what the provider accepts."""


@dataclass(slots=True)
class Chat:
    """A chat request reduced to what the emulator needs."""

    model: str
    texts: list[str]  # the system prompt (if any), then every message's text, in order
    max_tokens: int | None = None


@dataclass(slots=True)
class Reply:
    content: str
    tokens_in: int
    tokens_out: int
    truncated: bool  # cut at max_tokens


def estimate_tokens(text_chars: int) -> int:
    """A deterministic token count: about four characters per token, at least one."""
    return max(1, (text_chars + 3) // 4)


def make_reply(provider: str, chat: Chat) -> Reply:
    """The deterministic answer: a tag naming the emulator and model, then a short echo."""
    prompt = " ".join(chat.texts[-1].split()) if chat.texts else ""
    echo = prompt if len(prompt) <= ECHO_CHARS else prompt[:ECHO_CHARS] + "…"
    content = f"[{provider} emulator · {chat.model}] {echo}"
    tokens_in = estimate_tokens(sum(len(t) for t in chat.texts))
    tokens_out = estimate_tokens(len(content))
    if chat.max_tokens is not None and tokens_out > chat.max_tokens:
        return Reply(content[: chat.max_tokens * 4], tokens_in, chat.max_tokens, truncated=True)
    return Reply(content, tokens_in, tokens_out, truncated=False)


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, headers=headers, content_type="application/json")


def random_id(prefix: str, hex_chars: int = 24) -> str:
    return f"{prefix}{random.getrandbits(hex_chars * 4):0{hex_chars}x}"


class Emulator:
    """One provider's HTTP API; subclasses fill in the wire format."""

    provider: ClassVar[str]
    #: the model listing, encoded once (subclasses set it)
    models_body: ClassVar[bytes] = b"{}"

    def __init__(self, *, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self._hanging: set[asyncio.Task[Any]] = set()

    # -- the wire format, per provider ------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def authenticate(self, request: web.Request) -> web.Response | None:
        """None when the request may proceed, else the provider's rejection."""
        return None

    def parse_chat(self, request: web.Request, body: bytes) -> Chat:
        """Raises msgspec.DecodeError or BadRequest for a body the provider would refuse."""
        raise NotImplementedError

    def success(self, chat: Chat, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, message: str | None = None, *, retry_after_s: float = 1.0) -> web.Response:
        """The provider's error response for ``status`` (its default message unless given)."""
        raise NotImplementedError

    # -- the shared flow --------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        try:
            chat = self.parse_chat(request, await request.read())
        except (msgspec.DecodeError, BadRequest) as exc:
            return self.error(400, str(exc))
        faults = parse_faults("\n".join(chat.texts), self.provider)
        delay_ms = self.latency_ms + faults.latency_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        if faults.hang:
            await self._hang()
        if faults.error is not None:
            return self.error(faults.error, retry_after_s=faults.retry_after_s)
        return json_response(self.success(chat, make_reply(self.provider, chat)))

    async def models(self, request: web.Request) -> web.StreamResponse:
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        return web.Response(body=self.models_body, content_type="application/json")

    async def _hang(self) -> None:
        """Wait forever: until the client disconnects or the server shuts down.

        Both end in cancellation (the runner cancels handlers of closed connections), so
        the connection is dropped without an answer, as a stuck upstream would.
        """
        task = asyncio.current_task()
        assert task is not None
        self._hanging.add(task)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hanging.discard(task)

    async def on_shutdown(self, app: web.Application) -> None:
        # without this a hanging request would hold graceful shutdown for its full timeout
        for task in list(self._hanging):
            task.cancel()
