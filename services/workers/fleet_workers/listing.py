"""Free calls only: each provider's model-list endpoint, for the health prober.

    lmstudio   GET {base}/models and GET {root}/api/v0/models (state loaded | not-loaded)
    openai     GET {base}/models                      (Authorization: Bearer)
    anthropic  GET {base}/v1/models                   (x-api-key, anthropic-version)
    gemini     GET {base}/v1beta/models               (x-goog-api-key)

Never a completion: listing models costs nothing and still proves the server answers and
the key is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint
from fleet_workers.providers.anthropic import API_VERSION
from fleet_workers.providers.errors import error_from_response, map_provider_errors
from fleet_workers.providers.wire import reveal


class _Entry(Struct):
    id: str = ""
    name: str = ""  # Gemini: "models/gemini-2.5-pro"
    state: str | None = None  # LM Studio /api/v0
    max_context_length: int | None = None
    loaded_context_length: int | None = None


class _Listing(Struct):
    data: list[_Entry] = []
    models: list[_Entry] = []  # Gemini


_decoder = msgspec.json.Decoder(_Listing)


@dataclass(frozen=True, slots=True)
class ListedModel:
    id: str
    loaded: bool = True  # LM Studio: the model is in memory
    context_length: int | None = None


@dataclass(frozen=True, slots=True)
class ModelList:
    models: dict[str, ListedModel] = field(default_factory=dict)

    def find(self, provider_model: str) -> ListedModel | None:
        """The listed model for a registry name: exact, or a dated version of an alias
        (``claude-sonnet-4-5`` lists as ``claude-sonnet-4-5-20250929``)."""
        if provider_model in self.models:
            return self.models[provider_model]
        for listed_id, listed in self.models.items():
            if listed_id.startswith(provider_model + "-"):
                return listed
        return None


def lmstudio_root(base_url: str) -> str:
    """LM Studio's native API lives beside /v1: http://host:1234/v1 -> http://host:1234."""
    return base_url.rstrip("/").removesuffix("/v1")


def _requests(provider: str, endpoint: ProviderEndpoint) -> list[tuple[str, dict[str, str]]]:
    base = endpoint.base_url.rstrip("/")
    key = reveal(endpoint.api_key)
    if provider == "anthropic":
        return [(f"{base}/v1/models", {"anthropic-version": API_VERSION, **({"x-api-key": key} if key else {})})]
    if provider == "gemini":
        return [(f"{base}/v1beta/models", {"x-goog-api-key": key} if key else {})]
    auth = {"authorization": f"Bearer {key}"} if key else {}
    if provider == "lmstudio":
        return [(f"{base}/models", auth), (f"{lmstudio_root(base)}/api/v0/models", auth)]
    return [(f"{base}/models", auth)]


async def list_models(provider: str, endpoint: ProviderEndpoint, client: httpx.AsyncClient) -> ModelList:
    """The provider's models (for LM Studio with their load state).

    Raises:
        ProviderError: classified failure (``auth`` for a rejected key).
    """
    secret = reveal(endpoint.api_key)
    found: dict[str, ListedModel] = {}
    with map_provider_errors(provider, secret=secret):
        for url, headers in _requests(provider, endpoint):
            response = await client.get(url, headers=headers)
            if response.status_code == 404 and url.endswith("/api/v0/models"):
                continue  # an LM Studio without its native API: /v1/models has to do
            if not response.is_success:
                raise error_from_response(provider, response, secret=secret)
            for entry in (listing := _decoder.decode(response.content)).data + listing.models:
                model_id = (entry.id or entry.name).removeprefix("models/")
                loaded = entry.state != "not-loaded"
                context = entry.loaded_context_length or entry.max_context_length
                found[model_id] = ListedModel(model_id, loaded, context)  # the native entry wins
    return ModelList(found)
