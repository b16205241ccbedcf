"""What every provider emulator shares: the chat request flow, the canned reply, JSON bodies.

A provider's emulator subclasses ``Emulator`` and supplies its wire format: routes,
authentication, request parsing, the success body and the error shape. ``Emulator.chat``
is the one request flow: authenticate, parse, apply the prompt's faults, answer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import re
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
from aiohttp import web

from fleet_emulators.faults import Faults, parse_faults
from fleet_emulators.tools import EmulatedCall, OfferedTool, choose_call, json_answer

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
    stream: bool = False  # answer with server-sent events
    options: dict[str, Any] = field(default_factory=dict)  # protocol details, e.g. include_usage
    tools: list[OfferedTool] = field(default_factory=list)
    tool_choice: str | None = None  # auto, none, required, or a tool's name
    after_tool_result: bool = False  # the last message is a tool's result
    json_mode: bool = False  # answer one JSON value
    json_schema: dict[str, Any] | None = None  # ... valid for this schema
    trailing_assistant: bool = False  # the last message is the assistant's (a prefill)


@dataclass(slots=True)
class Reply:
    content: str
    tokens_in: int
    tokens_out: int
    truncated: bool  # cut at max_tokens
    filtered: str | None = None  # a content-filter fault asked for: "content_filter" or "blocked"
    tool_call: EmulatedCall | None = None  # the answer is this tool call (content is empty)

    def pieces(self) -> list[str]:
        """The content in the pieces a stream sends (two words each, whitespace kept)."""
        words = re.findall(r"\S+\s*", self.content) or [""]
        return ["".join(words[i : i + 2]) for i in range(0, len(words), 2)]


#: OpenAI's header for the time the API spent on a request (milliseconds)
PROCESSING_MS_HEADER = "openai-processing-ms"


def estimate_tokens(text_chars: int) -> int:
    """A deterministic token count: about four characters per token, at least one."""
    return max(1, (text_chars + 3) // 4)


def make_reply(provider: str, chat: Chat) -> Reply:
    """The deterministic answer: a tag naming the emulator and model, then a short echo."""
    prompt = " ".join(chat.texts[-1].split()) if chat.texts else ""
    echo = prompt if len(prompt) <= ECHO_CHARS else prompt[:ECHO_CHARS] + "…"
    content = f"[{provider} emulator · {chat.model}] {echo}"
    tokens_in = estimate_tokens(sum(len(t) for t in chat.texts))
    call = choose_call(chat.tools, chat.tool_choice, prompt, chat.after_tool_result)
    if call is not None:
        return Reply("", tokens_in, estimate_tokens(len(call.arguments_json)), truncated=False, tool_call=call)
    if chat.json_mode or chat.json_schema:
        content = json_answer(chat.json_schema, content)
    tokens_out = estimate_tokens(len(content))
    if chat.max_tokens is not None and tokens_out > chat.max_tokens:
        return Reply(content[: chat.max_tokens * 4], tokens_in, chat.max_tokens, truncated=True)
    return Reply(content, tokens_in, tokens_out, truncated=False)


#: Faults that only make sense for a stream; a plain request gets the closest equivalent.
STREAM_FAULTS = frozenset({"cut", "stall", "stream_error", "malformed_sse", "no_terminator"})
#: What a model that does not support assistant prefill answers (Anthropic's wording).
PREFILL_REJECTED = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
#: Faults answered with a 200 whose content was filtered.
FILTER_FAULTS = frozenset({"content_filter", "blocked"})
#: Faults answered with a 200 whose text is a bad answer (the quality checks' cases); the
#: usage is the normal answer's: a bad answer costs what a good one does.
CONTENT_FAULTS = {
    "empty": "",
    "whitespace": " \n\t ",
    "refusal_text": "I'm sorry, but I can't help with that request.",
    "bad_json": '{"answer": "unterminated',
    "bad_code": "Here is the function:\n\n```python\ndef broken(:\n    return\n```\n",
}


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (``data`` JSON-encoded unless already bytes)."""
    payload = data if isinstance(data, bytes) else _encoder.encode(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


_JSON = {"Content-Type": "application/json; charset=utf-8"}


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # headers given whole: cheaper for aiohttp than content_type=, which it parses per response
    return web.Response(body=_encoder.encode(body), status=status, headers={**_JSON, **(headers or {})})


def random_id(prefix: str, hex_chars: int = 24) -> str:
    return f"{prefix}{random.getrandbits(hex_chars * 4):0{hex_chars}x}"


class Emulator:
    """One provider's HTTP API; subclasses fill in the wire format."""

    provider: ClassVar[str]
    #: the model listing, encoded once (subclasses set it)
    models_body: ClassVar[bytes] = b"{}"

    #: the response header that reports the emulator's own time per chat request, as the
    #: provider's real API does (OpenAI: ``openai-processing-ms``); None: not sent
    processing_ms_header: str | None = None

    def __init__(self, *, latency_ms: float = 0.0, report_processing_ms: bool | None = None) -> None:
        self.latency_ms = latency_ms
        if report_processing_ms is not None:  # e.g. the benchmark asks LM Studio's emulator for it
            self.processing_ms_header = PROCESSING_MS_HEADER if report_processing_ms else None
        self._hanging: set[asyncio.Task[Any]] = set()
        #: requests seen per prompt: what the ``times`` and ``flap`` markers count
        self._seen: collections.Counter[str] = collections.Counter()
        #: requests served, by kind ("chat", "models", ...): tests prove what was (not) called
        self.calls: collections.Counter[str] = collections.Counter()

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

    def context_length_error(self, chat: Chat) -> web.Response:
        """The provider's 400 for a prompt longer than the model's context window."""
        raise NotImplementedError

    def stream_events(self, chat: Chat, reply: Reply) -> list[bytes]:
        """The answer as the provider streams it, one encoded event per list item."""
        raise NotImplementedError

    def stream_error_event(self) -> bytes:
        """The error event the provider sends mid-stream (e.g. overloaded)."""
        raise NotImplementedError

    #: the status a plain (non-stream) request gets for the ``stream_error`` fault
    stream_error_status: ClassVar[int] = 503

    # -- the shared flow --------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        self.calls["chat"] += 1
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        try:
            chat = self.parse_chat(request, await request.read())
        except (msgspec.DecodeError, BadRequest) as exc:
            return self.error(400, str(exc))
        faults = self._counted(chat, parse_faults("\n".join(chat.texts), self.provider))
        refused = await self._refusal(chat, faults)
        if refused is not None:
            return refused
        if faults.fault == "reset":
            await self._reset(request)
        early = await self.before_answer(request, chat)
        if early is not None:
            return early
        reply = self._reply(chat, faults)
        if chat.stream:
            return await self._stream(request, chat, reply, faults, self._processing(started))
        if faults.first_token_ms > 0:
            await asyncio.sleep(faults.first_token_ms / 1000.0)
        if faults.fault == "malformed_sse":  # a plain request's closest case: a body cut in half
            encoded = _encoder.encode(self.success(chat, reply))
            return web.Response(body=encoded[: len(encoded) // 2], headers=_JSON)
        if faults.fault in STREAM_FAULTS:
            return await self._plain_fault(request, faults.fault)
        body = self.success(chat, reply)
        return json_response(body, headers=self._processing(started))

    def _reply(self, chat: Chat, faults: Faults) -> Reply:
        """The answer, as the content faults (long, filtered, empty, refusal...) shape it."""
        reply = make_reply(self.provider, chat)
        if faults.fault == "long_answer" and chat.max_tokens:
            chars = chat.max_tokens * 4
            content = ((reply.content + " ") * (chars // (len(reply.content) + 1) + 1))[:chars]
            reply = Reply(content, reply.tokens_in, chat.max_tokens, truncated=True)
        if faults.fault in FILTER_FAULTS:
            reply.filtered = faults.fault
        if faults.fault in CONTENT_FAULTS:
            reply = Reply(CONTENT_FAULTS[faults.fault], reply.tokens_in, reply.tokens_out, truncated=False)
        return reply

    def _counted(self, chat: Chat, faults: Faults) -> Faults:
        """Apply the ``times`` and ``flap`` markers: they depend on the requests seen before."""
        if faults.times is None and not faults.flap:
            return faults
        key = "\n".join(chat.texts)
        seen = self._seen[key]
        self._seen[key] += 1
        if faults.flap:  # the 1st, 3rd, 5th... request fails
            return dataclasses.replace(faults, error=(faults.error or 503) if seen % 2 == 0 else None)
        if faults.times is not None and seen >= faults.times:
            return dataclasses.replace(faults, error=None, fault=None)
        return faults

    def _processing(self, started: float) -> dict[str, str] | None:
        """The processing-time header (milliseconds since the request was read), if sent."""
        if self.processing_ms_header is None:
            return None
        return {self.processing_ms_header: f"{(time.perf_counter() - started) * 1000:.3f}"}

    async def _refusal(self, chat: Chat, faults: Faults) -> web.StreamResponse | None:
        """Latency, a hang, or an error response the markers ask for (None: answer)."""
        delay_ms = self.latency_ms + faults.latency_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        if faults.hang:
            await self._hang()
        if faults.error is not None:
            return self.error(faults.error, retry_after_s=faults.retry_after_s)
        if faults.fault == "context_length":
            return self.context_length_error(chat)
        if faults.fault == "reject_prefill" and chat.trailing_assistant:
            return self.error(400, PREFILL_REJECTED)
        return None

    async def before_answer(self, request: web.Request, chat: Chat) -> web.StreamResponse | None:
        """A hook for provider state (LM Studio: is the model loaded?); None to answer."""
        return None

    async def _stream(
        self, request: web.Request, chat: Chat, reply: Reply, faults: Faults, extra_headers: dict[str, str] | None
    ) -> web.StreamResponse:
        fault = faults.fault
        events = self.stream_events(chat, reply)
        if fault == "no_terminator":
            events = events[:-1]
        elif fault == "malformed_sse":  # one event mid-answer carries half its JSON; the rest follow
            middle = len(events) // 2
            events[middle] = _half_event(events[middle])
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **(extra_headers or {})}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        if faults.first_token_ms > 0:  # the headers are out; the first event is late
            await asyncio.sleep(faults.first_token_ms / 1000.0)
        # the faults strike after the first half of the events: the answer is under way
        stop_at = max(1, len(events) // 2) if fault in ("cut", "stall", "stream_error") else len(events)
        for event in events[:stop_at]:
            await response.write(event)
        if fault == "cut":
            await self._drop(request)
        elif fault == "stall":
            await self._hang()
        elif fault == "stream_error":
            await response.write(self.stream_error_event())
        await response.write_eof()
        return response

    async def _plain_fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "cut":
            await self._drop(request)
        if fault == "stall":
            await self._hang()
        return self.error(self.stream_error_status)

    async def _reset(self, request: web.Request) -> None:
        """Reset the connection (TCP RST, no header sent), as a crashed load balancer would."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        raise asyncio.CancelledError

    async def _drop(self, request: web.Request) -> None:
        """Close the connection mid-answer, as a crashed upstream or a proxy would."""
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp abandons the handler; no end of body is sent

    async def models(self, request: web.Request) -> web.StreamResponse:
        self.calls["models"] += 1
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        return web.Response(body=self.models_body, content_type="application/json")

    async def served(self, request: web.Request) -> web.StreamResponse:
        """Requests served so far, by kind: how tests see that a prober made no chat calls."""
        return json_response(dict(self.calls))

    async def _hang(self) -> None:
        """Wait forever: until the client disconnects or the server shuts down.

        Both end in cancellation (the runner cancels handlers of closed connections), so
        the connection is dropped without an answer, as a stuck upstream would.
        """
        task = asyncio.current_task()
        if task is None:  # only ever awaited from a request handler's task
            raise RuntimeError("_hang must run inside a task")
        self._hanging.add(task)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hanging.discard(task)

    async def on_shutdown(self, app: web.Application) -> None:
        # without this a hanging request would hold graceful shutdown for its full timeout
        for task in list(self._hanging):
            task.cancel()


def _half_event(event: bytes) -> bytes:
    """``event`` with its data's JSON cut in half: a malformed event, still a complete one."""
    body = event.rstrip(b"\n")
    data_at = body.find(b"data: ") + len(b"data: ")
    return body[: data_at + (len(body) - data_at) // 2] + b"\n\n"
