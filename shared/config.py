"""Configuration: the model registry (models.toml + prices.toml) and per-process Settings.

Both are frozen msgspec Structs validated on load. API keys are never stored here: they are
read from the environment by the provider endpoint (see ``provider_endpoint``) and wrapped in
``Secret`` so that no repr, log line or message can carry them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Mapping

import msgspec
from msgspec import Meta, Struct

from fleet_shared.schema import TaskType
from fleet_shared.subjects import PROVIDERS

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS_FILE = HERE / "models.toml"
DEFAULT_PRICES_FILE = HERE / "prices.toml"


class ModelSpec(Struct, frozen=True, kw_only=True):
    """One routable model. Prices are USD per million tokens."""

    id: str
    provider: str
    provider_model: str
    context_window: Annotated[int, Meta(gt=0)]
    tokens_per_s: Annotated[float, Meta(gt=0)]
    first_token_ms: Annotated[float, Meta(ge=0)] = 0.0
    input_per_mtok: Annotated[float, Meta(ge=0)] = 0.0
    output_per_mtok: Annotated[float, Meta(ge=0)] = 0.0
    cached_input_per_mtok: Annotated[float, Meta(ge=0)] = 0.0

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"model {self.id!r}: unknown provider {self.provider!r}")

    @property
    def is_local(self) -> bool:
        return self.provider == "lmstudio"

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6

    def estimate_latency_ms(self, tokens_out: int) -> float:
        return self.first_token_ms + 1000.0 * tokens_out / self.tokens_per_s


class RoutingRules(Struct, frozen=True, kw_only=True):
    """The seed's decision tree as data (see README, "Routing")."""

    simple_max_complexity: Annotated[int, Meta(ge=0, le=10)] = 3
    complex_min_complexity: Annotated[int, Meta(ge=1, le=11)] = 7
    local_failures_before_commercial: Annotated[int, Meta(ge=1)] = 2
    complex_models: list[str] = msgspec.field(default_factory=lambda: ["claude", "gemini"])
    default_task_type: TaskType = TaskType.COMPLETION
    default_complexity: Annotated[int, Meta(ge=1, le=10)] = 5
    default_max_tokens: Annotated[int, Meta(ge=1)] = 1024
    preferences: dict[TaskType, list[str]] = {}


class Registry(Struct, frozen=True, kw_only=True):
    """Every model, in declaration order, plus the routing rules."""

    models: dict[str, ModelSpec]
    rules: RoutingRules
    prices_as_of: str = ""

    def __post_init__(self) -> None:
        named = list(self.rules.complex_models)
        for prefs in self.rules.preferences.values():
            named += prefs
        unknown = sorted({m for m in named if m not in self.models})
        if unknown:
            raise ValueError(f"routing rules name unknown models: {unknown}")

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)


def _read_toml(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_registry(models_file: str | Path | None = None, prices_file: str | Path | None = None) -> Registry:
    """Read the registry and the dated price table.

    Raises:
        msgspec.ValidationError: a file does not match the schema (the message names the field).
    """
    models_raw = _read_toml(Path(models_file or DEFAULT_MODELS_FILE))
    prices_raw = _read_toml(Path(prices_file or DEFAULT_PRICES_FILE))
    prices = prices_raw.get("prices", {})
    models = {}
    for model_id, fields in models_raw.get("models", {}).items():
        merged = {**prices.get(model_id, {}), **fields, "id": model_id}
        models[model_id] = merged
    return msgspec.convert(
        {"models": models, "rules": models_raw.get("routing", {}), "prices_as_of": str(prices_raw.get("as_of", ""))},
        Registry,
    )


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
    result_max_age_s: Annotated[float, Meta(gt=0)] = 7 * 24 * 3600.0
    """FLEET_RESULT_MAX_AGE_S: how long Results stay readable by job id."""
    daily_budget_usd: Annotated[float, Meta(ge=0)] = 10.0
    """FLEET_DAILY_BUDGET_USD: commercial spend per UTC day (analytics report what is left)."""
    ledger_batch_size: Annotated[int, Meta(ge=1)] = 500
    """FLEET_LEDGER_BATCH_SIZE: messages written per ledger transaction at most."""
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    """FLEET_METRICS_PORT: Prometheus /metrics port; 0 turns it off."""

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
        "ledger_batch_size": "FLEET_LEDGER_BATCH_SIZE",
        "metrics_port": "FLEET_METRICS_PORT",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from environment variables (strings are converted and validated)."""
        env = os.environ if env is None else env
        raw = {field: env[var] for field, var in cls._ENV.items() if env.get(var)}
        raw.update(overrides)
        return msgspec.convert(raw, cls, strict=False)

    def registry(self) -> Registry:
        return load_registry(self.models_file, self.prices_file)


class Secret:
    """A credential that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

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


#: Environment variable names used by the official SDKs, plus LMSTUDIO_BASE_URL.
PROVIDER_ENV = {
    "lmstudio": ("LMSTUDIO_BASE_URL", "LMSTUDIO_API_KEY", "http://localhost:1234/v1"),
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_KEY", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "https://api.anthropic.com"),
    "gemini": ("GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY", "https://generativelanguage.googleapis.com"),
}


def provider_endpoint(provider: str, env: Mapping[str, str] | None = None) -> ProviderEndpoint:
    """The base URL and key of one provider, from the SDKs' environment variable names."""
    env = os.environ if env is None else env
    url_var, key_var, default_url = PROVIDER_ENV[provider]
    key = env.get(key_var)
    return ProviderEndpoint(provider, env.get(url_var) or default_url, Secret(key) if key else None)
