"""Closed sets of metric label values: what a fleet metric may be labelled with.

A label value that is not in its set is reported as ``_OTHER`` (OpenTelemetry's fallback
value for ``error.type``), so a job id, a prompt, or a provider's free-form text can never
become a time series: cardinality is fixed by the registry and these tables, not by traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fleet_shared.subjects import PROVIDERS

#: Reported instead of any value outside a label's set.
OTHER = "_OTHER"
#: Reported where there is no value (a job that failed before any model was chosen).
NONE = "none"

#: Provider failures (``fleet_workers.providers.errors`` draws the tree), by class.
TRANSIENT_ERRORS = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection", "bad_response"})
PERMANENT_ERRORS = frozenset({"auth", "context_length", "content_filtered", "invalid_request"})
#: An adapter raised something unexpected (a bug): the job escalates.
INTERNAL_ERRORS = frozenset({"worker_error"})
#: Codes of failed Results that are not a provider's: intake, routing, delivery.
JOB_ERRORS = frozenset(
    {
        "not_accepted",  # JetStream refused the submission
        "too_large",
        "invalid_json",
        "invalid_job",
        "unknown_model",
        "no_model_available",
        "all_models_failed",
        "no_worker",
        "max_deliveries",
        "budget_exhausted",  # no model within budget and no free one left
    }
)
#: A 2xx answer that failed a quality check (``fleet_workers.validators``): it escalates.
QUALITY_CHECKS = ("truncated", "empty", "refusal", "json", "schema", "code")
QUALITY_ERRORS = frozenset(f"quality_{check}" for check in QUALITY_CHECKS)
ERROR_CODES = TRANSIENT_ERRORS | PERMANENT_ERRORS | INTERNAL_ERRORS | QUALITY_ERRORS | JOB_ERRORS
ERROR_CLASSES = ("none", "transient", "permanent", "quality", "internal")

#: The router policy's rules (``fleet_router.policy``), plus the two outcomes that never reach it.
RULES = frozenset(
    {
        "simple_local",
        "complex",
        "task_preference",
        "escalate_commercial",
        "forced",
        "fail_fast",
        "wait",
        "exhausted",
        "fallback",
        "budget_exhausted",
        "rejected",
        "given_up",
    }
)
OUTCOMES = ("success", "failure")
TOKEN_TYPES = ("input", "output")
HEALTH_STATES = ("up", "ramping", "cooling", "down")
#: Why a job was left queued instead of called: the fleet's own rpm/tpm limiter (worker), or
#: every candidate cooling down after a provider's 429 / overloaded (router).
WAIT_SOURCES = ("limiter", "cooldown")
#: Durable consumer names of the services (and the ledger's short names).
CONSUMERS = frozenset(
    {
        "router-jobs",
        "router-escalations",
        "router-deadletter",
        "ledger-events",
        "ledger-results",
        "ledger-feedback",
        "feedback",
        "events",
        "results",
        *(f"worker-{p}" for p in PROVIDERS),
    }
)
LEDGER_ERROR_KINDS = frozenset({"decode", "transient", "permanent", "fetch", "unexpected"})
LEDGER_TABLES = frozenset({"routing_decisions", "attempts", "feedback"})

#: ``gen_ai.provider.name`` well-known values (OTel GenAI conventions); LM Studio has none.
GEN_AI_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "lmstudio": "lmstudio"}
#: ``gen_ai.operation.name``: Gemini's API is generateContent, the others are chat APIs.
GEN_AI_OPERATION = {"gemini": "generate_content"}

_KEY_FINGERPRINT = re.compile(r"^[0-9a-f]{12}$")


def error_class(code: str | None) -> str:
    """``none``, ``transient``, ``permanent``, ``quality`` or ``internal`` (an unknown code is internal)."""
    if code is None:
        return "none"
    if code in TRANSIENT_ERRORS:
        return "transient"
    if code in PERMANENT_ERRORS:
        return "permanent"
    if code in QUALITY_ERRORS:
        return "quality"
    return "internal"


class LabelSet:
    """One label's closed set of values; ``bound(value)`` maps the rest to ``_OTHER``."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values) | {OTHER}

    def bound(self, value: str | None) -> str:
        if value is None:
            return NONE if NONE in self.values else OTHER
        return value if value in self.values else OTHER


class PrefixedSet(LabelSet):
    """Values that start with one of ``prefixes`` (a provider's dated snapshot of a model
    it was asked for: ``gpt-4o`` -> ``gpt-4o-2024-08-06``), at most ``cap`` of them."""

    def __init__(self, prefixes: Iterable[str], *, cap: int = 64, max_len: int = 80) -> None:
        self.prefixes = tuple(sorted(set(prefixes), key=len, reverse=True))
        self.cap = cap
        self.max_len = max_len
        super().__init__(self.prefixes)

    def bound(self, value: str | None) -> str:
        if not value or len(value) > self.max_len:
            return OTHER
        if value in self.values:
            return value
        if len(self.values) > self.cap or not value.startswith(self.prefixes):
            return OTHER
        self.values = self.values | {value}
        return value


def key_label(fingerprint: str) -> str:
    """A key's label: its 12-hex fingerprint (never the key), or ``none``."""
    return fingerprint if _KEY_FINGERPRINT.match(fingerprint) else NONE
