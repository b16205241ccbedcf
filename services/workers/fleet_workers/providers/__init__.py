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


def make_adapter(
    provider: str, endpoint: ProviderEndpoint, client: httpx.AsyncClient, *, protocol: str | None = None
) -> ProviderAdapter:
    """The adapter of ``protocol`` (default: the provider's own name) for ``provider``,
    sending through ``client`` (which it owns from now on).

    Raises:
        ValueError: no adapter for this protocol.
    """
    protocol = protocol or provider
    try:
        adapter_class = ADAPTERS[protocol]
    except KeyError:
        raise ValueError(f"no adapter for protocol {protocol!r}; known: {sorted(ADAPTERS)}") from None
    adapter = adapter_class(endpoint, client)  # type: ignore[call-arg]
    adapter.provider = provider  # errors and logs name the configured provider
    return adapter


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
