"""Every message on the wire, as msgspec Structs.

Public (plain, untagged JSON objects any NATS client can write by hand):
    Job, Result (with Attempt, ErrorInfo, ChatMessage)
    StreamChunk  tokens of a job with ``stream: true``, on <p>.stream.<job_id>
Internal:
    Dispatch  router -> worker on <p>.dispatch.<provider>, and back on <p>.escalate.<provider>
    Decision, AttemptRecord   ledger feed, a tagged union (field "type"); a Decision
              travels inside the Dispatch, the Result and the AttemptRecord

Rules (see STYLE.md): types only grow, new fields get defaults, decoding validates once;
``python -m fleet_shared.schema`` writes the JSON Schema into deploy/schema/.
"""

from __future__ import annotations

import enum
import inspect
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from fleet_shared.subjects import JOB_ID_PATTERN


class TaskType(str, enum.Enum):
    CODE_GENERATION = "code_generation"
    CODE_REFACTOR = "code_refactor"
    REASONING = "reasoning"
    ANALYSIS = "analysis"
    COMPLETION = "completion"
    CREATIVE = "creative"


JobId = Annotated[str, Meta(pattern=JOB_ID_PATTERN, description="letters, digits, _ and -; at most 128")]
Complexity = Annotated[int, Meta(ge=1, le=10)]
NonNegInt = Annotated[int, Meta(ge=0)]
#: Where a job's task type or complexity came from: the job gave it, the router inferred it
#: from the job's text, or the configured default was used.
LabelSource = Literal["given", "inferred", "default"]


class ToolCall(Struct, frozen=True):
    """A model's call of one tool: ``arguments`` is JSON text, as OpenAI carries it."""

    id: str
    name: str
    arguments: str = "{}"


class Tool(Struct, frozen=True, omit_defaults=True):
    """A function the model may call; ``parameters`` is a JSON Schema of its arguments."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    description: str = ""
    parameters: dict[str, Any] = {}


class ResponseFormat(Struct, frozen=True, omit_defaults=True):
    """The answer's form: ``json_object`` (any JSON object) or ``json_schema`` (valid for
    ``json_schema``, named ``name``); ``text`` is the default."""

    type: Annotated[str, Meta(pattern=r"^(text|json_object|json_schema)$")] = "text"
    json_schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


class ChatMessage(Struct, frozen=True, omit_defaults=True):
    """One turn. An assistant turn may carry ``tool_calls``; a ``tool`` turn is the result
    of the call ``tool_call_id`` (``name``: the tool's name, which Gemini needs)."""

    role: Annotated[str, Meta(pattern=r"^(system|user|assistant|tool)$")]
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


#: ``tool_choice`` values other than a tool's name
TOOL_CHOICES = ("auto", "none", "required")
#: Job context key: true forbids escalating from ``force_model`` to any other model
CONTEXT_NO_FALLBACK = "no_fallback"
#: Job context key: true fails an answer cut at the token limit (``quality_truncated``), so
#: the job escalates to another model instead of returning a cut answer
CONTEXT_REJECT_TRUNCATED = "reject_truncated"


class Job(Struct, frozen=True, omit_defaults=True):
    """A request to serve one prompt. Either ``prompt`` or ``messages`` is required."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    id: JobId | None = None
    task_type: TaskType | None = None
    complexity: Complexity | None = None
    system: str | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False  # also publish the answer's tokens on <p>.stream.<job_id> as they come
    #: functions the model may call; only models whose registry entry has supports_tools
    tools: list[Tool] | None = None
    #: "auto" (default), "none", "required" (some tool), or the name of the one tool to call
    tool_choice: str | None = None
    response_format: ResponseFormat | None = None
    stop: Annotated[list[str], Meta(max_length=16)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.prompt and not self.messages:
            raise ValueError("a job needs a non-empty `prompt` or `messages`")
        if self.prompt and self.messages:
            raise ValueError("give either `prompt` or `messages`, not both")
        forced = (self.context or {}).get("force_model")
        if forced is not None and not isinstance(forced, str):
            raise ValueError("`context.force_model` must be a string")
        for flag in (CONTEXT_NO_FALLBACK, CONTEXT_REJECT_TRUNCATED):
            if not isinstance((self.context or {}).get(flag, False), bool):
                raise ValueError(f"`context.{flag}` must be a boolean")
        choice = self.tool_choice
        if choice not in (None, *TOOL_CHOICES) and choice not in {t.name for t in self.tools or ()}:
            raise ValueError(f"`tool_choice` {choice!r} names no tool of `tools`")

    @property
    def force_model(self) -> str | None:
        return (self.context or {}).get("force_model")

    @property
    def no_fallback(self) -> bool:
        """The forced model only: when it fails, the job fails (no escalation)."""
        return bool((self.context or {}).get(CONTEXT_NO_FALLBACK, False))

    def chat(self) -> list[ChatMessage]:
        """The conversation as messages, without the system prompt."""
        if self.messages:
            return [m for m in self.messages if m.role != "system"]
        return [ChatMessage("user", self.prompt or "")]

    def system_prompt(self) -> str | None:
        parts = [self.system] if self.system else []
        parts += [m.content for m in self.messages or () if m.role == "system"]
        return "\n\n".join(parts) or None

    def objective(self) -> str:
        """The text the ledger stores as the job's objective."""
        if self.prompt:
            return self.prompt
        return "\n".join(m.content for m in self.chat())


#: Job metadata fields with a meaning to the fleet: the name of the API key that sent the job
#: (the gateway sets it; any client may) and its team. Budgets per key and team draw on these,
#: and the ledger stores the key name with the job's decision.
METADATA_KEY_NAME = "key_name"
METADATA_TEAM = "team"


class ErrorInfo(Struct, frozen=True):
    code: str
    message: str


class Attempt(Struct, frozen=True):
    """One call of one model for one job."""

    model: str
    provider: str
    success: bool
    error: ErrorInfo | None = None
    latency_ms: float = 0.0
    tokens_in: NonNegInt = 0
    tokens_out: NonNegInt = 0
    cost_usd: float = 0.0
    ttft_ms: float | None = None  # time to the first token (streamed calls only)
    cached_tokens_in: NonNegInt = 0  # of tokens_in, read from the provider's prompt cache
    reasoning_tokens: NonNegInt = 0  # of tokens_out, spent thinking
    estimated_cost_usd: float = 0.0  # the router's estimate before dispatch
    truncated: bool = False  # the answer stopped at the token limit
    provider_ms: float | None = None  # the provider's own time, when it reports one (openai-processing-ms)
    #: a streamed attempt that failed after text was sent: that text (with any earlier attempt's
    #: it continued); the next attempt continues it instead of starting over
    partial_content: str | None = None


class Decision(Struct, frozen=True, kw_only=True, tag="decision"):
    """The router chose a model for a job (or rejected it: model is None).

    It has no stored message of its own: a decision that sends an attempt travels inside
    the Dispatch and comes back to the ledger inside that attempt's outcome (the Result, or
    the AttemptRecord of a failure); one no attempt follows (rejected, no model left, given
    up) inside the failed Result. The ledger still reads <p>.events.decision (what routers
    before this one published)."""

    job_id: str
    attempt_no: int
    objective: str
    task_type: str | None
    complexity: int | None
    model: str | None
    provider: str | None
    reasoning: str
    estimated_cost_usd: float = 0.0
    estimated_latency_ms: float = 0.0
    at: float = 0.0
    task_type_source: LabelSource | None = None
    complexity_source: LabelSource | None = None
    #: the A/B experiment the job is in and its variant ("shadow" for a shadow copy)
    experiment: str | None = None
    variant: str | None = None
    #: the job this one is a shadow copy of (its answer recorded, never returned)
    shadow_of: str | None = None


class Result(Struct, frozen=True):
    """The final outcome of a job: published once on <p>.result.<job_id>."""

    job_id: str
    success: bool
    content: str | None = None
    model: str | None = None
    provider: str | None = None
    task_type: TaskType | None = None
    complexity: int | None = None
    reasoning: str = ""
    attempts: list[Attempt] = []
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: ErrorInfo | None = None
    metadata: dict[str, Any] | None = None
    estimated_cost_usd: float = 0.0
    estimated_latency_ms: float = 0.0
    truncated: bool = False  # the answer stopped at the token limit
    #: the model asked for these tool calls (``content`` may then be empty)
    tool_calls: list[ToolCall] | None = None
    #: why the answer ended: stop, length, tool_calls, content_filter (None: not reported)
    finish_reason: str | None = None
    task_type_source: LabelSource | None = None  # None: not recorded (the job was never routed)
    complexity_source: LabelSource | None = None
    #: the router's decision of the last attempt (for the ledger; see ``Decision``)
    decision: Decision | None = None


class BudgetAlert(Struct, frozen=True, kw_only=True):
    """A budget crossed its soft limit, or refused a reservation: published on <p>.alerts.budget."""

    scope: str  # fleet, key:<name>, team:<name>, model:<id>, provider:<name>
    period: str  # d<YYYYMMDD> or m<YYYYMM> (UTC)
    level: str  # "soft": past the soft fraction of the limit; "exhausted": a reservation was refused
    limit_usd: float
    committed_usd: float  # spent plus reserved, when the alert was raised
    at: float  # unix seconds


class Dispatch(Struct, frozen=True, kw_only=True):
    """A routed job: router -> worker, and worker -> router after a failed attempt."""

    job_id: str
    job: Job
    task_type: TaskType
    complexity: int
    model: str
    provider: str
    provider_model: str
    reasoning: str
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    max_tokens: int = 1024
    estimated_cost_usd: float = 0.0
    estimated_latency_ms: float = 0.0
    attempts: list[Attempt] = []
    reply_to: str | None = None
    accepted_at: float = 0.0  # unix seconds when the router first saw the job
    #: the budget reservation of this attempt (``fleet_shared.budget``): the worker settles
    #: the hold on these keys with the attempt's actual cost
    budget_hold: str | None = None
    budget_keys: list[str] = []
    task_type_source: LabelSource | None = None
    complexity_source: LabelSource | None = None
    #: the decision that sent this attempt, carried to its outcome (None on an escalation:
    #: the failed attempt's record took it to the ledger)
    decision: Decision | None = None


class StreamChunk(Struct, frozen=True, kw_only=True):
    """A piece of a streamed answer on <p>.stream.<job_id> (core NATS, not stored).

    Each attempt streams its own sequence (``attempt_no``, ``seq`` from 0); a client resets
    what it shows when ``attempt_no`` changes. ``done`` ends an attempt's sequence: with
    ``error`` null the answer is complete (the end marker); with ``error`` set the attempt
    failed and, when ``escalated``, the job goes on with another model's attempt.
    """

    job_id: str
    attempt_no: int
    seq: int
    delta: str = ""
    model: str = ""
    done: bool = False
    error: ErrorInfo | None = None
    escalated: bool = False
    #: this attempt continues the text of the failed attempts before it, which had this many
    #: characters: a client keeps what it shows and appends (0: a fresh answer)
    continues: NonNegInt = 0


class AttemptRecord(Struct, frozen=True, kw_only=True, tag="attempt"):
    """A failed attempt, published as it happens (a successful one travels inside the Result)."""

    job_id: str
    attempt_no: int
    attempt: Attempt
    at: float = 0.0
    #: the router's decision that sent this attempt (see ``Decision``)
    decision: Decision | None = None


LedgerEvent = Decision | AttemptRecord

#: Feedback scores: 1 (bad) to 5 (excellent), like a five-star rating; fractions allowed.
FEEDBACK_SCORE_MIN = 1.0
FEEDBACK_SCORE_MAX = 5.0


class Feedback(Struct, frozen=True, kw_only=True):
    """A user's score of a job's answer, published on <p>.feedback (``modelrouter feedback``,
    the gateway's ``POST /v1/feedback``); the ledger keeps it in its ``feedback`` table."""

    job_id: JobId
    score: Annotated[float, Meta(ge=FEEDBACK_SCORE_MIN, le=FEEDBACK_SCORE_MAX, description="1 (bad) to 5 (excellent)")]
    comment: Annotated[str, Meta(max_length=4000)] = ""


job_decoder = msgspec.json.Decoder(Job)
result_decoder = msgspec.json.Decoder(Result)
dispatch_decoder = msgspec.json.Decoder(Dispatch)
event_decoder = msgspec.json.Decoder(LedgerEvent)
stream_chunk_decoder = msgspec.json.Decoder(StreamChunk)
budget_alert_decoder = msgspec.json.Decoder(BudgetAlert)
feedback_decoder = msgspec.json.Decoder(Feedback)
encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return encoder.encode(value)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every wire message, keyed by file name.

    Descriptions are docstrings put through ``inspect.cleandoc``, so the schema does not
    depend on how a msgspec release formats them (0.23 stopped dedenting).
    """
    types: dict[str, Any] = {
        "job.schema.json": Job,
        "result.schema.json": Result,
        "dispatch.schema.json": Dispatch,
        "ledger-event.schema.json": LedgerEvent,
        "stream-chunk.schema.json": StreamChunk,
        "budget-alert.schema.json": BudgetAlert,
        "feedback.schema.json": Feedback,
    }
    return {name: _clean_descriptions(msgspec.json.schema(t)) for name, t in types.items()}


def _clean_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def write_schemas(folder: str) -> list[str]:
    import os

    os.makedirs(folder, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n")
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    for p in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "deploy/schema"):
        print(p)
