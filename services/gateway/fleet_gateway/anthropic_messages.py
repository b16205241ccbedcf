"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

Wire shapes as Anthropic sends them (see fleet_emulators.anthropic): a ``message`` object,
and for ``stream: true`` the event sequence ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta``..., ``content_block_stop``, ``message_delta``,
``message_stop``; an error mid-stream is ``event: error``, after which nothing follows.
``anthropic-version`` and ``anthropic-beta`` are accepted (not required) and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_gateway import tooling
from fleet_gateway.answering import SinkBase, answer, routing
from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import answering_usage, build_job
from fleet_gateway.web_io import context, json_response, read_json, sse
from fleet_shared.schema import ChatMessage, Job, Result, ToolCall
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
    """A text-like block as text (a tool result's content, a system prompt's blocks)."""
    if block.type == "text":
        return block.text or ""
    if block.type in ("thinking", "redacted_thinking"):
        return ""
    raise ApiError("invalid_request", f"content blocks of type {block.type!r} are not supported here", param=where)


def content_text(content: str | list[Block] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(t for t in (block_text(b, f"{where}.{i}") for i, b in enumerate(content)) if t)


def _turn(m: Message, where: str) -> list[ChatMessage]:
    """One Anthropic turn as fleet messages: ``tool_result`` blocks become ``tool`` messages
    (first, as they answer the previous turn's calls), ``tool_use`` blocks the assistant's
    ``tool_calls``."""
    if isinstance(m.content, str):
        return [ChatMessage(m.role, m.content)]
    results, texts, calls = [], [], []
    for i, b in enumerate(m.content):
        if b.type == "tool_result":
            text = content_text(b.content, f"{where}.{i}.content")
            results.append(ChatMessage("tool", ("[error] " if b.is_error else "") + text, tool_call_id=b.tool_use_id))
        elif b.type == "tool_use":
            calls.append(ToolCall(b.id or "", b.name or "", _json.encode(b.input or {}).decode()))
        else:
            texts.append(block_text(b, f"{where}.{i}"))
    text = "\n".join(t for t in texts if t)
    if m.role == "assistant":
        return [ChatMessage("assistant", text, tool_calls=calls or None)]
    return results + ([ChatMessage("user", text)] if text or not results else [])


def to_fleet_messages(messages: list[Message]) -> list[ChatMessage]:
    chat = [c for i, m in enumerate(messages) for c in _turn(m, f"messages.{i}.content")]
    if not any(m.role == "user" for m in messages):
        raise ApiError("invalid_request", "messages must hold at least one user message", param="messages")
    return chat


def messages_job(request: web.Request, req: MessagesRequest) -> Job:
    ctx = context(request)
    caller = ctx.keys.caller(request.headers)
    return build_job(
        messages=to_fleet_messages(req.messages),
        system=content_text(req.system, "system") or None,
        **routing(request, req.model, None),
        caller=caller,
        api="anthropic",
        client_metadata={"user_id": req.metadata.user_id} if req.metadata and req.metadata.user_id else None,
        stream=bool(req.stream),
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        tools=tooling.anthropic_tools(req.tools),
        tool_choice=tooling.anthropic_tool_choice(req.tool_choice),
        stop=req.stop_sequences or None,
        top_p=req.top_p,
    )


async def messages(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, _decoder)
    job = messages_job(request, req)
    return await answer(
        request, job, sink=lambda: EventSink(request, req, job), body=lambda r: message_body(request, req, r)
    )


def _usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "input_tokens": tokens_in,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": tokens_out,
    }


def _stop_reason(result: Result) -> str:
    return tooling.anthropic_stop(result)


def _content(result: Result) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": result.content}] if result.content else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": tooling.arguments_object(c)}
        for c in result.tool_calls or ()
    ]
    return blocks or [{"type": "text", "text": ""}]


def message_body(request: web.Request, req: MessagesRequest, result: Result) -> dict[str, Any]:
    return {
        "id": f"msg_{result.job_id}",
        "type": "message",
        "role": "assistant",
        "model": context(request).catalog.public_name(result.model, req.model),
        "content": _content(result),
        "stop_reason": _stop_reason(result),
        "stop_sequence": None,
        "usage": _usage(*answering_usage(result)),
    }


class EventSink(SinkBase[MessagesRequest]):
    """Anthropic's streaming event sequence."""

    async def start(self, model_id: str) -> None:
        response = await self.open(model_id)
        message: dict[str, Any] = {
            "id": f"msg_{self.job.id}",
            "type": "message",
            "role": "assistant",
            "model": self.public_name(model_id, self.req.model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(estimate_input_tokens(self.job), 1),
        }
        await response.write(
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
        tool_blocks = b""
        for i, call in enumerate(result.tool_calls or (), start=1):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": call.arguments}
            tool_blocks += (
                sse({"type": "content_block_start", "index": i, "content_block": block}, "content_block_start")
                + sse({"type": "content_block_delta", "index": i, "delta": delta}, "content_block_delta")
                + sse({"type": "content_block_stop", "index": i}, "content_block_stop")
            )
        await self._write(
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + tool_blocks
            + sse(end, "message_delta")
            + sse({"type": "message_stop"}, "message_stop")
        )

    async def fail(self, error: ApiError) -> None:
        await self._write(sse(error.anthropic_body(), "error"))


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
