"""Fleet-wide model availability in a NATS KV bucket (``Subjects.health_bucket``).

One key per model, ``model.<model_id>``, holding an ``Availability``. Writers are the health
prober (free model-list calls) and the workers (after ``auth``, ``rate_limited`` and
``overloaded`` answers); every router and worker watches the bucket. The phase is derived
from the value and the clock, so nobody has to come back to end a cooldown:

    down                       until the provider's configuration changes (``auth``, a
                               model missing from the provider's list, not loaded)
    cooling   now < until      unavailable
    ramping   until <= now < until + ramp_s
                               the share of jobs admitted grows linearly from 0 to 1
    up        otherwise

Merging (``merge``) keeps cooldowns from resetting wrongly: a new cooldown never shortens
a longer one, and only an explicit ``up`` from a successful probe or call ends ``down``.

A second key per model, ``window.<model_id>``, holds the context window (tokens) the
provider says it serves the model with, where it says so: LM Studio's loaded context
length, often smaller than the model's maximum. The prober writes it; routers use it
instead of the registry's ``context_window``.
"""

from __future__ import annotations

import logging
import time

import msgspec
from msgspec import Struct
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from fleet_shared.kv import KeyWatch, compare_and_set, open_bucket

log = logging.getLogger(__name__)

KEY_PREFIX = "model."
WINDOW_PREFIX = "window."


class Availability(Struct, frozen=True, kw_only=True, omit_defaults=True):
    state: str = "up"  # "up" | "down" | "cooling" (ramping is cooling past ``until``)
    reason: str = ""  # auth, rate_limited, overloaded, probe_failed, not_loaded, missing
    until: float = 0.0  # unix seconds: unavailable before this
    ramp_s: float = 0.0  # then admitted share grows from 0 to 1 over this many seconds
    failures: int = 0  # consecutive failed probes (the cooldown doubles with each)
    key_fingerprint: str = ""  # with reason auth: the rejected key's fingerprint (never the key)
    at: float = 0.0  # when written

    def phase(self, now: float) -> str:
        if self.state == "down":
            return "down"
        if self.state == "cooling":
            if now < self.until:
                return "cooling"
            if now < self.until + self.ramp_s:
                return "ramping"
        return "up"

    def admitted_share(self, now: float) -> float:
        """0 while down or cooling, growing while ramping, 1 when up."""
        phase = self.phase(now)
        if phase in ("down", "cooling"):
            return 0.0
        if phase == "ramping":
            return min(1.0, (now - self.until) / self.ramp_s)
        return 1.0


UP = Availability()

_decoder = msgspec.json.Decoder(Availability)


#: Cooldowns the provider itself asked for: nothing but the clock ends them early.
PROVIDER_ASKED = frozenset({"rate_limited", "overloaded"})


def merge(current: Availability | None, new: Availability, now: float) -> Availability | None:
    """The value to store when ``new`` is reported over ``current`` (None: keep current).

    ``new`` is a cooldown, a ``down``, or a recovery (``up`` or ``recovering(...)``).
    """
    recovery = new.state == "up" or new.reason == "recovering"
    phase = current.phase(now) if current is not None else "up"
    if current is None or phase == "up":
        return None if recovery else new
    if recovery:
        if phase == "ramping" or (phase == "cooling" and current.reason in PROVIDER_ASKED):
            return None  # already coming back, or the provider asked us to wait
        return new
    if new.state == "down":
        return new
    if phase == "down":
        return None  # a 429 or a failed probe says nothing about a rejected key
    if phase == "cooling" and current.until >= new.until:
        return None  # never shorten a longer cooldown
    return new


def recovering(*, ramp_s: float, now: float | None = None) -> Availability:
    """Back from down or a failed probe: admitted share ramps up from now."""
    now = time.time() if now is None else now
    return Availability(state="cooling", reason="recovering", until=now, ramp_s=ramp_s, at=now)


def cooldown(
    reason: str, seconds: float, *, ramp_s: float, failures: int = 0, now: float | None = None
) -> Availability:
    now = time.time() if now is None else now
    return Availability(state="cooling", reason=reason, until=now + seconds, ramp_s=ramp_s, failures=failures, at=now)


def down(reason: str, *, key_fingerprint: str = "", now: float | None = None) -> Availability:
    now = time.time() if now is None else now
    return Availability(state="down", reason=reason, key_fingerprint=key_fingerprint, at=now)


class HealthBoard:
    """Read (a live local copy, kept by a KV watcher) and write model availability."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.models: dict[str, Availability] = {}
        #: model -> context window the provider reports serving it with (tokens)
        self.windows: dict[str, int] = {}
        self.version = 0  # bumped on every change seen, so readers can cache snapshots
        self._watch = KeyWatch(kv, self._on_entry)

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, *, replicas: int = 1) -> HealthBoard:
        return cls(await open_bucket(js, bucket, replicas=replicas))

    # -- reading --------------------------------------------------------------------------

    async def watch(self) -> None:
        """Start keeping ``models`` current; returns once the bucket's present state is read."""
        await self._watch.start()

    async def _on_entry(self, entry: KeyValue.Entry) -> None:
        if entry.key.startswith(WINDOW_PREFIX):
            self._apply_window(entry.key.removeprefix(WINDOW_PREFIX), entry.value, entry.operation)
        elif entry.key.startswith(KEY_PREFIX):
            self._apply(entry.key.removeprefix(KEY_PREFIX), entry.value, entry.operation)

    def _apply(self, model: str, value: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not value:
            self.models.pop(model, None)
        else:
            try:
                self.models[model] = _decoder.decode(value)
            except msgspec.DecodeError:
                return
        self.version += 1

    def _apply_window(self, model: str, value: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not value or not value.isdigit():
            self.windows.pop(model, None)
        else:
            self.windows[model] = int(value)
        self.version += 1

    def get(self, model: str) -> Availability:
        return self.models.get(model, UP)

    async def stop(self) -> None:
        await self._watch.stop()

    # -- writing --------------------------------------------------------------------------

    async def report(self, model: str, new: Availability) -> Availability | None:
        """Merge ``new`` into the stored value (see ``merge``); returns what is stored."""
        now = time.time()
        stored = await compare_and_set(self.kv, KEY_PREFIX + model, _decoder, lambda cur: merge(cur, new, now))
        if stored is not None:
            self._apply(model, msgspec.json.encode(stored), None)  # our own view at once
        return stored

    async def report_window(self, model: str, tokens: int) -> None:
        """Record the context window ``model`` is served with (written only when it changed)."""
        if self.windows.get(model) == tokens:
            return
        await self.kv.put(WINDOW_PREFIX + model, b"%d" % tokens)
        self._apply_window(model, b"%d" % tokens, None)

    async def read(self, model: str) -> Availability:
        from fleet_shared.kv import read

        stored = await read(self.kv, KEY_PREFIX + model, _decoder)
        value, _ = stored  # unpacked apart from the call: python/mypy#20219 infers T wrongly otherwise
        return value or UP
