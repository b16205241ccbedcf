"""The one HTTP round trip every adapter makes: POST JSON, classify a failure, decode the body."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import httpx
import msgspec

from fleet_workers.providers.errors import error_from_response, map_provider_errors

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: Any,
    *,
    headers: Mapping[str, str],
    decoder: msgspec.json.Decoder[T],
    provider: str,
    secret: str | None,
) -> T:
    """POST ``payload`` as JSON and decode a 2xx body with ``decoder``.

    Raises:
        ProviderError: any failure, classified (see ``fleet_workers.providers.errors``).
    """
    with map_provider_errors(provider, secret=secret):
        response = await client.post(url, content=_encoder.encode(payload), headers=headers)
        if not response.is_success:
            raise error_from_response(provider, response, secret=secret)
        return decoder.decode(response.content)


def reveal(api_key: Any) -> str | None:
    """The key's plain text (``api_key`` is a ``Secret`` or None), for headers only."""
    return api_key.reveal() if api_key else None
