"""After a call: what the fleet must learn from its outcome, written to the health board.

auth          every model of this provider: down until the key changes (fingerprint kept)
rate_limited  this model: cooling for the provider's retry-after (else ``cooldown_s``)
overloaded    this model: cooling likewise
success       a spent rate limit (remaining 0) cools the model until its reset; a model
              marked down comes back (ramping)
"""

from __future__ import annotations

import logging
import time

from fleet_shared import availability as av
from fleet_shared.availability import HealthBoard
from fleet_shared.config import Settings
from fleet_shared.registry import Registry

log = logging.getLogger("fleet.worker")


class HealthReporter:
    def __init__(
        self, board: HealthBoard, registry: Registry, settings: Settings, *, provider: str, key_fingerprint: str
    ) -> None:
        self.board = board
        self.registry = registry
        self.settings = settings
        self.provider = provider
        self.key_fingerprint = key_fingerprint

    def provider_models(self) -> list[str]:
        return [m.id for m in self.registry.models.values() if m.provider == self.provider]

    async def failure(self, model: str, code: str, retry_after_s: float | None) -> None:
        s = self.settings
        try:
            if code == "auth":
                for model_id in self.provider_models():
                    await self.board.report(model_id, av.down("auth", key_fingerprint=self.key_fingerprint))
                log.warning("%s: API key rejected; its models are unavailable until the key changes", self.provider)
            elif code in av.PROVIDER_ASKED:
                wait = retry_after_s if retry_after_s is not None else s.cooldown_s
                await self.board.report(model, av.cooldown(code, wait, ramp_s=s.ramp_s))
                log.info("%s %s: cooling down %.1fs", model, code, wait)
        except Exception as exc:  # the attempt's outcome matters more than the board
            log.warning("health board not updated for %s (%s): %s", model, code, exc)

    async def success(self, model: str, limit_reset_s: float | None) -> None:
        try:
            if limit_reset_s is not None and limit_reset_s > 0:
                await self.board.report(model, av.cooldown("rate_limited", limit_reset_s, ramp_s=self.settings.ramp_s))
            elif self.board.get(model).phase(time.time()) == "down":
                await self.board.report(model, av.recovering(ramp_s=self.settings.ramp_s))
        except Exception as exc:
            log.warning("health board not updated for %s: %s", model, exc)

    async def key_changed(self) -> None:
        """At start-up: models marked down for another key's rejection get a fresh chance."""
        for model_id in self.provider_models():
            state = await self.board.read(model_id)
            if state.state == "down" and state.reason == "auth" and state.key_fingerprint != self.key_fingerprint:
                await self.board.report(model_id, av.recovering(ramp_s=self.settings.ramp_s))
                log.info("%s: the API key changed; %s may be tried again", self.provider, model_id)
