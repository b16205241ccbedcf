"""NATS subject and stream names, all derived from one configurable prefix.

Public subjects (the wire contract, see README):
    <p>.submit                durable submission, captured by the JOBS stream
    <p>.request               request-reply; the reply is the final Result
    <p>.dispatch.<provider>   router -> provider workers (DISPATCH stream)
    <p>.escalate.<provider>   failed attempt, worker -> router (ESCALATE stream)
    <p>.result.<job_id>       final Result of every job (RESULTS stream, kept)
    <p>.stream.<job_id>       StreamChunks of a job submitted with ``stream: true`` (core NATS)
Internal:
    <p>.events.attempt        failed attempts, ledger feed (EVENTS stream); <p>.events.decision
                              too, read for older routers (decisions now travel in Dispatches)
    <p>.deadletter.<stream>   messages given up after max_deliver (DEADLETTER stream)
    <p>.ledger.committed      core NATS note after the ledger commits a batch
    <p>.analytics.<report>    request-reply analytics served by the ledger
    <p>.alerts.budget         BudgetAlert: a budget past its soft limit, or exhausted
    <p>.feedback              a user's score of a job's answer ({job_id, score, comment};
                              FEEDBACK stream)
"""

from __future__ import annotations

import re

PROVIDERS = ("lmstudio", "openai", "anthropic", "gemini")

#: A job id becomes a subject token, so it may not hold dots, spaces or wildcards.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


def is_valid_job_id(value: str) -> bool:
    return bool(_JOB_ID_RE.match(value))


class Subjects:
    """Every subject and stream name for one prefix (default ``llm``)."""

    def __init__(self, prefix: str = "llm") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", prefix):
            raise ValueError(f"invalid subject prefix {prefix!r}")
        self.prefix = prefix
        stem = prefix.upper().replace(".", "_").replace("-", "_")
        self.submit = f"{prefix}.submit"
        self.request = f"{prefix}.request"
        self.dispatch_all = f"{prefix}.dispatch.*"
        self.escalate_all = f"{prefix}.escalate.*"
        self.result_all = f"{prefix}.result.*"
        self.stream_all = f"{prefix}.stream.*"
        self.events_all = f"{prefix}.events.>"
        self.decision_event = f"{prefix}.events.decision"
        self.attempt_event = f"{prefix}.events.attempt"
        self.ledger_committed = f"{prefix}.ledger.committed"
        self.ledger_committed_events = f"{prefix}.ledger.committed.events"
        self.ledger_committed_feedback = f"{prefix}.ledger.committed.feedback"
        self.analytics_prefix = f"{prefix}.analytics"
        #: a user's score of a job's answer, ``{job_id, score, comment}`` (``modelrouter feedback``)
        self.feedback = f"{prefix}.feedback"
        #: keeps every feedback message (the ledger stores it; other readers may replay it)
        self.feedback_stream = f"{stem}_FEEDBACK"
        self.jobs_stream = f"{stem}_JOBS"
        self.dispatch_stream = f"{stem}_DISPATCH"
        self.escalate_stream = f"{stem}_ESCALATE"
        self.results_stream = f"{stem}_RESULTS"
        self.events_stream = f"{stem}_EVENTS"
        #: JetStream's max-deliveries advisories for our work queues, kept until handled
        self.advisories_stream = f"{stem}_ADVISORIES"
        #: messages given up after max_deliver (or refused as undecodable), kept for inspection
        self.deadletter_stream = f"{stem}_DEADLETTER"
        self.deadletter_all = f"{prefix}.deadletter.>"
        #: NATS KV buckets: model availability, leases, rate-limit counters
        self.health_bucket = f"{stem}_HEALTH"
        self.leases_bucket = f"{stem}_LEASES"
        self.rates_bucket = f"{stem}_RATES"
        #: spend per budget and period, with the open reservations (``fleet_shared.budget``)
        self.budgets_bucket = f"{stem}_BUDGETS"
        #: operator configuration the routers follow live: key ``rules`` holds the custom
        #: rules file (TOML text, ``fleet_shared.rules``); ``status.<router>`` what each loaded
        self.config_bucket = f"{stem}_CONFIG"
        #: BudgetAlert events (core NATS): a soft limit crossed, a reservation refused
        self.budget_alerts = f"{prefix}.alerts.budget"

    def dispatch(self, provider: str) -> str:
        return f"{self.prefix}.dispatch.{provider}"

    def escalate(self, provider: str) -> str:
        return f"{self.prefix}.escalate.{provider}"

    def analytics(self, report: str) -> str:
        return f"{self.analytics_prefix}.{report}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}.result.{job_id}"

    def deadletter(self, stream: str) -> str:
        """Where a message given up on ``stream`` is copied: <p>.deadletter.<stream>."""
        return f"{self.prefix}.deadletter.{stream}"

    @property
    def redelivered_streams(self) -> tuple[str, ...]:
        """The work queues whose messages may exhaust max_deliver (the ledger's never do)."""
        return (self.jobs_stream, self.dispatch_stream, self.escalate_stream)

    @staticmethod
    def max_deliveries_advisory(stream: str) -> str:
        """JetStream's advisory for a message of ``stream`` that reached max_deliver."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}.stream.{job_id}"
