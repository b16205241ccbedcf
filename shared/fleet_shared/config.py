"""Configuration: per-process Settings (the model registry is ``fleet_shared.registry``).

Settings are a frozen msgspec Struct validated on load. API keys are never stored here: they are
read from the environment by the provider endpoint (see ``provider_endpoint``) and wrapped in
``Secret`` so that no repr, log line or message can carry them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from fleet_shared.budget import BudgetConfig, load_budgets
from fleet_shared.labels import QUALITY_CHECKS
from fleet_shared.registry import Registry, builtin_providers, load_registry


class Settings(Struct, frozen=True, kw_only=True):
    """Process settings, read from the environment by ``from_env``."""

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS_URL: comma-separated server URLs."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """DATABASE_URL: the ledger's PostgreSQL."""
    subject_prefix: str = "llm"
    """FLEET_SUBJECT_PREFIX: prefix of every subject."""
    models_file: str | None = None
    """FLEET_MODELS_FILE: model registry (default: the packaged models.toml)."""
    prices_file: str | None = None
    """FLEET_PRICES_FILE: dated price table (default: the packaged prices.toml)."""
    worker_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 64
    """FLEET_WORKER_CONCURRENCY: provider calls in flight per worker process."""
    router_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 256
    """FLEET_ROUTER_CONCURRENCY: messages in flight per router process."""
    provider_timeout_s: Annotated[float, Meta(gt=0)] = 120.0
    """FLEET_PROVIDER_TIMEOUT_S: total time allowed for one provider call."""
    ack_wait_s: Annotated[float, Meta(gt=0)] = 30.0
    """FLEET_ACK_WAIT_S: JetStream redelivers a message not acked (or kept alive) within this."""
    max_deliver: Annotated[int, Meta(ge=1)] = 5
    """FLEET_MAX_DELIVER: deliveries of one message before it is given up."""
    max_prompt_bytes: Annotated[int, Meta(ge=1)] = 512 * 1024
    """FLEET_MAX_PROMPT_BYTES: larger job payloads are rejected with `too_large`."""
    result_max_age_s: Annotated[float, Meta(ge=120.0)] = 7 * 24 * 3600.0
    """FLEET_RESULT_MAX_AGE_S: how long Results stay readable by job id (at least the streams'
    de-duplication window, 120 s: JetStream refuses a shorter one)."""
    daily_budget_usd: Annotated[float, Meta(ge=0)] = 10.0
    """FLEET_DAILY_BUDGET_USD: commercial spend of the whole fleet per UTC day, held fleet-wide
    (a reservation in NATS KV before each paid call, see ``fleet_shared.budget``)."""
    monthly_budget_usd: Annotated[float, Meta(ge=0)] | None = None
    """FLEET_MONTHLY_BUDGET_USD: commercial spend of the whole fleet per UTC month; unset: none."""
    budgets_file: str | None = None
    """FLEET_BUDGETS_FILE: TOML with per key / team / model / provider budgets (README, Budgets)."""
    budget_soft_fraction: Annotated[float, Meta(gt=0, le=1)] = 0.8
    """FLEET_BUDGET_SOFT_FRACTION: share of a budget after which one alert is published."""
    budget_hold_s: Annotated[float, Meta(gt=0)] = 600.0
    """FLEET_BUDGET_HOLD_S: a reservation nobody settled (a dead process) is released after this."""
    rules_auto_apply_evidence: Annotated[int, Meta(ge=0)] = 0
    """FLEET_RULES_AUTO_APPLY_EVIDENCE: the ledger turns a recommendation into a custom rule by
    itself once its evidence counts this many jobs or attempts (0: off; fleet_ledger.auto_rules)."""
    rules_auto_apply_interval_s: Annotated[float, Meta(gt=0)] = 300.0
    """FLEET_RULES_AUTO_APPLY_INTERVAL_S: how often the ledger's auto mode reads the recommendations."""
    ledger_batch_size: Annotated[int, Meta(ge=1)] = 500
    """FLEET_LEDGER_BATCH_SIZE: messages written per ledger transaction at most."""
    ledger_linger_ms: Annotated[float, Meta(ge=0)] = 20.0
    """FLEET_LEDGER_LINGER_MS: after a batch's first message, wait this long for more (Kafka's
    linger.ms): fewer, larger transactions; a record is committed this much later at most."""
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    """FLEET_METRICS_PORT: Prometheus /metrics port; 0 turns it off."""
    stream_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    """FLEET_STREAM_REPLICAS: copies of every stream and KV bucket on a NATS cluster (JetStream
    allows 1 to 5); 3 survives the loss of one server. More than the cluster has servers fails
    at start-up; changing it on a running cluster re-replicates at the next start."""
    stream_stall_s: Annotated[float, Meta(gt=0)] = 30.0
    """FLEET_STREAM_STALL_S: a provider stream with no data for this long is a `timeout`."""
    first_token_timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    """FLEET_FIRST_TOKEN_TIMEOUT_S: how long a provider stream may be silent before its first
    event (a model thinking before it writes); the stall limit applies after that, and the
    longer of the two applies before it."""
    probe_interval_s: Annotated[float, Meta(gt=0)] = 30.0
    """FLEET_PROBE_INTERVAL_S: how often the health prober lists each provider's models."""
    cooldown_s: Annotated[float, Meta(ge=0)] = 5.0
    """FLEET_COOLDOWN_S: cooldown after a 429/529 that names no wait, and the first after a failed probe."""
    ramp_s: Annotated[float, Meta(ge=0)] = 30.0
    """FLEET_RAMP_S: after a cooldown, the share of jobs a model gets grows from 0 to all over this."""
    adaptive_half_life_s: Annotated[float, Meta(gt=0)] = 60.0
    """FLEET_ADAPTIVE_HALF_LIFE_S: an outcome counts half in the routers' recent statistics after this long."""
    adaptive_lookback_s: Annotated[float, Meta(ge=0)] = 600.0
    """FLEET_ADAPTIVE_LOOKBACK_S: how far back a starting router replays the attempt stream (a few half-lives)."""
    lmstudio_jit: bool = True
    """FLEET_LMSTUDIO_JIT: LM Studio loads a not-loaded model on its first call (slow), so route to it."""
    lmstudio_autoload: bool = False
    """FLEET_LMSTUDIO_AUTOLOAD: the worker loads a demanded model through LM Studio's REST API."""
    lmstudio_idle_unload_s: Annotated[float, Meta(gt=0)] = 900.0
    """FLEET_LMSTUDIO_IDLE_UNLOAD_S: with autoload, unload a model the worker loaded after this idle time."""
    no_worker_escalate_s: Annotated[float, Meta(gt=0)] = 60.0
    """FLEET_NO_WORKER_ESCALATE_S: a provider with queued jobs and no live worker for this long
    has its jobs escalated to other models (and gets no new ones until a worker is back)."""
    ledger_store_prompt: Literal["text", "hash"] = "text"
    """FLEET_LEDGER_STORE_PROMPT: `hash` stores `sha256:<hex>` of the prompt instead of its text."""
    quality_checks: str = ",".join(QUALITY_CHECKS)
    """FLEET_QUALITY_CHECKS: comma-separated quality checks a worker runs on an answer before
    accepting it (truncated, empty, refusal, json, schema, code; all by default; "" for none).
    A failed check escalates the job with error code ``quality_<check>``."""
    nats_user: str | None = None
    """NATS_USER: user name (with NATS_PASSWORD)."""
    nats_password: Any = None
    """NATS_PASSWORD (or NATS_PASSWORD_FILE): a ``Secret``."""
    nats_token: Any = None
    """NATS_TOKEN (or NATS_TOKEN_FILE): a ``Secret``."""
    nats_creds: str | None = None
    """NATS_CREDS: path of a .creds file (user JWT + nkey seed)."""
    nats_nkey_seed: str | None = None
    """NATS_NKEY_SEED: path of an nkey seed file."""
    nats_tls_ca: str | None = None
    """NATS_TLS_CA: CA bundle that verifies the server (turns TLS on)."""
    nats_tls_cert: str | None = None
    """NATS_TLS_CERT: client certificate for mutual TLS (with NATS_TLS_KEY)."""
    nats_tls_key: str | None = None
    """NATS_TLS_KEY: the client certificate's private key."""

    # not a field: a ClassVar mapping of field -> environment variable
    _ENV: ClassVar[dict[str, str]] = {
        "nats_url": "NATS_URL",
        "database_url": "DATABASE_URL",
        "subject_prefix": "FLEET_SUBJECT_PREFIX",
        "models_file": "FLEET_MODELS_FILE",
        "prices_file": "FLEET_PRICES_FILE",
        "worker_concurrency": "FLEET_WORKER_CONCURRENCY",
        "router_concurrency": "FLEET_ROUTER_CONCURRENCY",
        "provider_timeout_s": "FLEET_PROVIDER_TIMEOUT_S",
        "ack_wait_s": "FLEET_ACK_WAIT_S",
        "max_deliver": "FLEET_MAX_DELIVER",
        "max_prompt_bytes": "FLEET_MAX_PROMPT_BYTES",
        "result_max_age_s": "FLEET_RESULT_MAX_AGE_S",
        "daily_budget_usd": "FLEET_DAILY_BUDGET_USD",
        "monthly_budget_usd": "FLEET_MONTHLY_BUDGET_USD",
        "budgets_file": "FLEET_BUDGETS_FILE",
        "budget_soft_fraction": "FLEET_BUDGET_SOFT_FRACTION",
        "budget_hold_s": "FLEET_BUDGET_HOLD_S",
        "rules_auto_apply_evidence": "FLEET_RULES_AUTO_APPLY_EVIDENCE",
        "rules_auto_apply_interval_s": "FLEET_RULES_AUTO_APPLY_INTERVAL_S",
        "ledger_batch_size": "FLEET_LEDGER_BATCH_SIZE",
        "ledger_linger_ms": "FLEET_LEDGER_LINGER_MS",
        "metrics_port": "FLEET_METRICS_PORT",
        "stream_replicas": "FLEET_STREAM_REPLICAS",
        "stream_stall_s": "FLEET_STREAM_STALL_S",
        "first_token_timeout_s": "FLEET_FIRST_TOKEN_TIMEOUT_S",
        "probe_interval_s": "FLEET_PROBE_INTERVAL_S",
        "cooldown_s": "FLEET_COOLDOWN_S",
        "ramp_s": "FLEET_RAMP_S",
        "adaptive_half_life_s": "FLEET_ADAPTIVE_HALF_LIFE_S",
        "adaptive_lookback_s": "FLEET_ADAPTIVE_LOOKBACK_S",
        "lmstudio_jit": "FLEET_LMSTUDIO_JIT",
        "lmstudio_autoload": "FLEET_LMSTUDIO_AUTOLOAD",
        "lmstudio_idle_unload_s": "FLEET_LMSTUDIO_IDLE_UNLOAD_S",
        "no_worker_escalate_s": "FLEET_NO_WORKER_ESCALATE_S",
        "ledger_store_prompt": "FLEET_LEDGER_STORE_PROMPT",
        "quality_checks": "FLEET_QUALITY_CHECKS",
        "nats_user": "NATS_USER",
        "nats_password": "NATS_PASSWORD",
        "nats_token": "NATS_TOKEN",
        "nats_creds": "NATS_CREDS",
        "nats_nkey_seed": "NATS_NKEY_SEED",
        "nats_tls_ca": "NATS_TLS_CA",
        "nats_tls_cert": "NATS_TLS_CERT",
        "nats_tls_key": "NATS_TLS_KEY",
    }
    #: fields holding credentials: wrapped in ``Secret``; ``<VAR>_FILE`` names a file holding them
    _SECRETS: ClassVar[frozenset[str]] = frozenset({"nats_password", "nats_token"})

    def __post_init__(self) -> None:
        unknown = set(self.quality_check_set()) - set(QUALITY_CHECKS)
        if unknown:
            raise ValueError(f"unknown quality checks {sorted(unknown)}: known are {', '.join(QUALITY_CHECKS)}")

    def quality_check_set(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.quality_checks.split(",") if c.strip())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables (strings are converted and validated)."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {field: env[var] for field, var in cls._ENV.items() if env.get(var)}
        for field in cls._SECRETS:
            value = read_secret(cls._ENV[field], env)
            if value:
                raw[field] = value
        raw.update(overrides)
        for field in cls._SECRETS & raw.keys():
            if isinstance(raw[field], str):
                raw[field] = Secret(raw[field])
        return msgspec.convert(raw, cls, strict=False)

    def registry(self) -> Registry:
        return load_registry(self.models_file, self.prices_file)

    def budgets(self) -> BudgetConfig:
        """Every budget: the fleet's from these settings, the rest from ``budgets_file``.

        Raises:
            msgspec.ValidationError: the budgets file is invalid (the message names the field).
        """
        return load_budgets(
            self.budgets_file,
            daily_usd=self.daily_budget_usd,
            monthly_usd=self.monthly_budget_usd,
            soft_fraction=self.budget_soft_fraction,
            hold_s=self.budget_hold_s,
        )


class Secret:
    """A credential that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short hash that tells two keys apart without revealing either."""
        import hashlib

        return hashlib.sha256(b"fleet-key:" + self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class ProviderEndpoint(Struct, frozen=True):
    """Where a provider's API lives and how to authenticate (the key is a Secret)."""

    provider: str
    base_url: str
    api_key: Any  # Secret | None; Any keeps msgspec from trying to encode it


def provider_endpoint(
    provider: str, env: Mapping[str, str] | None = None, *, registry: Registry | None = None
) -> ProviderEndpoint:
    """The base URL and key of one provider: the built-in ones from the SDKs' environment
    variable names, an added one from its ``[providers.<name>]`` entry in ``registry``.

    Raises:
        KeyError: a provider neither built in nor in ``registry``.
    """
    env = os.environ if env is None else env
    spec = (registry.providers if registry is not None else builtin_providers())[provider]
    key = read_secret(spec.api_key_env, env) if spec.api_key_env else None
    url = (env.get(spec.base_url_env) if spec.base_url_env else None) or spec.base_url
    return ProviderEndpoint(provider, url, Secret(key) if key else None)


def read_secret(var: str, env: Mapping[str, str] | None = None) -> str | None:
    """A credential from ``var``, else from the file named by ``<var>_FILE`` (Docker and
    Kubernetes secrets), stripped of surrounding whitespace; None when neither is set.

    Raises:
        OSError: ``<var>_FILE`` names a file that cannot be read.
    """
    env = os.environ if env is None else env
    if env.get(var):
        return env[var]
    path = env.get(f"{var}_FILE")
    if not path:
        return None
    return Path(path).read_text().strip() or None
