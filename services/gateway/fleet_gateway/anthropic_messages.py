"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

Wire shapes as Anthropic sends them (see fleet_emulators.anthropic): a ``message`` object,
and for ``stream: true`` the event sequence ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta``..., ``content_block_stop``, ``message_delta``,
``message_stop``; an error mid-stream is ``event: error``, after which nothing follows.
``anthropic-version`` and ``anthropic-beta`` are accepted (not required) and ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import answering_usage, build_job, job_id_for, routing_hints
from fleet_gateway.relay import relay
from fleet_gateway.web_io import (
    JOB_ID,
    context,
    json_response,
    open_stream,
    read_json,
    result_headers,
    run_job,
    sse,
    stream_headers,
)
from fleet_shared.schema import ChatMessage, Job, Result
from fleet_shared.tokens import estimate_input_tokens


class Block(Struct, frozen=True):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class Message(Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Metadata(Struct, frozen=True):
    user_id: str | None = None


class MessagesRequest(Struct, frozen=True):
    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=1)] | None = None
    stream: bool | None = False
    metadata: Metadata | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    thinking: Any = None


class CountRequest(Struct, frozen=True):
    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[Block] | None = None
    tools: list[dict[str, Any]] | None = None


_decoder = msgspec.json.Decoder(MessagesRequest)
_count_decoder = msgspec.json.Decoder(CountRequest)
_json = msgspec.json.Encoder()


def block_text(block: Block, where: str) -> str:
    """A block as text. Tool use and tool results travel as text in the fleet's contract."""
    if block.type == "text":
        return block.text or ""
    if block.type == "tool_use":
        return f"[tool call {block.id}: {block.name}({_json.encode(block.input).decode()})]"
    if block.type == "tool_result":
        inner = content_text(block.content, where)
        flag = " error" if block.is_error else ""
        return f"[tool result{flag} {block.tool_use_id}]\n{inner}"
    if block.type in ("thinking", "redacted_thinking"):
        return ""
    raise ApiError("invalid_request", f"content blocks of type {block.type!r} are not supported", param=where)


def content_text(content: str | list[Block] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(t for t in (block_text(b, f"{where}.{i}") for i, b in enumerate(content)) if t)


def to_fleet_messages(messages: list[Message]) -> list[ChatMessage]:
    chat = [ChatMessage(m.role, content_text(m.content, f"messages.{i}.content")) for i, m in enumerate(messages)]
    if not any(m.role == "user" for m in chat):
        raise ApiError("invalid_request", "messages must hold at least one user message", param="messages")
    return chat


def messages_job(request: web.Request, req: MessagesRequest) -> Job:
    ctx = context(request)
    caller = ctx.keys.caller(request.headers)
    return build_job(
        job_id=job_id_for(request.headers.get("idempotency-key")),
        messages=to_fleet_messages(req.messages),
        system=content_text(req.system, "system") or None,
        force_model=ctx.catalog.resolve(req.model),
        hints=routing_hints(request.headers, None),
        caller=caller,
        api="anthropic",
        client_metadata={"user_id": req.metadata.user_id} if req.metadata and req.metadata.user_id else None,
        stream=bool(req.stream),
        max_tokens=req.max_tokens,
        temperature=req.temperature,
    )


async def messages(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, _decoder)
    job = messages_job(request, req)
    request[JOB_ID] = job.id or ""
    if req.stream:
        return await _stream(request, req, job)
    result = await run_job(request, job)
    return json_response(message_body(request, req, result), headers=result_headers(result))


def _usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "input_tokens": tokens_in,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": tokens_out,
    }


def _stop_reason(result: Result) -> str:
    return "max_tokens" if result.truncated else "end_turn"


def message_body(request: web.Request, req: MessagesRequest, result: Result) -> dict[str, Any]:
    return {
        "id": f"msg_{result.job_id}",
        "type": "message",
        "role": "assistant",
        "model": context(request).catalog.public_name(result.model, req.model),
        "content": [{"type": "text", "text": result.content or ""}],
        "stop_reason": _stop_reason(result),
        "stop_sequence": None,
        "usage": _usage(*answering_usage(result)),
    }


class EventSink:
    """Anthropic's streaming event sequence."""

    def __init__(self, request: web.Request, req: MessagesRequest, job: Job) -> None:
        self.request = request
        self.req = req
        self.job = job
        self.response: web.StreamResponse | None = None

    async def start(self, model_id: str) -> None:
        catalog = context(self.request).catalog
        self.response = await open_stream(self.request, stream_headers(self.request, self.job, model_id))
        message: dict[str, Any] = {
            "id": f"msg_{self.job.id}",
            "type": "message",
            "role": "assistant",
            "model": catalog.public_name(model_id, self.req.model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(estimate_input_tokens(self.job), 1),
        }
        await self.response.write(
            sse({"type": "message_start", "message": message}, "message_start")
            + sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
            + sse({"type": "ping"}, "ping")
        )

    async def delta(self, text: str) -> None:
        event = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        await self._write(sse(event, "content_block_delta"))

    async def finish(self, result: Result) -> None:
        _, tokens_out = answering_usage(result)
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(result), "stop_sequence": None},
            "usage": {"output_tokens": tokens_out},
        }
        await self._write(
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse(end, "message_delta")
            + sse({"type": "message_stop"}, "message_stop")
        )

    async def fail(self, error: ApiError) -> None:
        await self._write(sse(error.anthropic_body(), "error"))

    async def _write(self, data: bytes) -> None:
        if self.response is not None:
            await self.response.write(data)


async def _stream(request: web.Request, req: MessagesRequest, job: Job) -> web.StreamResponse:
    ctx = context(request)
    sink = EventSink(request, req, job)
    events = ctx.fleet.stream(job, timeout_s=ctx.settings.request_timeout_s)
    await relay(events, sink, retry_after_s=ctx.fleet.retry_after_s(), now=time.time())
    if sink.response is None:
        raise ApiError("internal", "the stream ended before it began")
    await sink.response.write_eof()
    return sink.response


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (about four bytes of UTF-8 per token, as the router estimates), made
    without calling a provider: the fleet's contract has no token-counting job."""
    ctx = context(request)
    ctx.keys.caller(request.headers)
    req = await read_json(request, _count_decoder)
    ctx.catalog.resolve(req.model)
    messages = to_fleet_messages(req.messages)
    tools = _json.encode(req.tools).decode() if req.tools else ""
    system = "\n".join(filter(None, [content_text(req.system, "system"), tools])) or None
    job = Job(messages=messages, system=system)
    return json_response({"input_tokens": estimate_input_tokens(job)})
