"""The one small interface every provider adapter implements, and its error type.

An adapter is one class with one async method, ``call(request, on_delta=None) ->
ProviderReply``, plus ``aclose()``. With ``request.stream`` it reads the provider's
server-sent events and hands every piece of text to ``on_delta`` as it comes; a stream
that breaks off, stalls (``stall_timeout_s``) or carries an error event fails the call. It is given an ``httpx.AsyncClient`` (tests inject ``httpx.MockTransport``)
and translates every failure into a ``ProviderError`` whose ``code`` is an error class:

    ProviderError
      code: auth             bad or missing key            (permanent for this provider)
            invalid_request  the request itself is wrong    (permanent)
            context_length   prompt too long for the model  (escalate to a larger window)
            content_filtered the provider refused/blocked   (permanent for this model)
            rate_limited     429 (retry_after_s when told)  (transient)
            overloaded       529 / 503                      (transient)
            server_error     other 5xx                      (transient)
            timeout          no answer in time              (transient)
            connection       could not connect              (transient)
            bad_response     unparseable success body       (transient)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from msgspec import Struct

from fleet_shared.schema import ChatMessage, Job, ResponseFormat, Tool, ToolCall

ERROR_CLASSES = (
    "auth",
    "invalid_request",
    "context_length",
    "content_filtered",
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "connection",
    "bad_response",
)


class ProviderRequest(Struct, frozen=True, kw_only=True):
    model: str  # the provider's own model name, e.g. "gpt-4o"
    messages: list[ChatMessage]  # user/assistant turns, no system messages
    system: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    stream: bool = False  # read the answer as server-sent events
    stall_timeout_s: float | None = None  # a stream silent this long fails with ``timeout``
    first_token_timeout_s: float | None = None  # ... before its first event (None: stall_timeout_s)
    tools: list[Tool] | None = None
    tool_choice: str | None = None  # auto, none, required, or a tool's name
    response_format: ResponseFormat | None = None
    stop: list[str] | None = None
    top_p: float | None = None
    seed: int | None = None


def job_request(
    job: Job,
    *,
    model: str,
    max_tokens: int,
    stream: bool,
    stall_timeout_s: float | None,
    first_token_timeout_s: float | None = None,
) -> ProviderRequest:
    """The provider call a job asks for (the worker's one translation of the Job contract)."""
    return ProviderRequest(
        model=model,
        messages=job.chat(),
        system=job.system_prompt(),
        max_tokens=max_tokens,
        temperature=job.temperature,
        stream=stream,
        stall_timeout_s=stall_timeout_s,
        first_token_timeout_s=first_token_timeout_s,
        tools=job.tools or None,
        tool_choice=job.tool_choice if job.tools else None,
        response_format=job.response_format,
        stop=job.stop or None,
        top_p=job.top_p,
        seed=job.seed,
    )


#: Receives each piece of streamed text, in order.
DeltaSink = Callable[[str], Awaitable[None]]


class ProviderReply(Struct, frozen=True, kw_only=True):
    content: str
    tokens_in: int  # every input token, cached ones included
    tokens_out: int  # every output token, reasoning ones included
    finish_reason: str | None = None
    provider_model: str | None = None  # the model name the provider reports having used
    cached_tokens_in: int = 0  # of tokens_in: read from the prompt cache
    cache_write_tokens_in: int = 0  # of tokens_in: written to the prompt cache (Anthropic)
    reasoning_tokens: int = 0  # of tokens_out: thinking
    limit_reset_s: float | None = None  # a rate limit is spent (remaining 0) until this many seconds
    provider_ms: float | None = None  # the provider's own time for the call, when it reports one
    tool_calls: list[ToolCall] | None = None  # the model asked for these calls


#: finish reasons meaning "stopped at the token limit", per protocol.
TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})


def finish_reason(reply: ProviderReply) -> str:
    """The reply's end in OpenAI's words (the Result's): tool_calls, length or stop."""
    if reply.tool_calls:
        return "tool_calls"
    return "length" if reply.finish_reason in TRUNCATED else "stop"


class ProviderError(Exception):
    """A failed provider call, classified. ``str()`` never contains a credential."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        if code not in ERROR_CLASSES:
            raise ValueError(f"unknown provider error class {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class ProviderAdapter(Protocol):
    provider: str

    async def call(self, request: ProviderRequest, on_delta: DeltaSink | None = None) -> ProviderReply: ...

    async def aclose(self) -> None: ...
