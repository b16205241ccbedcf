"""The ledger's SQL layer: one batch of decoded messages -> one transaction.

Messages come at least once and in any order, so every write is an idempotent upsert keyed
by job_id (``routing_decisions``), (job_id, attempt_no) (``attempts``) or the message id
(``feedback``, written once):

* a Decision (on its own, or carried inside the Result or AttemptRecord of the attempt it
  sent) inserts the job's row, or fills what is still missing; a newer decision
  (higher attempt_no) replaces the choice (model, provider, reasoning, estimates) only
  while the job has no Result, so a late decision never clobbers a finished row;
* a Result fills or overwrites the final fields and keeps the objective it finds;
* an attempt inside a Result is the final word on it (a worker that died after recording
  a failed call and then succeeded on redelivery recorded the same attempt twice); an
  AttemptRecord fills a gap, and overwrites only while the job has no Result.

``collapse`` first merges duplicates inside the batch: one statement's rows must not touch
the same key twice, and rows are sorted by key so concurrent batches lock rows in the same
order (no deadlocks between the events and the results consumers).

Each row also says where its task type and complexity came from (``task_type_source``,
``complexity_source``: given, inferred or default): a Decision fills them while they are
missing, a Result (the final word) sets them when it carries them.

Free text (objective, reasoning, error messages) is made storable first: PostgreSQL's TEXT
cannot hold NUL, which a hostile prompt may carry; such a row would otherwise be refused
and the job left without its ledger row. With ``store_prompt="hash"`` the objective is
stored as ``sha256:<hex>`` of the prompt, never its text.

Every statement is a constant with ``$n`` parameters: no value is ever formatted into SQL.
Each statement takes its batch as one array per column and ``unnest``s them: one round
trip and one plan per table per batch, where ``executemany`` binds and executes once per
row (measured on this box: about 4x the rows/s).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import msgspec

from fleet_shared.schema import METADATA_KEY_NAME, Attempt, AttemptRecord, Decision, Feedback, Result

Message = Decision | AttemptRecord | Result | Feedback
StorePrompt = Literal["text", "hash"]


def pg_text(value: str | None) -> str | None:
    """``value`` as PostgreSQL TEXT accepts it: NUL and unencodable characters become U+FFFD."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def prompt_hash(text: str) -> str:
    """What the ledger stores instead of a prompt when told not to keep prompts."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message and the unix time its stream stored it (its best timestamp)."""

    message: Message
    stored_at: float
    msg_id: str = ""  # the message's own id (Nats-Msg-Id, else stream:sequence): keys feedback


@dataclass(slots=True)
class Rows:
    """Parameter tuples for each statement, one per key, sorted by key."""

    decisions: list[tuple] = field(default_factory=list)
    results: list[tuple] = field(default_factory=list)
    attempt_records: list[tuple] = field(default_factory=list)
    result_attempts: list[tuple] = field(default_factory=list)
    feedback: list[tuple] = field(default_factory=list)

    @property
    def result_job_ids(self) -> list[str]:
        return [row[0] for row in self.results]

    @property
    def decision_job_ids(self) -> list[str]:
        return [row[0] for row in self.decisions]

    def count(self) -> int:
        return (
            len(self.decisions)
            + len(self.results)
            + len(self.attempt_records)
            + len(self.result_attempts)
            + len(self.feedback)
        )


_NEWER = "(r.finished_at IS NULL AND EXCLUDED.decision_attempt_no > COALESCE(r.decision_attempt_no, 0))"


def _choice(column: str) -> str:
    # a newer, unfinished decision replaces the choice; otherwise only fill a gap
    return f"{column} = CASE WHEN {_NEWER} THEN EXCLUDED.{column} ELSE COALESCE(r.{column}, EXCLUDED.{column}) END"


DECISION_SQL = f"""
INSERT INTO routing_decisions AS r (job_id, "timestamp", objective, task_type, complexity,
    selected_model, provider, reasoning, estimated_cost, estimated_time, task_type_source,
    complexity_source, decision_attempt_no, experiment, variant, shadow_of)
SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::int[], $6::text[],
    $7::text[], $8::text[], $9::float8[], $10::float8[], $11::text[], $12::text[], $13::int[],
    $14::text[], $15::text[], $16::text[])
ON CONFLICT (job_id) DO UPDATE SET
    "timestamp" = CASE WHEN r.decision_attempt_no IS NULL THEN EXCLUDED."timestamp"
                       ELSE LEAST(r."timestamp", EXCLUDED."timestamp") END,
    objective = COALESCE(r.objective, EXCLUDED.objective),
    task_type = COALESCE(r.task_type, EXCLUDED.task_type),
    complexity = COALESCE(r.complexity, EXCLUDED.complexity),
    task_type_source = COALESCE(r.task_type_source, EXCLUDED.task_type_source),
    complexity_source = COALESCE(r.complexity_source, EXCLUDED.complexity_source),
    experiment = COALESCE(r.experiment, EXCLUDED.experiment),
    variant = COALESCE(r.variant, EXCLUDED.variant),
    shadow_of = COALESCE(r.shadow_of, EXCLUDED.shadow_of),
    {_choice("selected_model")},
    {_choice("provider")},
    {_choice("reasoning")},
    {_choice("estimated_cost")},
    {_choice("estimated_time")},
    decision_attempt_no = GREATEST(r.decision_attempt_no, EXCLUDED.decision_attempt_no)
"""

RESULT_SQL = """
INSERT INTO routing_decisions AS r (job_id, "timestamp", task_type, complexity, selected_model,
    provider, reasoning, estimated_cost, estimated_time, actual_cost, execution_time, success,
    tokens_used, tokens_in, tokens_out, error_code, error_message, attempts_count, finished_at, truncated,
    api_key_name, task_type_source, complexity_source)
SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::int[], $5::text[], $6::text[],
    $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::bool[], $13::int[],
    $14::int[], $15::int[], $16::text[], $17::text[], $18::int[], $19::float8[], $20::bool[],
    $21::text[], $22::text[], $23::text[])
ON CONFLICT (job_id) DO UPDATE SET
    "timestamp" = COALESCE(r."timestamp", EXCLUDED."timestamp"),
    task_type = COALESCE(EXCLUDED.task_type, r.task_type),
    complexity = COALESCE(EXCLUDED.complexity, r.complexity),
    task_type_source = COALESCE(EXCLUDED.task_type_source, r.task_type_source),
    complexity_source = COALESCE(EXCLUDED.complexity_source, r.complexity_source),
    selected_model = COALESCE(EXCLUDED.selected_model, r.selected_model),
    provider = COALESCE(EXCLUDED.provider, r.provider),
    reasoning = COALESCE(EXCLUDED.reasoning, r.reasoning),
    estimated_cost = COALESCE(EXCLUDED.estimated_cost, r.estimated_cost),
    estimated_time = COALESCE(EXCLUDED.estimated_time, r.estimated_time),
    actual_cost = EXCLUDED.actual_cost,
    execution_time = EXCLUDED.execution_time,
    success = EXCLUDED.success,
    tokens_used = EXCLUDED.tokens_used,
    tokens_in = EXCLUDED.tokens_in,
    tokens_out = EXCLUDED.tokens_out,
    error_code = EXCLUDED.error_code,
    error_message = EXCLUDED.error_message,
    attempts_count = EXCLUDED.attempts_count,
    finished_at = LEAST(r.finished_at, EXCLUDED.finished_at),
    truncated = EXCLUDED.truncated,
    api_key_name = COALESCE(EXCLUDED.api_key_name, r.api_key_name)
"""

_ATTEMPT_INSERT = """
INSERT INTO attempts AS a (job_id, attempt_no, model, provider, success, error_code,
    error_message, latency_ms, tokens_in, tokens_out, cost_usd, at, ttft_ms, cached_tokens_in,
    reasoning_tokens, estimated_cost_usd, truncated)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bool[], $6::text[],
    $7::text[], $8::float8[], $9::int[], $10::int[], $11::float8[], $12::float8[], $13::float8[],
    $14::int[], $15::int[], $16::float8[], $17::bool[])
"""

ATTEMPT_RECORD_SQL = (
    _ATTEMPT_INSERT
    + """
ON CONFLICT (job_id, attempt_no) DO UPDATE SET
    model = EXCLUDED.model, provider = EXCLUDED.provider, success = EXCLUDED.success,
    error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
    latency_ms = EXCLUDED.latency_ms, tokens_in = EXCLUDED.tokens_in,
    tokens_out = EXCLUDED.tokens_out, cost_usd = EXCLUDED.cost_usd, at = EXCLUDED.at,
    ttft_ms = EXCLUDED.ttft_ms, cached_tokens_in = EXCLUDED.cached_tokens_in,
    reasoning_tokens = EXCLUDED.reasoning_tokens, estimated_cost_usd = EXCLUDED.estimated_cost_usd,
    truncated = EXCLUDED.truncated
WHERE NOT EXISTS (SELECT 1 FROM routing_decisions r WHERE r.job_id = EXCLUDED.job_id AND r.finished_at IS NOT NULL)
"""
)

RESULT_ATTEMPT_SQL = (
    _ATTEMPT_INSERT
    + """
ON CONFLICT (job_id, attempt_no) DO UPDATE SET
    model = EXCLUDED.model, provider = EXCLUDED.provider, success = EXCLUDED.success,
    error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
    latency_ms = EXCLUDED.latency_ms, tokens_in = EXCLUDED.tokens_in,
    tokens_out = EXCLUDED.tokens_out, cost_usd = EXCLUDED.cost_usd,
    ttft_ms = EXCLUDED.ttft_ms, cached_tokens_in = EXCLUDED.cached_tokens_in,
    reasoning_tokens = EXCLUDED.reasoning_tokens, estimated_cost_usd = EXCLUDED.estimated_cost_usd,
    truncated = EXCLUDED.truncated
"""
)


def _merge_decisions(old: tuple[Decision, float] | None, new: tuple[Decision, float]) -> tuple[Decision, float]:
    """Keep the highest attempt_no, but the earliest time (when the job was first routed).
    Each side is a Decision and the time its stream stored it."""
    if old is None:
        return new
    keep, stored_at = new if new[0].attempt_no > old[0].attempt_no else old
    earliest = min(_decision_time(*old), _decision_time(*new))
    return msgspec.structs.replace(keep, at=earliest), stored_at


def _decision_time(d: Decision, stored_at: float) -> float:
    return d.at if d.at > 0 else stored_at


def _decision_row(d: Decision, stored_at: float, store_prompt: StorePrompt) -> tuple:
    objective = prompt_hash(d.objective) if store_prompt == "hash" else pg_text(d.objective)
    return (
        d.job_id,
        _decision_time(d, stored_at),
        objective,
        d.task_type,
        d.complexity,
        d.model,
        d.provider,
        pg_text(d.reasoning),
        d.estimated_cost_usd,
        d.estimated_latency_ms / 1000.0,
        d.task_type_source,
        d.complexity_source,
        d.attempt_no,
        d.experiment,
        d.variant,
        d.shadow_of,
    )


def _result_row(r: Result, stored_at: float) -> tuple:
    # A Result carries no timestamps: the stream's time is when it finished, and that time
    # minus its latency stands in for the decision time until the Decision arrives.
    known = r.estimated_cost_usd > 0 or r.estimated_latency_ms > 0  # both 0: router left them unset
    error = r.error
    return (
        r.job_id,
        stored_at - r.latency_ms / 1000.0,
        r.task_type.value if r.task_type else None,
        r.complexity,
        r.model,
        r.provider,
        pg_text(r.reasoning) or None,
        r.estimated_cost_usd if known else None,
        r.estimated_latency_ms / 1000.0 if known else None,
        r.cost_usd,
        r.latency_ms / 1000.0,
        r.success,
        r.tokens_in + r.tokens_out,
        r.tokens_in,
        r.tokens_out,
        pg_text(error.code) if error else None,
        pg_text(error.message) if error else None,
        len(r.attempts),
        stored_at,
        r.truncated,
        _key_name(r.metadata),
        r.task_type_source,
        r.complexity_source,
    )


#: the Result metadata key the HTTP gateway sets to the name of the key that sent the job
KEY_NAME_FIELD = METADATA_KEY_NAME


def _key_name(metadata: dict[str, Any] | None) -> str | None:
    name = (metadata or {}).get(KEY_NAME_FIELD)
    return pg_text(name) if isinstance(name, str) else None


def _attempt_row(job_id: str, attempt_no: int, a: Attempt, at: float) -> tuple:
    error = a.error
    return (
        job_id,
        attempt_no,
        a.model,
        a.provider,
        a.success,
        pg_text(error.code) if error else None,
        pg_text(error.message) if error else None,
        a.latency_ms,
        a.tokens_in,
        a.tokens_out,
        a.cost_usd,
        at,
        a.ttft_ms,
        a.cached_tokens_in,
        a.reasoning_tokens,
        a.estimated_cost_usd,
        a.truncated,
    )


def collapse(batch: list[Envelope], *, store_prompt: StorePrompt = "text") -> Rows:
    """Merge a batch into one row per key (later messages win, except as documented)."""
    # each message with the time its stream stored it
    decisions: dict[str, tuple[Decision, float]] = {}
    results: dict[str, tuple[Result, float]] = {}
    records: dict[tuple[str, int], tuple] = {}
    result_attempts: dict[tuple[str, int], tuple] = {}
    feedback: dict[str, tuple] = {}
    for env in batch:
        m = env.message
        if isinstance(m, Feedback):
            feedback[env.msg_id] = (env.msg_id, m.job_id, m.score, pg_text(m.comment), env.stored_at)
        elif isinstance(m, Decision):
            decisions[m.job_id] = _merge_decisions(decisions.get(m.job_id), (m, env.stored_at))
        elif isinstance(m, AttemptRecord):
            at = m.at if m.at > 0 else env.stored_at
            records[(m.job_id, m.attempt_no)] = _attempt_row(m.job_id, m.attempt_no, m.attempt, at)
            if m.decision is not None:  # the decision that sent the attempt, carried
                decisions[m.job_id] = _merge_decisions(decisions.get(m.job_id), (m.decision, env.stored_at))
        else:
            results[m.job_id] = (m, env.stored_at)
            if m.decision is not None:
                decisions[m.job_id] = _merge_decisions(decisions.get(m.job_id), (m.decision, env.stored_at))
            for no, attempt in enumerate(m.attempts, start=1):
                result_attempts[(m.job_id, no)] = _attempt_row(m.job_id, no, attempt, env.stored_at)
    return Rows(
        decisions=[_decision_row(*decisions[k], store_prompt) for k in sorted(decisions)],
        results=[_result_row(*results[k]) for k in sorted(results)],
        attempt_records=[records[k] for k in sorted(records)],
        result_attempts=[result_attempts[k] for k in sorted(result_attempts)],
        feedback=[feedback[k] for k in sorted(feedback)],
    )


# a message is written once: a redelivery (same msg_id) changes nothing
FEEDBACK_SQL = """
INSERT INTO feedback (msg_id, job_id, score, comment, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::float8[])
ON CONFLICT (msg_id) DO NOTHING
"""


def columns(rows: list[tuple]) -> list[list]:
    """Rows as one list per column: the arrays an ``unnest`` statement takes."""
    return [list(column) for column in zip(*rows)]


async def write_rows(conn: asyncpg.Connection, rows: Rows) -> None:
    """Write collapsed rows in one transaction (rolled back whole on any error).

    Raises:
        asyncpg.PostgresError, OSError: nothing was written.
    """
    async with conn.transaction():
        # routing_decisions before attempts in every batch: a fixed table order, like the
        # sorted keys, keeps two consumers' transactions from waiting on each other in a cycle
        for sql, table_rows in (
            (DECISION_SQL, rows.decisions),
            (RESULT_SQL, rows.results),
            (ATTEMPT_RECORD_SQL, rows.attempt_records),
            (RESULT_ATTEMPT_SQL, rows.result_attempts),
            (FEEDBACK_SQL, rows.feedback),
        ):
            if table_rows:
                await conn.execute(sql, *columns(table_rows))


async def write_batch(conn: asyncpg.Connection, batch: list[Envelope], *, store_prompt: StorePrompt = "text") -> Rows:
    """Collapse and write a batch in one transaction; returns the rows written."""
    rows = collapse(batch, store_prompt=store_prompt)
    await write_rows(conn, rows)
    return rows
