"""Faults asked for by the prompt itself, like a payment sandbox's magic card numbers.

A marker anywhere in the prompt text (any message, or the system prompt) changes how the
emulator answers that one request:

    [emulate:<provider>:error=<status>]     answer with this HTTP status, in the provider's error shape
    [emulate:<provider>:retry_after=<s>]    the wait a 429 asks for (default 1 second)
    [emulate:<provider>:latency_ms=<ms>]    wait this long before answering
    [emulate:<provider>:hang]               never answer (until the client goes away)
    [emulate:<provider>:first_token_ms=<ms>] a stream sends its headers, then waits this long before
                                            its first event (a plain request: before answering)
    [emulate:<provider>:times=<n>]          the error= and fault= markers strike only the first n
                                            requests with this same prompt; later ones are answered
    [emulate:<provider>:flap]               requests with this same prompt fail (error= status, else
                                            503) and succeed in turn, starting with a failure
    [emulate:<provider>:fault=<name>]       a provider-specific case, in that provider's exact shape:
        context_length   400 "prompt too long" (OpenAI code context_length_exceeded)
        content_filter   a 200 whose answer was filtered: OpenAI finish_reason content_filter,
                         Anthropic stop_reason refusal, Gemini finishReason SAFETY
        blocked          Gemini promptFeedback.blockReason (others: as content_filter)
        cut              a stream that breaks off mid-answer (connection dropped)
        stall            a stream that stops sending mid-answer (connection kept open)
        stream_error     an error event mid-stream (Anthropic overloaded_error, ...)
        long_answer      a model that writes until its token limit: max_tokens x 4 characters,
                         stopped by the limit (megabytes when max_tokens is large)
        reset            the connection is reset (TCP RST) before any header is sent
        malformed_sse    a stream whose event mid-answer carries half its JSON (a plain
                         request: a 200 whose body is cut in half)
        no_terminator    a stream that ends cleanly without its terminal event (OpenAI
                         ``data: [DONE]``, Anthropic ``message_stop``, Gemini's finishReason chunk)
        reject_prefill   a 400 when the conversation ends with an assistant message (a model
                         that does not support assistant prefill), in the provider's shape
        empty            a 200 whose answer is "" (whitespace: only whitespace)
        refusal_text     a 200 whose answer is a refusal ("I'm sorry, but I can't help ...")
        bad_json         a 200 whose answer is broken JSON (whatever response_format asked)
        bad_code         a 200 whose answer has a ```python block that does not parse

``<provider>`` is the emulator's provider (``lmstudio``, ``openai``, ``anthropic``,
``gemini``) or ``*`` for all of them; markers naming another provider are ignored, so one
prompt can make a job fail on one provider and succeed on the next. Several markers may
appear; for each kind the first that applies wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER_RE = re.compile(
    r"\[emulate:(?P<provider>\*|[a-z]+):(?:"
    r"error=(?P<error>\d{3})"
    r"|retry_after=(?P<retry_after>\d+(?:\.\d+)?)"
    r"|latency_ms=(?P<latency_ms>\d+(?:\.\d+)?)"
    r"|fault=(?P<fault>[a-z_]+)"
    r"|first_token_ms=(?P<first_token_ms>\d+(?:\.\d+)?)"
    r"|times=(?P<times>\d+)"
    r"|(?P<flap>flap)"
    r"|(?P<hang>hang))\]"
)

DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class Faults:
    error: int | None = None
    retry_after_s: float = DEFAULT_RETRY_AFTER_S
    latency_ms: float = 0.0
    hang: bool = False
    fault: str | None = None
    first_token_ms: float = 0.0
    times: int | None = None  # error / fault strike only the first n requests with this prompt
    flap: bool = False


NO_FAULTS = Faults()


def parse_faults(text: str, provider: str) -> Faults:
    """The faults the markers in ``text`` ask of ``provider``'s emulator."""
    if "[emulate:" not in text:  # the common case costs one substring search
        return NO_FAULTS
    found: dict[str, str] = {}
    for match in MARKER_RE.finditer(text):
        if match["provider"] not in (provider, "*"):
            continue
        for kind, value in match.groupdict().items():
            if value is not None and kind != "provider":
                found.setdefault(kind, value)
    if not found:
        return NO_FAULTS
    return Faults(
        error=int(found["error"]) if "error" in found else None,
        retry_after_s=float(found.get("retry_after", DEFAULT_RETRY_AFTER_S)),
        latency_ms=float(found.get("latency_ms", 0.0)),
        hang="hang" in found,
        fault=found.get("fault"),
        first_token_ms=float(found.get("first_token_ms", 0.0)),
        times=int(found["times"]) if "times" in found else None,
        flap="flap" in found,
    )
