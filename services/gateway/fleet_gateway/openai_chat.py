"""OpenAI's Chat Completions API: POST /v1/chat/completions, GET /v1/models[/{id}].

Wire shapes as OpenAI sends them (see fleet_emulators.openai): ``chat.completion``, and
for ``stream: true`` server-sent ``chat.completion.chunk`` events ending in ``data: [DONE]``
(with ``stream_options.include_usage`` a last chunk with empty ``choices`` and the usage).
An error mid-stream is a ``data: {"error": ...}`` event, which the SDKs raise.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_gateway import tooling
from fleet_gateway.answering import SinkBase, answer, routing
from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import answering_usage, build_job
from fleet_gateway.web_io import context, json_response, read_json, sse
from fleet_shared.schema import ChatMessage, Job, Result
from fleet_shared.schema import ToolCall as FleetToolCall


class ContentPart(Struct, frozen=True):
    type: str
    text: str | None = None


class FunctionCall(Struct, frozen=True):
    name: str
    arguments: str = ""


class ToolCall(Struct, frozen=True):
    id: str
    function: FunctionCall
    type: str = "function"


class Message(Struct, frozen=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(Struct, frozen=True):
    include_usage: bool = False


class ChatRequest(Struct, frozen=True):
    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, Meta(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(ChatRequest)


def text_of(content: str | list[ContentPart] | None, *, where: str) -> str:
    """A message's text; parts other than text are refused (the fleet carries text only)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type not in ("text", "input_text", "output_text") or part.text is None:
            raise ApiError(
                "invalid_request", f"content parts of type {part.type!r} are not supported (text only)", param=where
            )
        texts.append(part.text)
    return "".join(texts)


def to_fleet_messages(messages: list[Message]) -> tuple[str | None, list[ChatMessage]]:
    """(system prompt, conversation), tool calls and tool results included."""
    system: list[str] = []
    chat: list[ChatMessage] = []
    for i, m in enumerate(messages):
        text = text_of(m.content, where=f"messages.{i}.content")
        if m.role in ("system", "developer"):
            system.append(text)
        elif m.role == "assistant":
            calls = [FleetToolCall(c.id, c.function.name, c.function.arguments or "{}") for c in m.tool_calls or ()]
            chat.append(ChatMessage("assistant", text, tool_calls=calls or None))
        elif m.role in ("tool", "function"):
            if not (m.tool_call_id or m.name):
                raise ApiError("invalid_request", "a tool message needs `tool_call_id`", param=f"messages.{i}")
            chat.append(ChatMessage("tool", text, tool_call_id=m.tool_call_id or m.name, name=m.name))
        else:
            chat.append(ChatMessage("user", text))
    if not chat:
        raise ApiError("invalid_request", "messages must hold at least one user message", param="messages")
    return ("\n\n".join(system) or None), chat


def chat_job(request: web.Request, req: ChatRequest, *, api: str = "openai") -> Job:
    ctx = context(request)
    caller = ctx.keys.caller(request.headers)
    if (req.n or 1) != 1:
        raise ApiError("invalid_request", "only n=1 is supported: the router answers with one model", param="n")
    system, messages = to_fleet_messages(req.messages)
    return build_job(
        messages=messages,
        system=system,
        **routing(request, req.model, req.metadata),
        caller=caller,
        api=api,
        client_metadata=req.metadata,
        stream=bool(req.stream),
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=req.temperature,
        tools=tooling.openai_tools(req.tools),
        tool_choice=tooling.openai_tool_choice(req.tool_choice),
        response_format=tooling.openai_response_format(req.response_format),
        stop=[req.stop] if isinstance(req.stop, str) else req.stop,
        top_p=req.top_p,
        seed=req.seed,
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, _decoder)
    job = chat_job(request, req)
    return await answer(
        request, job, sink=lambda: ChunkSink(request, req, job), body=lambda r: completion_body(request, req, r)
    )


def completion_body(request: web.Request, req: ChatRequest, result: Result) -> dict[str, Any]:
    tokens_in, tokens_out = answering_usage(result)
    return {
        "id": f"chatcmpl-{result.job_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": context(request).catalog.public_name(result.model, req.model),
        "choices": [
            {
                "index": 0,
                "message": _message(result),
                "logprobs": None,
                "finish_reason": tooling.openai_finish(result),
            }
        ],
        "usage": usage(tokens_in, tokens_out),
        "system_fingerprint": None,
    }


def _message(result: Result) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content or "", "refusal": None, "annotations": []}
    if result.tool_calls:
        message["content"] = result.content or None
        message["tool_calls"] = tooling.openai_tool_calls(result.tool_calls)
    return message


def usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


class ChunkSink(SinkBase[ChatRequest]):
    """``chat.completion.chunk`` events."""

    def __init__(self, request: web.Request, req: ChatRequest, job: Job) -> None:
        super().__init__(request, req, job)
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self.base: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        body = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            body["usage"] = None
        return sse(body)

    async def start(self, model_id: str) -> None:
        response = await self.open(model_id)
        self.base = {
            "id": f"chatcmpl-{self.job.id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.public_name(model_id, self.req.model),
            "system_fingerprint": None,
        }
        await response.write(self._chunk({"role": "assistant", "content": "", "refusal": None}, None))

    async def delta(self, text: str) -> None:
        await self._write(self._chunk({"content": text}, None))

    async def finish(self, result: Result) -> None:
        for i, call in enumerate(tooling.openai_tool_calls(result.tool_calls or [])):
            await self._write(self._chunk({"tool_calls": [{"index": i, **call}]}, None))
        await self._write(self._chunk({}, tooling.openai_finish(result)))
        if self.include_usage:
            await self._write(sse({**self.base, "choices": [], "usage": usage(*answering_usage(result))}))
        await self._write(b"data: [DONE]\n\n")

    async def fail(self, error: ApiError) -> None:
        await self._write(sse(error.openai_body()))


# -- models -------------------------------------------------------------------------------


def _model_entry(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def list_models(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.keys.caller(request.headers)
    registry = ctx.catalog.registry
    data = [_model_entry("auto", "fleet-router"), _model_entry("router/auto", "fleet-router")]
    data += [_model_entry(model_id, spec.provider) for model_id, spec in registry.models.items()]
    seen = {d["id"] for d in data}
    for spec in registry.models.values():
        if spec.provider_model not in seen:
            seen.add(spec.provider_model)
            data.append(_model_entry(spec.provider_model, spec.provider))
    return json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.keys.caller(request.headers)
    name = request.match_info["model"]
    model_id = ctx.catalog.resolve(name)
    spec = ctx.catalog.spec(model_id)
    return json_response(_model_entry(name, spec.provider if spec else "fleet-router"))
