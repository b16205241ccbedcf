"""Routing choices made over HTTP, through the real fleet: a provider added by configuration
alone (a models file and two environment variables) served by the OpenAI-protocol worker,
a registry entry's own fallbacks, and a request that forbids escalating its forced model."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from fleet_shared.registry import load_registry
from fleet_workers.service import Worker
from tests.gateway_harness import GATEWAY_KEY, gateway_fleet

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

EXTRA = """
[providers.vllm]
protocol = "openai"
base_url_env = "VLLM_BASE_URL"
api_key_env = "VLLM_API_KEY"

[models.vllm_small]
provider = "vllm"
provider_model = "gpt-4o-mini"
context_window = 32768
tokens_per_s = 100.0
fallbacks = ["claude"]
"""


@pytest.fixture
def settings(make_settings, database_url, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text((Path(load_registry.__code__.co_filename).parent / "models.toml").read_text() + EXTRA)
    return make_settings(
        database_url=database_url, ack_wait_s=10.0, ramp_s=0.2, cooldown_s=1.0, models_file=str(models)
    )


@contextlib.asynccontextmanager
async def extra_worker(settings, provider: str):
    """``python -m fleet_workers --provider vllm``, in-process: no endpoint given, so the
    worker reads it from the registry's [providers.vllm] and the environment."""
    async with Worker(settings, provider) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            await worker.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def chat(text: str, model: str = "vllm_small") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_extra_openai_compatible_provider_fallbacks_and_no_fallback(settings, monkeypatch):
    async with gateway_fleet(settings) as gw:
        monkeypatch.setenv("VLLM_BASE_URL", gw.emulators["openai"].url)  # the OpenAI emulator plays vLLM
        monkeypatch.setenv("VLLM_API_KEY", "sk-vllm-test-0123456789")
        async with extra_worker(settings, "vllm") as worker:
            headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
            async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30.0) as http:
                served = await http.post("/v1/chat/completions", json=chat("hello vllm"))
                failing = "hi [emulate:openai:error=500]"  # the vLLM endpoint (the OpenAI emulator) fails
                escalated = await http.post("/v1/chat/completions", json=chat(failing))
                kept = await http.post(
                    "/v1/chat/completions", json=chat(failing), headers={"x-router-no-fallback": "1"}
                )
                kept_by_metadata = await http.post(
                    "/v1/chat/completions", json={**chat(failing), "metadata": {"no_fallback": "true"}}
                )
                bad_flag = await http.post(
                    "/v1/chat/completions", json=chat("x"), headers={"x-router-no-fallback": "maybe"}
                )
        claude_calls = gw.emulators["anthropic"].emulator.calls["chat"]
    assert worker.endpoint.base_url == gw.emulators["openai"].url and worker.endpoint.api_key
    assert served.status_code == 200, served.text
    assert served.headers["x-router-provider"] == "vllm" and served.headers["x-router-model"] == "vllm_small"
    assert served.json()["model"] == "gpt-4o-mini"
    assert served.json()["choices"][0]["message"]["content"].startswith("[openai emulator · gpt-4o-mini] hello vllm")
    # the registry's fallback comes first (a simple task would otherwise go to a local model)
    assert escalated.status_code == 200, escalated.text
    assert escalated.headers["x-router-model"] == "claude" and escalated.headers["x-router-attempts"] == "2"
    assert "registry fallbacks" in escalated.headers["x-router-reasoning"]
    for response in (kept, kept_by_metadata):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "server_error"
        assert response.json()["error"]["message"].startswith("1 attempts failed; last error: server_error: vllm")
    assert claude_calls == 1  # only the escalated job reached another model
    assert bad_flag.status_code == 400 and bad_flag.json()["error"]["param"] == "x-router-no-fallback"
