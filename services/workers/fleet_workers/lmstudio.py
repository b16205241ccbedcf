"""Dynamic model loading for LM Studio (``FLEET_LMSTUDIO_AUTOLOAD``, off by default).

When a job for a model that is not loaded arrives (demand), the worker loads it through
LM Studio's REST API (POST /api/v1/models/load) before calling it; a model the worker
loaded and nobody used for ``lmstudio_idle_unload_s`` is unloaded again (POST
/api/v1/models/unload). Models someone else loaded are never unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import msgspec
from msgspec import Struct

from fleet_shared.config import ProviderEndpoint, Settings
from fleet_workers.listing import list_models, lmstudio_root
from fleet_workers.providers.errors import error_from_response, map_provider_errors
from fleet_workers.providers.wire import reveal

log = logging.getLogger("fleet.lmstudio")

#: how long a "loaded" answer from the listing is trusted before asking again
LISTING_TTL_S = 5.0


class _Loaded(Struct):
    instance_id: str = ""
    load_time_seconds: float = 0.0


class LMStudioLoader:
    def __init__(self, endpoint: ProviderEndpoint, client: httpx.AsyncClient, settings: Settings) -> None:
        self.endpoint = endpoint
        self.client = client
        self.idle_s = settings.lmstudio_idle_unload_s
        self._root = lmstudio_root(endpoint.base_url)
        self._secret = reveal(endpoint.api_key)
        self._checked: dict[str, float] = {}  # model -> when it was last seen loaded
        self._ours: dict[str, str] = {}  # model -> instance id, for models this worker loaded
        self._last_used: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._unload_loop(), name="lmstudio-unloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def ensure_loaded(self, model: str) -> None:
        """Load ``model`` unless it is loaded already (one load at a time per model).

        Raises:
            ProviderError: LM Studio refused or could not be reached.
        """
        now = time.time()
        self._last_used[model] = now
        if now - self._checked.get(model, 0.0) < LISTING_TTL_S:
            return
        async with self._locks.setdefault(model, asyncio.Lock()):
            if time.time() - self._checked.get(model, 0.0) < LISTING_TTL_S:
                return
            listed = (await list_models("lmstudio", self.endpoint, self.client)).find(model)
            if listed is None or not listed.loaded:
                await self._load(model)
            self._checked[model] = time.time()

    async def _load(self, model: str) -> None:
        log.info("loading %s in LM Studio (demand)", model)
        loaded = await self._post("/api/v1/models/load", {"model": model})
        self._ours[model] = msgspec.json.decode(loaded, type=_Loaded).instance_id or model

    async def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload the models this worker loaded that sat idle too long; returns them."""
        now = time.time() if now is None else now
        unloaded = []
        for model, instance_id in list(self._ours.items()):
            if now - self._last_used.get(model, 0.0) >= self.idle_s:
                log.info("unloading %s from LM Studio (idle %.0fs)", model, now - self._last_used.get(model, 0.0))
                await self._post("/api/v1/models/unload", {"instance_id": instance_id})
                self._ours.pop(model, None)
                self._checked.pop(model, None)
                unloaded.append(model)
        return unloaded

    async def _unload_loop(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_s / 4))
            try:
                await self.unload_idle()
            except Exception as exc:  # LM Studio away: try again next round
                log.warning("LM Studio unload failed: %s", exc)

    async def _post(self, path: str, body: dict) -> bytes:
        headers = {"authorization": f"Bearer {self._secret}"} if self._secret else {}
        with map_provider_errors("lmstudio", secret=self._secret):
            response = await self.client.post(self._root + path, json=body, headers=headers)
            if not response.is_success:
                raise error_from_response("lmstudio", response, secret=self._secret)
            return response.content
