"""From an HTTP request to a Job, and from a Result to the ``x-router-*`` headers.

Model names: ``auto`` / ``router/auto`` let the router decide; a registry id (``claude``)
or a provider's model name (``claude-sonnet-4-6``, optionally ``router/<name>``) forces
that model (``context.force_model``), and the router still escalates if it fails, unless
``x-router-no-fallback: 1`` (or ``metadata.no_fallback``) keeps the job to it.
Routing hints: ``x-router-task-type`` / ``x-router-complexity`` headers, else the body's
``metadata`` (``task_type`` / ``complexity``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec

from fleet_gateway.errors import ApiError
from fleet_shared.registry import ModelSpec, Registry
from fleet_shared.schema import CONTEXT_NO_FALLBACK, METADATA_KEY_NAME, ChatMessage, Job, Result, TaskType
from fleet_shared.subjects import is_valid_job_id

AUTO_MODELS = frozenset({"auto", "router/auto"})
#: Job metadata keys the gateway sets (a client's own metadata keeps its other keys).
META_KEY_NAME = METADATA_KEY_NAME
META_API = "gateway_api"
#: task type names as the API accepts them (an Enum call per request costs more than a set lookup)
TASK_TYPES = frozenset(t.value for t in TaskType)
#: ``x-router-reasoning`` is cut to this many characters.
MAX_REASONING_HEADER = 1024


def job_id_for(idempotency_key: str | None) -> str:
    """The Idempotency-Key itself when it is a valid job id, else a stable hash of it;
    a fresh id without one. The same key always gives the same job, so a retry is
    answered from the first run instead of running the job twice."""
    if not idempotency_key:
        return secrets.token_hex(16)  # as random as uuid4().hex, without building a UUID
    if is_valid_job_id(idempotency_key):
        return idempotency_key
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


class Catalog:
    """The registry as the HTTP APIs name it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._by_name: dict[str, str] = {}
        for model_id, spec in registry.models.items():
            self._by_name.setdefault(spec.provider_model, model_id)
        for model_id in registry.models:
            self._by_name[model_id] = model_id

    def resolve(self, name: str) -> str | None:
        """The registry id a model name forces; None for ``auto``.

        Raises:
            ApiError: 404 for a name the registry does not know.
        """
        if name in AUTO_MODELS:
            return None
        bare = name.removeprefix("router/")
        model_id = self._by_name.get(bare)
        if model_id is None:
            known = ", ".join(["auto", *self.registry.models])
            raise ApiError(
                "not_found",
                f"The model `{name}` does not exist on this gateway; use one of: {known} "
                "(or a provider model name they serve)",
                code="model_not_found",
                param="model",
            )
        return model_id

    def spec(self, model_id: str | None) -> ModelSpec | None:
        return self.registry.get(model_id) if model_id else None

    def public_name(self, model_id: str | None, requested: str) -> str:
        """What a response's ``model`` field says: the provider's name of the model that
        answered (``gpt-4o``), or the name asked for when no model answered."""
        spec = self.spec(model_id)
        return spec.provider_model if spec else requested


def routing_hints(headers: Mapping[str, str], metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``task_type`` and ``complexity`` from the headers, else from the body's metadata.

    Raises:
        ApiError: 400 for an unknown task type or a complexity outside 1..10.
    """
    meta = metadata or {}
    task = headers.get("x-router-task-type") or meta.get("task_type")
    complexity = headers.get("x-router-complexity") or meta.get("complexity")
    hints: dict[str, Any] = {}
    if task is not None:
        if str(task) not in TASK_TYPES:
            known = ", ".join(t.value for t in TaskType)
            raise ApiError(
                "invalid_request", f"unknown task type {task!r}; one of: {known}", param="x-router-task-type"
            )
        hints["task_type"] = str(task)
    if complexity is not None:
        try:
            value = int(str(complexity))
        except ValueError:
            value = 0
        if not 1 <= value <= 10:
            raise ApiError("invalid_request", "complexity must be an integer from 1 to 10", param="x-router-complexity")
        hints["complexity"] = value
    no_fallback = headers.get("x-router-no-fallback") or meta.get("no_fallback")
    if no_fallback is not None:
        flag = str(no_fallback).strip().lower()
        if flag not in ("1", "true", "yes", "0", "false", "no"):
            raise ApiError(
                "invalid_request", "x-router-no-fallback must be 1/true or 0/false", param="x-router-no-fallback"
            )
        hints[CONTEXT_NO_FALLBACK] = flag in ("1", "true", "yes")
    return hints


def build_job(
    *,
    job_id: str,
    messages: list[ChatMessage],
    system: str | None,
    force_model: str | None,
    hints: Mapping[str, Any],
    caller: str,
    api: str,
    client_metadata: Mapping[str, Any] | None,
    stream: bool,
    **fields: Any,
) -> Job:
    """A validated Job; ``fields`` are further Job fields (max_tokens, temperature, ...).

    Raises:
        ApiError: 400 when the Job contract refuses a value (the message names the field).
    """
    metadata = {**(client_metadata or {}), META_KEY_NAME: caller, META_API: api}
    # messages are already ChatMessages: convert takes them as they are; None means "not given"
    raw: dict[str, Any] = {"id": job_id, "messages": messages, "metadata": metadata, "stream": stream}
    if system is not None:
        raw["system"] = system
    no_fallback = False  # only a forced model can be kept to
    for name, value in hints.items():
        if name == CONTEXT_NO_FALLBACK:
            no_fallback = value
        else:
            raw[name] = value
    if force_model:
        raw["context"] = {"force_model": force_model, **({CONTEXT_NO_FALLBACK: True} if no_fallback else {})}
    for name, value in fields.items():
        if value is not None:
            raw[name] = value
    try:
        return msgspec.convert(raw, Job)
    except msgspec.ValidationError as exc:
        raise ApiError("invalid_request", str(exc)) from exc


def header_safe(text: str, limit: int = MAX_REASONING_HEADER) -> str:
    """Printable ASCII on one line (a header value cannot carry newlines or UTF-8 safely)."""
    flat = " ".join(text.split())
    safe = flat.encode("ascii", "replace").decode("ascii")
    return safe[:limit]


def router_headers(
    job_id: str, result: Result | None = None, *, model: str | None = None, provider: str | None = None
) -> dict[str, str]:
    """``x-request-id`` and the ``x-router-*`` headers; only the model and its provider
    when a stream starts (cost and attempts are known at its end: the ledger has them)."""
    headers = {"x-request-id": job_id}
    if result is not None:
        headers["x-router-model"] = result.model or ""
        headers["x-router-provider"] = result.provider or ""
        headers["x-router-attempts"] = str(len(result.attempts))
        headers["x-router-cost-usd"] = f"{result.cost_usd:.8f}"
        headers["x-router-reasoning"] = header_safe(result.reasoning)
    elif model:
        headers["x-router-model"] = model
        headers["x-router-provider"] = provider or ""
    return headers


def answering_usage(result: Result) -> tuple[int, int]:
    """(tokens in, tokens out) of the attempt that answered."""
    if result.attempts and result.attempts[-1].success:
        last = result.attempts[-1]
        return last.tokens_in, last.tokens_out
    return result.tokens_in, result.tokens_out
