"""Wire schema: JSON Schema files are generated (never stale), settings and registry validate."""

from pathlib import Path

import msgspec
import pytest

from fleet_shared.config import Settings, provider_endpoint
from fleet_shared.registry import load_registry
from fleet_shared.schema import Job, Result, encode, json_schemas, result_decoder

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "deploy" / "schema"


@pytest.mark.parametrize("name,schema", json_schemas().items())
def test_committed_json_schema_is_the_generated_one(name, schema):
    committed = msgspec.json.decode((SCHEMA_DIR / name).read_bytes())
    assert committed == schema, f"run `make schema` to regenerate deploy/schema/{name}"


def test_result_round_trips_and_omits_nothing_public():
    r = Result(job_id="j1", success=False)
    data = msgspec.json.decode(encode(r))
    for field in [
        "job_id",
        "success",
        "content",
        "model",
        "provider",
        "task_type",
        "complexity",
        "reasoning",
        "attempts",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "latency_ms",
        "error",
        "metadata",
    ]:
        assert field in data
    assert result_decoder.decode(encode(r)) == r


def test_job_ignores_unknown_fields_so_clients_can_be_newer():
    job = msgspec.json.decode(b'{"prompt": "x", "future_field": 1}', type=Job)
    assert job.prompt == "x"


def test_registry_has_the_seed_models_with_prices():
    reg = load_registry()
    assert list(reg.models) == ["local_mlx", "local_devstral", "claude", "openai", "gemini"]
    assert reg.models["local_mlx"].provider_model == "qwen/qwen3-30b-a3b-2507"
    assert reg.models["local_mlx"].cost_usd(10**6, 10**6) == 0.0
    assert reg.models["claude"].cost_usd(10**6, 10**6) == pytest.approx(18.0)
    assert reg.prices_as_of


def test_user_can_add_a_model_without_code(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(
        (Path(load_registry.__code__.co_filename).parent / "models.toml").read_text()
        + '\n[models.gpt_mini]\nprovider = "openai"\nprovider_model = "gpt-4o-mini"\n'
        "context_window = 128000\ntokens_per_s = 90.0\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n"
    )
    reg = load_registry(models)
    assert reg.models["gpt_mini"].cost_usd(10**6, 0) == pytest.approx(0.15)


def test_registry_rejects_unknown_provider_and_unknown_preference(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\nprovider = "acme"\nprovider_model = "m"\ncontext_window = 1\ntokens_per_s = 1.0\n')
    with pytest.raises(msgspec.ValidationError, match="unknown provider"):
        load_registry(bad)
    bad.write_text('[routing.preferences]\nreasoning = ["nope"]\n')
    with pytest.raises(msgspec.ValidationError, match="unknown models"):
        load_registry(bad)


def test_settings_from_env_validate_and_convert():
    s = Settings.from_env({"NATS_URL": "nats://h:1", "FLEET_WORKER_CONCURRENCY": "8", "FLEET_ACK_WAIT_S": "2.5"})
    assert (s.nats_url, s.worker_concurrency, s.ack_wait_s) == ("nats://h:1", 8, 2.5)
    with pytest.raises(msgspec.ValidationError, match="worker_concurrency"):
        Settings.from_env({"FLEET_WORKER_CONCURRENCY": "0"})


def test_api_keys_never_show_in_reprs():
    ep = provider_endpoint("anthropic", {"ANTHROPIC_API_KEY": "sk-ant-SECRET"})
    assert "SECRET" not in repr(ep) and "SECRET" not in str(ep.api_key)
    assert ep.api_key.reveal() == "sk-ant-SECRET"
    assert ep.base_url == "https://api.anthropic.com"
