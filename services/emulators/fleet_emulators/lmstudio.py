"""LM Studio: the OpenAI protocol without authentication, plus its native REST API.

    GET  /v1/models              OpenAI-style listing (with JIT on: every downloaded model)
    GET  /api/v0/models          every downloaded model with ``state: loaded | not-loaded``
                                 and ``max_context_length`` (``loaded_context_length`` once loaded)
    POST /api/v1/models/load     {"model", "context_length"?} -> {"type", "instance_id", ...}
    POST /api/v1/models/unload   {"instance_id"} -> {"instance_id"}

A chat for a model that is not loaded is loaded first when JIT loading is on (the first
call is slow: ``load_ms``), else refused with 404 ``model_not_loaded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
from aiohttp import web
from msgspec import Struct

from fleet_emulators.base import Chat, json_response
from fleet_emulators.openai import OpenAIEmulator

#: id, publisher, arch, quantization, max_context_length
LMSTUDIO_MODELS = (
    ("qwen/qwen3-30b-a3b-2507", "qwen", "qwen3_moe", "4bit", 262144),
    ("mistralai/devstral-small-2507", "mistralai", "mistral", "4bit", 131072),
)
#: context a model is loaded with unless the load request names one (LM Studio's default)
DEFAULT_LOADED_CONTEXT = 32768


class _Load(Struct):
    model: str
    context_length: int | None = None


class _Unload(Struct):
    instance_id: str


class LMStudioEmulator(OpenAIEmulator):
    provider = "lmstudio"
    fingerprint = "lmstudio-emulator"

    processing_ms_header = None  # LM Studio does not send it (``report_processing_ms=True`` adds it)

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        loaded: Iterable[str] | None = None,
        jit: bool = True,
        load_ms: float = 0.0,
        report_processing_ms: bool | None = None,
    ) -> None:
        super().__init__(latency_ms=latency_ms, report_processing_ms=report_processing_ms)
        self.catalog = {m[0]: m for m in LMSTUDIO_MODELS}
        #: model id -> loaded context length (every model is loaded unless told otherwise)
        self.loaded: dict[str, int] = {m: DEFAULT_LOADED_CONTEXT for m in (self.catalog if loaded is None else loaded)}
        self.jit = jit
        self.load_ms = load_ms

    def routes(self) -> list[web.RouteDef]:
        return super().routes() + [
            web.get("/api/v0/models", self.native_models),
            web.post("/api/v1/models/load", self.load),
            web.post("/api/v1/models/unload", self.unload),
        ]

    def authenticate(self, request: web.Request) -> web.Response | None:
        return None  # a local server: any key, or none, is accepted

    async def models(self, request: web.Request) -> web.StreamResponse:
        self.calls["models"] += 1
        listed = self.catalog if self.jit else self.loaded
        data = [{"id": m, "object": "model", "owned_by": "organization_owner"} for m in listed]
        return json_response({"object": "list", "data": data})

    async def native_models(self, request: web.Request) -> web.StreamResponse:
        self.calls["native_models"] += 1
        data = []
        for model_id, publisher, arch, quantization, context in LMSTUDIO_MODELS:
            entry = {
                "id": model_id,
                "object": "model",
                "type": "llm",
                "publisher": publisher,
                "arch": arch,
                "compatibility_type": "mlx",
                "quantization": quantization,
                "state": "loaded" if model_id in self.loaded else "not-loaded",
                "max_context_length": context,
            }
            if model_id in self.loaded:
                entry["loaded_context_length"] = self.loaded[model_id]
            data.append(entry)
        return json_response({"object": "list", "data": data})

    async def load(self, request: web.Request) -> web.StreamResponse:
        self.calls["load"] += 1
        try:
            req = msgspec.json.decode(await request.read(), type=_Load)
        except msgspec.DecodeError as exc:
            return self._error(400, "invalid_request_error", None, str(exc))
        if req.model not in self.catalog:
            return self._error(404, "invalid_request_error", "model_not_found", f"Model '{req.model}' not found")
        seconds = await self._load(req.model, req.context_length)
        return json_response(
            {"type": "llm", "instance_id": req.model, "load_time_seconds": seconds, "status": "loaded"}
        )

    async def unload(self, request: web.Request) -> web.StreamResponse:
        self.calls["unload"] += 1
        try:
            req = msgspec.json.decode(await request.read(), type=_Unload)
        except msgspec.DecodeError as exc:
            return self._error(400, "invalid_request_error", None, str(exc))
        if self.loaded.pop(req.instance_id, None) is None:
            return self._error(
                404, "invalid_request_error", "model_not_found", f"No loaded instance '{req.instance_id}'"
            )
        return json_response({"instance_id": req.instance_id})

    async def before_answer(self, request: web.Request, chat: Chat) -> web.StreamResponse | None:
        if chat.model in self.loaded:
            return None
        if chat.model not in self.catalog:
            return self._error(404, "invalid_request_error", "model_not_found", f"Model '{chat.model}' not found")
        if not self.jit:
            message = f"Model '{chat.model}' is not loaded, and JIT model loading is turned off."
            return self._error(404, "invalid_request_error", "model_not_loaded", message)
        self.calls["jit_load"] += 1
        await self._load(chat.model, None)
        return None

    async def _load(self, model: str, context_length: int | None) -> float:
        if self.load_ms > 0 and model not in self.loaded:
            await asyncio.sleep(self.load_ms / 1000.0)
        self.loaded[model] = context_length or DEFAULT_LOADED_CONTEXT
        return self.load_ms / 1000.0
