"""The gateway's settings and keys, without a network: a public address needs keys, keys
are stored as digests, and a malformed entry is refused without being echoed."""

from __future__ import annotations

import pytest

from fleet_gateway.access import ANONYMOUS, KeyRing, key_digest
from fleet_gateway.errors import ApiError
from fleet_gateway.jobs import job_id_for
from fleet_gateway.settings import GatewaySettings, SettingsError


def test_defaults_listen_on_loopback_port_4000_without_keys():
    settings = GatewaySettings.from_env({})
    assert (settings.host, settings.port, settings.keys) == ("127.0.0.1", 4000, {})
    assert KeyRing(settings.keys).caller({}) == ANONYMOUS


def test_a_public_address_without_keys_refuses_to_start():
    with pytest.raises(SettingsError, match="GATEWAY_KEYS"):
        GatewaySettings.from_env({"GATEWAY_HOST": "0.0.0.0"})


def test_keys_from_env_and_file_are_digests_with_names(tmp_path):
    file = tmp_path / "keys"
    file.write_text(f"# team keys\nbob:{key_digest('sk-bob')}\n")
    settings = GatewaySettings.from_env(
        {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_KEYS": f"alice:{key_digest('sk-alice')}", "GATEWAY_KEYS_FILE": str(file)}
    )
    ring = KeyRing(settings.keys)
    assert ring.caller({"authorization": "Bearer sk-alice"}) == "alice"
    assert ring.caller({"x-api-key": "sk-bob"}) == "bob"
    with pytest.raises(ApiError) as missing:
        ring.caller({})
    with pytest.raises(ApiError) as wrong:
        ring.caller({"x-api-key": "sk-mallory"})
    assert missing.value.status == wrong.value.status == 401
    assert "sk-mallory" not in wrong.value.message


def test_a_key_pasted_in_clear_is_refused_without_printing_it():
    with pytest.raises(SettingsError) as refused:
        GatewaySettings.from_env({"GATEWAY_KEYS": "alice:sk-live-secret-value"})
    assert "sk-live-secret-value" not in str(refused.value)


def test_idempotency_keys_become_job_ids():
    assert job_id_for("retry-42") == "retry-42"
    hashed = job_id_for("has spaces/and.dots")
    assert hashed == job_id_for("has spaces/and.dots") and hashed.startswith("idem-")
    assert job_id_for(None) != job_id_for(None)
