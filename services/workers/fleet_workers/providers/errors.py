"""Every provider failure becomes one ``ProviderError``, classified here and only here.

    Exception
      ProviderError(code)                         fleet_workers.providers.base
        transient: the same request may succeed later (or elsewhere)
          rate_limited      429, Gemini RESOURCE_EXHAUSTED; retry_after_s from the
                            retry-after-ms / retry-after headers or Gemini's RetryInfo
          overloaded        529, 503, Anthropic overloaded_error
          server_error      any other 5xx
          timeout           httpx.TimeoutException (connect, read, write, pool)
          connection        any other httpx transport failure: refused, reset, protocol
          bad_response      a 2xx body that does not decode into the expected shape
        permanent: the same request fails the same way on this provider
          auth              401, 403, Gemini 400 API_KEY_INVALID
          context_length    a 4xx that names the context window
          content_filtered  a 4xx content-filter code, or a refusal the adapter finds
          invalid_request   any other 4xx (and a redirect: the base URL is wrong)
        (LM Studio's 404 ``model_not_loaded`` counts as ``overloaded``: not in memory right now)

``map_provider_errors()`` wraps an adapter's I/O and re-raises ``from`` the original;
``error_from_response()`` classifies a non-2xx response. Neither ever lets the API key
into a message, even when a provider echoes it back.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence
from types import TracebackType

import httpx
import msgspec
from msgspec import Struct

from fleet_workers.providers.base import ProviderError
from fleet_workers.providers.limits import reset_after_s

#: Codes worth trying again (after ``retry_after_s`` when given, or on another model).
TRANSIENT = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection", "bad_response"})

#: Phrases the providers use when a prompt does not fit the model's context window.
_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|prompt is too long|exceeds the maximum number of tokens",
    re.IGNORECASE,
)
_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
_MAX_MESSAGE_CHARS = 300


class _Detail(Struct):
    type: str = msgspec.field(default="", name="@type")
    reason: str | None = None
    retryDelay: str | None = None


class _Error(Struct):
    """The union of the three providers' error objects; every field optional."""

    message: str = ""
    type: str | None = None  # OpenAI and Anthropic
    code: str | int | None = None  # OpenAI (string) and Gemini (the HTTP status)
    status: str | None = None  # Gemini, e.g. RESOURCE_EXHAUSTED
    details: list[_Detail] = []  # Gemini


class _ErrorBody(Struct):
    error: _Error | str | None = None  # LM Studio sometimes sends a bare string


_error_decoder = msgspec.json.Decoder(_ErrorBody)


class map_provider_errors:  # a function to its callers: ``with map_provider_errors(provider):``
    """Re-raise httpx and msgspec failures inside the block as a classified ProviderError.

    A ProviderError raised inside (e.g. by ``error_from_response``) passes through as is.
    A class rather than a generator-based context manager: it wraps every provider call,
    and a generator, its frame and contextlib's helper cost more than the check.
    """

    __slots__ = ("provider", "secret")

    def __init__(self, provider: str, *, secret: str | None = None) -> None:
        self.provider = provider
        self.secret = secret

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or not isinstance(exc, _MAPPED):
            return  # nothing raised, or not ours to classify: it goes on as it is
        if isinstance(exc, httpx.TimeoutException):
            code = "timeout"
        elif isinstance(exc, httpx.DecodingError):  # a 2xx body whose content-encoding is broken
            code = "bad_response"
        elif isinstance(exc, httpx.RequestError):
            code = "connection"
        else:  # msgspec.DecodeError, also msgspec.ValidationError: wrong shape
            code = "bad_response"
        raise _from_exception(code, self.provider, exc, self.secret) from exc


_MAPPED = (httpx.TimeoutException, httpx.DecodingError, httpx.RequestError, msgspec.DecodeError)


def error_from_response(provider: str, response: httpx.Response, *, secret: str | None = None) -> ProviderError:
    """Classify a non-2xx response; the message carries the provider's own explanation."""
    error = _decode_error(response.content)
    status = response.status_code
    text = error.message or response.reason_phrase or response.text[:120]
    return ProviderError(
        _classify(status, error, response.content),
        _redact(f"{provider} HTTP {status}: {text}", secret),
        status=status,
        retry_after_s=retry_after_s(response.headers, error.details),
    )


#: error.type (Anthropic, OpenAI) or error.status (Gemini) of an error sent inside a stream
_EVENT_CLASSES = {
    "overloaded_error": "overloaded",
    "UNAVAILABLE": "overloaded",
    "rate_limit_error": "rate_limited",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "requests": "rate_limited",
    "tokens": "rate_limited",
    "authentication_error": "auth",
    "invalid_request_error": "invalid_request",
    "INVALID_ARGUMENT": "invalid_request",
    "DEADLINE_EXCEEDED": "timeout",
}


def error_from_event(provider: str, body: bytes, *, secret: str | None = None) -> ProviderError:
    """Classify an error that arrives inside a 200 stream (Anthropic's ``event: error``,
    an OpenAI ``data: {"error": ...}``, a Gemini SSE error object)."""
    error = _decode_error(body)
    code = _EVENT_CLASSES.get(error.type or "") or _EVENT_CLASSES.get(error.status or "") or "server_error"
    if code == "invalid_request" and (error.code == "context_length_exceeded" or _CONTEXT_RE.search(error.message)):
        code = "context_length"
    kind = error.type or error.status or "error"
    return ProviderError(code, _redact(f"{provider} stream error {kind}: {error.message}", secret))


def _classify(status: int, error: _Error, body: bytes) -> str:
    if status in (401, 403) or (400 <= status < 500 and b"API_KEY_INVALID" in body):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status in (503, 529) or error.type == "overloaded_error":
        return "overloaded"
    if status >= 500:
        return "server_error"
    if error.code == "context_length_exceeded" or _CONTEXT_RE.search(error.message):
        return "context_length"
    if error.code == "model_not_loaded":  # LM Studio without JIT: this model is not in memory now
        return "overloaded"
    if error.code in _CONTENT_FILTER_CODES:
        return "content_filtered"
    return "invalid_request"


def _decode_error(body: bytes) -> _Error:
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:  # an HTML page from a proxy, an empty body...
        return _Error(message=body[:200].decode("utf-8", "replace").strip())
    if isinstance(error, str):
        return _Error(message=error)
    return error or _Error()


def retry_after_s(headers: httpx.Headers, details: Sequence[_Detail] = ()) -> float | None:
    """Seconds the provider asks us to wait: retry-after-ms, retry-after, Gemini's RetryInfo,
    else the x-ratelimit-* / anthropic-ratelimit-* reset headers (see ``limits``)."""
    if (ms := _number(headers.get("retry-after-ms"))) is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = _number(value)
        return seconds if seconds is not None else _seconds_until(value)
    for detail in details:
        if detail.type.endswith("RetryInfo") and detail.retryDelay:
            return _number(detail.retryDelay.removesuffix("s"))
    return reset_after_s(headers)


def _number(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _from_exception(code: str, provider: str, exc: Exception, secret: str | None) -> ProviderError:
    detail = str(exc) or "no detail"
    return ProviderError(code, _redact(f"{provider}: {type(exc).__name__}: {detail}", secret))


def _redact(message: str, secret: str | None) -> str:
    """Truncate, and blank the key out in case a provider echoed it back."""
    if secret:
        message = message.replace(secret, "***")
    return message[:_MAX_MESSAGE_CHARS]
