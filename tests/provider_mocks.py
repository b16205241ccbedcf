"""Shared by the provider-adapter tests: the test key and model names, and adapters whose
HTTP goes to an ``httpx.MockTransport`` handler instead of a network."""

from __future__ import annotations

import json

import httpx

from fleet_shared.config import ProviderEndpoint, Secret
from fleet_workers.providers import make_adapter

KEY = "sk-test-4f1c9e2a7b3d8e6f0a"
MODELS = {
    "lmstudio": "qwen/qwen3-30b-a3b-2507",
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-pro",
}


def respond(status: int, body: object, headers: dict[str, str] | None = None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda request: httpx.Response(status, content=content, headers=headers)


def raise_(exc: Exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def mock_adapter(provider: str, handler, *, key: str | None = KEY):
    endpoint = ProviderEndpoint(provider, "https://api.example.test/v1", Secret(key) if key else None)
    return make_adapter(provider, endpoint, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def openai_choice(finish: str, content: str | None = "ok", **message) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}
    return {"choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def capture(body: dict):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    return seen, handler
