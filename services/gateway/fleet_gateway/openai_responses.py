"""OpenAI's Responses API (POST /v1/responses): text input or message items, instructions,
and streaming as the API's typed events (``response.created`` ... ``response.completed``;
an error mid-stream is an ``error`` event and no ``response.completed`` follows).

Stateless: ``previous_response_id`` and stored responses are refused with 400 (the fleet
keeps Results by job id, not conversations).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from fleet_gateway.answering import SinkBase, answer, routing
from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import answering_usage, build_job
from fleet_gateway.openai_chat import ContentPart, text_of
from fleet_gateway.web_io import context, read_json, sse
from fleet_shared.schema import ChatMessage, Job, Result


class InputItem(Struct, frozen=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    type: Literal["message"] = "message"


class ResponsesRequest(Struct, frozen=True):
    model: str
    input: str | Annotated[list[InputItem], Meta(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    stream: bool | None = False
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None


_decoder = msgspec.json.Decoder(ResponsesRequest)


def _conversation(req: ResponsesRequest) -> tuple[str | None, list[ChatMessage]]:
    if isinstance(req.input, str):
        return req.instructions, [ChatMessage("user", req.input)]
    system = [req.instructions] if req.instructions else []
    chat = []
    for i, item in enumerate(req.input):
        text = text_of(item.content, where=f"input.{i}.content")
        if item.role in ("system", "developer"):
            system.append(text)
        else:
            chat.append(ChatMessage(item.role, text))
    if not chat:
        raise ApiError("invalid_request", "input must hold at least one user message", param="input")
    return "\n\n".join(system) or None, chat


def responses_job(request: web.Request, req: ResponsesRequest) -> Job:
    ctx = context(request)
    caller = ctx.keys.caller(request.headers)
    if req.previous_response_id:
        raise ApiError(
            "invalid_request",
            "previous_response_id is not supported: send the whole conversation as `input`",
            param="previous_response_id",
        )
    if req.tools:
        raise ApiError("invalid_request", "tools are not supported on /v1/responses yet", param="tools")
    system, chat = _conversation(req)
    return build_job(
        messages=chat,
        system=system,
        **routing(request, req.model, req.metadata),
        caller=caller,
        api="openai-responses",
        client_metadata=req.metadata,
        stream=bool(req.stream),
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
    )


async def responses(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, _decoder)
    job = responses_job(request, req)
    return await answer(
        request,
        job,
        sink=lambda: ResponseEventSink(request, req, job),
        body=lambda r: response_object(req, job, model=_public(request, r.model, req), result=r),
    )


def _public(request: web.Request, model_id: str | None, req: ResponsesRequest) -> str:
    return context(request).catalog.public_name(model_id, req.model)


def _message_item(job: Job, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{job.id}",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def response_object(req: ResponsesRequest, job: Job, *, model: str, result: Result | None) -> dict[str, Any]:
    """The ``response`` object: in progress (no Result yet) or completed."""
    body: dict[str, Any] = {
        "id": f"resp_{job.id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "metadata": req.metadata or {},
        "parallel_tool_calls": False,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": None,
    }
    if result is not None:
        tokens_in, tokens_out = answering_usage(result)
        body["status"] = "incomplete" if result.truncated else "completed"
        if result.truncated:
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        body["output"] = [_message_item(job, result.content or "", "completed")]
        body["usage"] = {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        }
    return body


class ResponseEventSink(SinkBase[ResponsesRequest]):
    """The Responses API's streaming events, numbered by ``sequence_number``."""

    def __init__(self, request: web.Request, req: ResponsesRequest, job: Job) -> None:
        super().__init__(request, req, job)
        self.model = req.model
        self.seq = 0
        self.text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(data, kind)

    def _part(self, **where: Any) -> dict[str, Any]:
        return {"item_id": f"msg_{self.job.id}", "output_index": 0, **where}

    async def start(self, model_id: str) -> None:
        self.model = self.public_name(model_id, self.req.model)
        response = await self.open(model_id)
        opening = response_object(self.req, self.job, model=self.model, result=None)
        await response.write(
            self._event("response.created", response=opening)
            + self._event("response.in_progress", response=opening)
            + self._event("response.output_item.added", output_index=0, item=_message_item(self.job, "", "in_progress"))
            + self._event(
                "response.content_part.added",
                **self._part(content_index=0),
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        )

    async def delta(self, text: str) -> None:
        self.text.append(text)
        await self._write(
            self._event("response.output_text.delta", **self._part(content_index=0), delta=text, logprobs=[])
        )

    async def finish(self, result: Result) -> None:
        text = "".join(self.text)
        final = response_object(self.req, self.job, model=self.model, result=result)
        await self._write(
            self._event("response.output_text.done", **self._part(content_index=0), text=text, logprobs=[])
            + self._event(
                "response.content_part.done",
                **self._part(content_index=0),
                part={"type": "output_text", "text": text, "annotations": [], "logprobs": []},
            )
            + self._event("response.output_item.done", output_index=0, item=_message_item(self.job, text, "completed"))
            + self._event("response.incomplete" if result.truncated else "response.completed", response=final)
        )

    async def fail(self, error: ApiError) -> None:
        await self._write(self._event("error", code=error.code, message=error.message, param=error.param))
