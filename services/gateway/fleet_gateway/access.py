"""Who is calling: API keys checked against their SHA-256 digests (never stored in clear).

A key arrives as ``Authorization: Bearer <key>`` (OpenAI SDKs, Open WebUI, Aider) or
``x-api-key: <key>`` (Anthropic SDKs, Claude Code). With no keys configured the gateway
is open, which ``GatewaySettings`` allows on a loopback address only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fleet_gateway.errors import ApiError

#: The caller's name when no keys are configured.
ANONYMOUS = "local"


def key_digest(key: str) -> str:
    """What a ``GATEWAY_KEYS`` entry holds for ``key`` (``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class KeyRing:
    """The accepted keys: digest -> name."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    @property
    def open(self) -> bool:
        return not self._keys

    def caller(self, headers: Mapping[str, str]) -> str:
        """The name of the key presented.

        Raises:
            ApiError: 401 when keys are configured and none, or an unknown one, was given.
        """
        if self.open:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise ApiError(
                "authentication",
                "no API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
                code="missing_api_key",
            )
        digest = key_digest(key)
        for known, name in self._keys.items():
            if hmac.compare_digest(known, digest):
                return name
        raise ApiError("authentication", "the API key is not valid for this gateway", code="invalid_api_key")
