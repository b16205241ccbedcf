"""Batch input: each item becomes a validated Job with a stable id, or a failed Result.

Accepted per line (JSON object) or per item of ``client.batch(jobs)``:

* a Job (``{"prompt": ...}`` or ``{"messages": [...]}`` plus any Job field);
* an OpenAI chat-completions request body (``{"model": ..., "messages": [...], ...}``),
  or a line of the OpenAI Batch API's input file (``{"custom_id", "method", "url", "body"}``);
  a ``model`` naming a registry model is forced (``context.force_model``), another name is
  kept in ``metadata.requested_model`` and the fleet routes as usual.

A job without an id gets one derived from its content and position (``b`` + 32 hex digits),
so re-running the same input gives the same ids: that is what makes a batch resumable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import msgspec

from fleet_shared.schema import ErrorInfo, Job, Result
from fleet_shared.subjects import is_valid_job_id

_OPENAI_ONLY = ("model", "max_completion_tokens", "n", "stop", "response_format", "tools", "stream_options")


class BatchItem(msgspec.Struct, frozen=True):
    """One input item: its position (1-based line), its id, and a Job or why there is none."""

    line: int
    job_id: str
    job: Job | None = None
    rejected: Result | None = None


def derived_id(line: int, content: str) -> str:
    """A stable id for a job without one: the same line at the same position, the same id."""
    return "b" + hashlib.sha256(f"{line}\n{content}".encode()).hexdigest()[:32]


def _text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError("`content` must be a string or a list of text parts")


def _from_openai(body: dict[str, Any], known_models: Collection[str]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValueError("an OpenAI chat-completions body needs `messages` (a list)")
    fields: dict[str, Any] = {
        "messages": [
            {"role": "system" if m.get("role") == "developer" else m.get("role"), "content": _text(m.get("content"))}
            for m in messages
            if isinstance(m, dict)
        ],
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "metadata": dict(body.get("metadata") or {}) or None,
    }
    model = body.get("model")
    if isinstance(model, str) and model in known_models:
        fields["context"] = {"force_model": model}
    elif model:
        fields["metadata"] = {**(fields["metadata"] or {}), "requested_model": model}
    return {k: v for k, v in fields.items() if v is not None}


def _is_openai(raw: dict[str, Any]) -> bool:
    return any(k in raw for k in _OPENAI_ONLY) or any(
        isinstance(m, dict) and not isinstance(m.get("content"), str) for m in raw.get("messages") or ()
    )


def to_item(line: int, raw: Any, *, content: str | None = None, known_models: Collection[str] = ()) -> BatchItem:
    """One input item as a BatchItem; never raises (a bad item is a failed Result)."""
    text = content if content is not None else json.dumps(raw, sort_keys=True, default=str)
    fallback_id = derived_id(line, text)
    try:
        if isinstance(raw, Job):
            job = raw
        elif not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        else:
            fields = dict(raw)
            if isinstance(fields.get("body"), dict):  # an OpenAI Batch API input line
                custom_id = fields.get("custom_id")
                fields = _from_openai(fields["body"], known_models)
                if isinstance(custom_id, str):
                    fields["id"] = custom_id if is_valid_job_id(custom_id) else derived_id(0, custom_id)
            elif _is_openai(fields):
                fields = _from_openai(fields, known_models)
            job = msgspec.convert(fields, Job)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        error = ErrorInfo("invalid_job", f"line {line}: {exc}")
        return BatchItem(line, fallback_id, rejected=Result(job_id=fallback_id, success=False, error=error))
    if job.id is None:
        job = msgspec.structs.replace(job, id=fallback_id)
    return BatchItem(line, job.id or fallback_id, job=job)


def read_jsonl(lines: Iterable[str], *, known_models: Collection[str] = ()) -> Iterator[BatchItem]:
    """Items of a JSON-lines input, one at a time (blank lines are skipped but counted)."""
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped:
            continue
        try:
            raw = json.loads(stripped)
        except json.JSONDecodeError as exc:
            fallback_id = derived_id(number, stripped)
            error = ErrorInfo("invalid_json", f"line {number}: not JSON ({exc.msg})")
            yield BatchItem(number, fallback_id, rejected=Result(job_id=fallback_id, success=False, error=error))
            continue
        yield to_item(number, raw, content=stripped, known_models=known_models)


def from_objects(items: Iterable[Any], *, known_models: Collection[str] = ()) -> Iterator[BatchItem]:
    """Items of ``client.batch(jobs)``: Jobs, dicts (Job, OpenAI body) or prompt strings."""
    for number, raw in enumerate(items, start=1):
        yield to_item(number, {"prompt": raw} if isinstance(raw, str) else raw, known_models=known_models)
