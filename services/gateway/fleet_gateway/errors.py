"""Errors at the HTTP edge: one ``ApiError`` raised anywhere in a handler, written in the
shape of the API that was called (OpenAI or Anthropic), with the status a client's retry
logic expects. A failed Result is translated here too (``error_for_result``).

Messages are ours or the fleet's (which never carry a key); a stack trace never reaches a
client: an unexpected exception becomes a 500 with the request id only.
"""

from __future__ import annotations

import datetime
from typing import Any

from fleet_shared.schema import Result

#: kind -> (HTTP status, OpenAI error.type, Anthropic error.type)
KINDS: dict[str, tuple[int, str, str]] = {
    "invalid_request": (400, "invalid_request_error", "invalid_request_error"),
    "authentication": (401, "invalid_request_error", "authentication_error"),
    "not_found": (404, "invalid_request_error", "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error", "invalid_request_error"),
    "request_timeout": (408, "invalid_request_error", "invalid_request_error"),
    "too_large": (413, "invalid_request_error", "request_too_large"),
    "budget": (429, "insufficient_quota", "rate_limit_error"),
    "internal": (500, "server_error", "api_error"),
    "not_implemented": (501, "invalid_request_error", "not_found_error"),
    "unavailable": (503, "server_error", "overloaded_error"),
    "timeout": (504, "server_error", "timeout_error"),
}


class ApiError(Exception):
    """An HTTP error answer, independent of the API's shape."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after_s)))}

    def openai_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": KINDS[self.kind][1], "param": self.param, "code": self.code}}

    def anthropic_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": KINDS[self.kind][2], "message": self.message}}

    def body(self, api: str) -> dict[str, Any]:
        return self.anthropic_body() if api == "anthropic" else self.openai_body()


#: Result error codes whose job was wrong as sent: retrying it cannot help.
_INVALID = {"invalid_job", "invalid_json", "invalid_request", "unknown_model"}
#: Attempt error codes that say the prompt, not the model, was the problem.
_PROMPT_ERRORS = {
    "context_length": ("context_length_exceeded", "the prompt is longer than the context window of every model tried"),
    "content_filtered": ("content_filter", "the answer was withheld by the provider's content filter"),
}


def seconds_to_utc_midnight(now: float) -> float:
    """The daily budget starts again at 00:00 UTC."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    midnight = (moment + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


def error_for_result(result: Result, *, retry_after_s: float | None, now: float) -> ApiError:
    """The HTTP error for a failed Result.

    Parameters:
        retry_after_s: when the first cooling model is back (from the health board), if any.
    """
    error = result.error
    code = error.code if error else "unknown"
    message = error.message if error else "the job failed"
    if code in _INVALID:
        return ApiError("invalid_request", message, code=code)
    if code == "too_large":
        return ApiError("too_large", message, code=code)
    last = result.attempts[-1].error if result.attempts else None
    prompt_error = _PROMPT_ERRORS.get(code) or (_PROMPT_ERRORS.get(last.code) if last else None)
    if prompt_error is not None and code != "no_model_available":
        api_code, summary = prompt_error
        return ApiError("invalid_request", f"{summary}: {message}", code=api_code)
    if code == "budget_exhausted":
        return ApiError(
            "budget",
            f"a spending budget is exhausted for every model that could serve this request: {message}",
            code="insufficient_quota",
            retry_after_s=seconds_to_utc_midnight(now),
        )
    if code == "no_model_available":
        return ApiError(
            "unavailable", f"no model is available: {result.reasoning}", code=code, retry_after_s=retry_after_s
        )
    if code == "timeout" or (code == "all_models_failed" and last is not None and last.code == "timeout"):
        return ApiError("timeout", message, code="timeout")
    # all_models_failed, max_deliveries, no_worker, not_accepted, worker_error: the fleet could
    # not serve it now; a retry later may succeed
    return ApiError("unavailable", message, code=code, retry_after_s=retry_after_s)
