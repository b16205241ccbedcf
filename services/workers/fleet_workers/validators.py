"""Quality checks on a successful answer, run by the worker before the answer is accepted.

Each check is a pure function returning ``None`` (passed) or the reason it failed. A failed
check turns the attempt into a failed one with ``error.code = quality_<check>``: the router
escalates it to another model like any transient failure (never a fail-fast), and the
attempt keeps its tokens and cost (they were spent), so the ledger shows what it cost.

    empty      the answer is empty or only whitespace (and no tool was called)
    refusal    the answer opens with a refusal ("I'm sorry, but I can't help with that")
               and is short: a caveat followed by a real answer is not a refusal
    json       the job asked for JSON (response_format json_object / json_schema) and the
               answer is not one JSON value (json_object: not an object)
    schema     the job gave a JSON Schema and the answer is not valid for it (``fleet_workers.schema_check``)
    code       a code task (code_generation / code_refactor) whose fenced ```python / ```json
               blocks, or whose answer that is only Python code, do not parse
    truncated  the answer stopped at the token limit and the job said ``context.reject_truncated``

Which checks run is ``Settings.quality_checks`` (FLEET_QUALITY_CHECKS, comma-separated;
all of them by default). ``truncated`` only ever fails a job that asked for it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

from fleet_shared.labels import QUALITY_CHECKS
from fleet_shared.schema import CONTEXT_REJECT_TRUNCATED, ErrorInfo, Job, TaskType
from fleet_workers.schema_check import schema_errors

#: Task types whose answers are code.
CODE_TASKS = frozenset({TaskType.CODE_GENERATION, TaskType.CODE_REFACTOR})
#: A refusal is short: longer answers that open with a caveat usually go on to help.
REFUSAL_MAX_CHARS = 400

# A refusal's opening: an optional apology, then "I can't / won't / am unable to" + a verb of
# helping, or "As an AI ... I cannot". Anchored at the start, so "you cannot divide by zero"
# or "the function cannot fail" never match.
_REFUSAL_RE = re.compile(
    r"^(?:(?:i'?m|i am)\s+(?:so\s+|very\s+|truly\s+)?sorry|sorry|unfortunately|i apologi[sz]e)?[,.!]?\s*"
    r"(?:but\s+)?(?:as an ai(?: language model| assistant)?,?\s+)?"
    r"i\s+(?:can'?t|cannot|can not|won'?t|will not|am unable to|'m unable to"
    r"|am not able to|'m not able to|must decline to|must refuse to)\s+"
    r"(?:help|assist|comply|provide|fulfil|fulfill|do that|do this|create|write|generate|support|engage"
    r"|answer|share|give)\b",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset({"python", "py", "python3"})
# The first line of an answer that is only Python code (no prose, no fences).
_PYTHON_START_RE = re.compile(r"^(?:def |async def |class |import |from \S+ import |@\w)")


def check_empty(answer: str) -> str | None:
    return "the answer is empty" if not answer.strip() else None


def check_refusal(answer: str) -> str | None:
    text = answer.strip().replace("\u2019", "'")  # typographic apostrophes as plain ones
    if len(text) > REFUSAL_MAX_CHARS or not _REFUSAL_RE.match(text):
        return None
    return f"the model refused: {text[:120]!r}"


def check_json(answer: str, job: Job) -> str | None:
    fmt = job.response_format
    if fmt is None or fmt.type == "text":
        return None
    try:
        value = json.loads(answer)
    except ValueError as exc:
        return f"the job asked for JSON and the answer is not JSON ({exc})"
    if fmt.type == "json_object" and not isinstance(value, dict):
        return f"the job asked for a JSON object and the answer is a {type(value).__name__}"
    return None


def check_schema(answer: str, job: Job) -> str | None:
    fmt = job.response_format
    if fmt is None or fmt.type != "json_schema" or not fmt.json_schema:
        return None
    try:
        value = json.loads(answer)
    except ValueError as exc:
        return f"the answer is not JSON, so not valid for the schema ({exc})"
    errors = schema_errors(value, _schema_of(fmt.json_schema))
    return f"the answer is not valid for the job's JSON Schema: {'; '.join(errors[:3])}" if errors else None


def _schema_of(given: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's wrapper ``{"name": ..., "schema": {...}}`` or the schema itself."""
    inner = given.get("schema")
    return inner if isinstance(inner, dict) and "type" not in given else given


def check_code(answer: str, job: Job, task_type: str) -> str | None:
    if task_type not in CODE_TASKS:
        return None
    blocks = _FENCE_RE.findall(answer)
    if not blocks:
        stripped = answer.strip()
        return _parse_python(stripped, "the answer") if _PYTHON_START_RE.match(stripped) else None
    for n, (tag, body) in enumerate(blocks, 1):
        tag = tag.lower()
        if tag in _PYTHON_TAGS:
            reason = _parse_python(body, f"code block {n}")
        elif tag == "json":
            reason = _parse_json(body, f"code block {n}")
        else:  # a language we do not parse
            continue
        if reason:
            return reason
    return None


def _parse_python(code: str, what: str) -> str | None:
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return f"{what} is not valid Python: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # null bytes
        return f"{what} is not valid Python: {exc}"
    return None


def _parse_json(code: str, what: str) -> str | None:
    try:
        json.loads(code)
    except ValueError as exc:
        return f"{what} is not valid JSON: {exc}"
    return None


def check_truncated(truncated: bool, job: Job) -> str | None:
    if truncated and (job.context or {}).get(CONTEXT_REJECT_TRUNCATED) is True:
        return "the answer stopped at the token limit and the job rejects truncated answers"
    return None


def first_failure(
    job: Job,
    answer: str,
    *,
    task_type: str,
    truncated: bool,
    called_tools: bool,
    checks: frozenset[str] = frozenset(QUALITY_CHECKS),
) -> ErrorInfo | None:
    """The first check in ``checks`` that ``answer`` fails, as the attempt's error; None: accepted.

    An answer that is a tool call is only checked for truncation: its text may be empty.
    """
    candidates: list[tuple[str, Callable[[], str | None]]] = [("truncated", lambda: check_truncated(truncated, job))]
    if not called_tools:
        candidates += [
            ("empty", lambda: check_empty(answer)),
            ("refusal", lambda: check_refusal(answer)),
            ("json", lambda: check_json(answer, job)),
            ("schema", lambda: check_schema(answer, job)),
            ("code", lambda: check_code(answer, job, task_type)),
        ]
    for name, run in candidates:
        if name in checks and (reason := run()):
            return ErrorInfo(f"quality_{name}", reason)
    return None
