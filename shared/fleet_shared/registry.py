"""The model registry: models.toml (models, routing rules, providers) merged with the dated
price table prices.toml, as frozen msgspec Structs validated on load (``load_registry``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from fleet_shared.schema import TaskType

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
    #: prompt-cache writes (Anthropic bills them above the input price); 0: the input price
    cache_write_per_mtok: Annotated[float, Meta(ge=0)] = 0.0
    #: stream from the provider even when the job does not ask (early cut detection, TTFT)
    stream: bool = False
    #: fleet-wide requests / tokens per minute for this model (None: no limit of ours)
    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None
    #: the model can call tools (function calling); a job with tools skips a model without
    supports_tools: bool = True
    #: the escalation order after this model (registry ids): when it fails, the router tries
    #: these first, then its usual order
    fallbacks: list[str] = []

    @property
    def is_local(self) -> bool:
        return self.provider == "lmstudio"

    def cost_usd(self, tokens_in: int, tokens_out: int, *, cached_in: int = 0, cache_write_in: int = 0) -> float:
        """USD for one call. ``tokens_in`` counts every input token, cached ones included;
        ``tokens_out`` counts reasoning tokens too (they are billed as output)."""
        fresh = max(0, tokens_in - cached_in - cache_write_in)
        cached_price = self.cached_input_per_mtok or self.input_per_mtok
        write_price = self.cache_write_per_mtok or self.input_per_mtok
        return (
            fresh * self.input_per_mtok
            + cached_in * cached_price
            + cache_write_in * write_price
            + tokens_out * self.output_per_mtok
        ) / 1e6

    def estimate_latency_ms(self, tokens_out: int) -> float:
        return self.first_token_ms + 1000.0 * tokens_out / self.tokens_per_s


class RoutingRules(Struct, frozen=True, kw_only=True):
    """The seed's decision tree as data (see README, "Routing")."""

    simple_max_complexity: Annotated[int, Meta(ge=0, le=10)] = 3
    complex_min_complexity: Annotated[int, Meta(ge=1, le=11)] = 7
    local_failures_before_commercial: Annotated[int, Meta(ge=1)] = 2
    complex_models: list[str] = msgspec.field(default_factory=lambda: ["claude", "gemini"])
    #: a job that omits task_type or complexity gets them inferred from its text; when
    #: false (or when no task type has enough evidence) the defaults below apply
    infer_missing: bool = True
    default_task_type: TaskType = TaskType.COMPLETION
    default_complexity: Annotated[int, Meta(ge=1, le=10)] = 5
    default_max_tokens: Annotated[int, Meta(ge=1)] = 1024
    #: when every model left is cooling down because its provider asked (429, overloaded),
    #: a job waits in the queue for the first one back if that is at most this many seconds
    max_queue_wait_s: Annotated[float, Meta(ge=0)] = 60.0
    preferences: dict[TaskType, list[str]] = {}


class ProviderSpec(Struct, frozen=True, kw_only=True):
    """A provider: the built-in four, or one added in the models file's ``[providers.<name>]``
    (any OpenAI-compatible endpoint: vLLM, Ollama, a hosted API), served by the worker of
    its ``protocol`` (``python -m fleet_workers --provider <name>``). The key is read from the
    environment variable ``api_key_env`` (or its ``_FILE``), never from the file."""

    protocol: Literal["openai", "lmstudio", "anthropic", "gemini"] = "openai"
    base_url: str = ""
    #: an environment variable that overrides ``base_url`` (e.g. VLLM_BASE_URL)
    base_url_env: str | None = None
    #: the environment variable holding the key (None: no key is sent)
    api_key_env: str | None = None


#: Environment variable names used by the official SDKs, plus LMSTUDIO_BASE_URL.
PROVIDER_ENV = {
    "lmstudio": ("LMSTUDIO_BASE_URL", "LMSTUDIO_API_KEY", "http://localhost:1234/v1"),
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_KEY", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "https://api.anthropic.com"),
    "gemini": ("GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY", "https://generativelanguage.googleapis.com"),
}


PROVIDER_NAME = r"^[a-z0-9_-]{1,64}$"  # a subject token: <p>.dispatch.<provider>


def builtin_providers() -> dict[str, ProviderSpec]:
    return {
        name: ProviderSpec(protocol=name, base_url=url, base_url_env=url_var, api_key_env=key_var)  # type: ignore[arg-type]
        for name, (url_var, key_var, url) in PROVIDER_ENV.items()
    }


class Registry(Struct, frozen=True, kw_only=True):
    """Every model, in declaration order, plus the routing rules and the providers."""

    models: dict[str, ModelSpec]
    rules: RoutingRules
    prices_as_of: str = ""
    providers: dict[Annotated[str, Meta(pattern=PROVIDER_NAME)], ProviderSpec] = msgspec.field(
        default_factory=builtin_providers
    )

    def __post_init__(self) -> None:
        for spec in self.models.values():
            if spec.provider not in self.providers:
                raise ValueError(
                    f"model {spec.id!r}: unknown provider {spec.provider!r}; add [providers.{spec.provider}]"
                )
        named = list(self.rules.complex_models)
        for prefs in self.rules.preferences.values():
            named += prefs
        for spec in self.models.values():
            named += spec.fallbacks
        unknown = sorted({m for m in named if m not in self.models})
        if unknown:
            raise ValueError(f"routing rules or fallbacks name unknown models: {unknown}")

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
    providers = {**msgspec.to_builtins(builtin_providers()), **models_raw.get("providers", {})}
    return msgspec.convert(
        {
            "models": models,
            "rules": models_raw.get("routing", {}),
            "prices_as_of": str(prices_raw.get("as_of", "")),
            "providers": providers,
        },
        Registry,
    )
