"""The gateway's settings: one frozen, validated object read from the environment.

The fleet part (NATS, subject prefix, model registry) is ``fleet_shared.config.Settings``
with its usual variables; the gateway adds its own ``GATEWAY_*`` variables. API keys are
never configured in clear: ``GATEWAY_KEYS`` (or the file named by ``GATEWAY_KEYS_FILE``)
holds ``name:sha256hex`` entries, the SHA-256 of each key, so neither the environment nor
a file on disk reveals a key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta, Struct

from fleet_shared.config import Settings

_KEY_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<digest>[0-9a-f]{64})$")


class SettingsError(ValueError):
    """The gateway cannot start with these settings (the message says why)."""


class GatewaySettings(Struct, frozen=True, kw_only=True):
    """Gateway settings; ``from_env`` reads them (``fleet`` from the fleet's own variables)."""

    host: str = "127.0.0.1"
    """GATEWAY_HOST: the address to listen on. Anything but loopback needs keys."""
    port: Annotated[int, Meta(ge=0, le=65535)] = 4000
    """GATEWAY_PORT: 0 picks a free port."""
    keys: dict[str, str] = {}
    """GATEWAY_KEYS / GATEWAY_KEYS_FILE: SHA-256 hex digest of each accepted key -> its name."""
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 8 * 1024 * 1024
    """GATEWAY_MAX_BODY_BYTES: a larger request body is refused with 413."""
    body_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    """GATEWAY_BODY_TIMEOUT_S: a client that takes longer to send its body gets 408."""
    request_timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    """GATEWAY_REQUEST_TIMEOUT_S: a job without an answer by then gets 504."""
    keepalive_timeout_s: Annotated[float, Meta(gt=0)] = 75.0
    """GATEWAY_KEEPALIVE_TIMEOUT_S: an idle keep-alive connection is closed after this."""
    fleet: Settings = msgspec.field(default_factory=Settings)

    _ENV: ClassVar[dict[str, str]] = {
        "host": "GATEWAY_HOST",
        "port": "GATEWAY_PORT",
        "max_body_bytes": "GATEWAY_MAX_BODY_BYTES",
        "body_timeout_s": "GATEWAY_BODY_TIMEOUT_S",
        "request_timeout_s": "GATEWAY_REQUEST_TIMEOUT_S",
        "keepalive_timeout_s": "GATEWAY_KEEPALIVE_TIMEOUT_S",
    }

    def __post_init__(self) -> None:
        if not self.keys and not is_loopback(self.host):
            raise SettingsError(
                f"GATEWAY_HOST={self.host} is not a loopback address: configure GATEWAY_KEYS or "
                "GATEWAY_KEYS_FILE (name:sha256hex entries) before listening there"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> GatewaySettings:
        """Read and validate the settings.

        Raises:
            SettingsError: a value is malformed, or a non-loopback address has no keys.
        """
        env = os.environ if env is None else env
        raw: dict[str, Any] = {field: env[var] for field, var in cls._ENV.items() if env.get(var)}
        raw["keys"] = parse_keys(_key_lines(env))
        raw.update(overrides)
        fleet = raw.pop("fleet", None) or Settings.from_env(env)
        try:
            return _convert(raw, fleet)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"gateway settings: {exc}") from exc


def _convert(raw: dict[str, Any], fleet: Settings) -> GatewaySettings:
    # ``fleet`` is already validated: convert only the gateway's own fields, then attach it
    own = msgspec.convert(raw, GatewaySettings, strict=False)
    return msgspec.structs.replace(own, fleet=fleet)


def _key_lines(env: Mapping[str, str]) -> list[str]:
    lines = env.get("GATEWAY_KEYS", "").replace(",", "\n").splitlines()
    path = env.get("GATEWAY_KEYS_FILE")
    if path:
        try:
            lines += Path(path).read_text().splitlines()
        except OSError as exc:
            raise SettingsError(f"GATEWAY_KEYS_FILE {path}: {exc.strerror}") from exc
    return lines


def parse_keys(lines: list[str]) -> dict[str, str]:
    """``name:sha256hex`` lines (blank lines and ``#`` comments skipped) -> {digest: name}.

    Raises:
        SettingsError: a line is not ``name:<64 hex digits>``, or a name or digest repeats.
    """
    keys: dict[str, str] = {}
    names: set[str] = set()
    for number, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        match = _KEY_ENTRY.match(entry)
        if match is None:
            # the entry itself is not echoed: a key pasted in clear by mistake stays unprinted
            raise SettingsError(f"gateway key entry {number} is not `name:<sha256 hex of the key>`")
        name, digest = match["name"], match["digest"]
        if digest in keys or name in names:
            raise SettingsError(f"gateway key entry {number} repeats a name or a key")
        keys[digest] = name
        names.add(name)
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
