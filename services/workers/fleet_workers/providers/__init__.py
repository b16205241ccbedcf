"""Provider adapters: one class per wire protocol, all behind ``ProviderAdapter``."""

from __future__ import annotations

import httpx

from fleet_shared.config import ProviderEndpoint
from fleet_workers.providers.anthropic import AnthropicAdapter
from fleet_workers.providers.base import ERROR_CLASSES, ProviderAdapter, ProviderError, ProviderReply, ProviderRequest
from fleet_workers.providers.errors import TRANSIENT
from fleet_workers.providers.gemini import GeminiAdapter
from fleet_workers.providers.openai_compat import LMStudioAdapter, OpenAIAdapter

#: provider name (as in models.toml) -> adapter class
ADAPTERS: dict[str, type[ProviderAdapter]] = {
    "lmstudio": LMStudioAdapter,
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
}


def make_adapter(provider: str, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> ProviderAdapter:
    """The adapter for ``provider``, sending through ``client`` (which it owns from now on).

    Raises:
        ValueError: no adapter for this provider.
    """
    try:
        adapter_class = ADAPTERS[provider]
    except KeyError:
        raise ValueError(f"no adapter for provider {provider!r}; known: {sorted(ADAPTERS)}") from None
    return adapter_class(endpoint, client)  # type: ignore[call-arg]


__all__ = [
    "ADAPTERS",
    "ERROR_CLASSES",
    "TRANSIENT",
    "AnthropicAdapter",
    "GeminiAdapter",
    "LMStudioAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "ProviderError",
    "ProviderReply",
    "ProviderRequest",
    "make_adapter",
]
