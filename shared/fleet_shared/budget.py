"""Fleet-wide spending budgets in NATS KV: reserve before a paid call, settle after it.

Every budget is one key of one bucket (``Subjects.budgets_bucket``), ``<period>.<scope>``:
the period is the UTC day (``d20261206``) or month (``m202612``); the scope is ``fleet``,
``key-<name>``, ``team-<name>``, ``model-<id>`` or ``provider-<name>``. Its value, a
``Spend``, holds what was spent and the *holds* still open: one per dispatched paid attempt,
for the router's estimate, until the worker settles it with the attempt's actual cost or
it expires (an abandoned reservation: a router or worker died in between).

Why NATS KV and not PostgreSQL: the routers and workers already depend on NATS alone, a
compare-and-set on one key is the atomic "check the limit and take" a budget needs, and the
values survive restarts of every process (the spend is known after a router restart).
Within a process, one lock per key serialises its own writers, so compare-and-set races
happen only between processes and stay few.

``reserve`` is all-or-nothing over the job's budgets (day and month of each scope): it
takes a hold on each in turn and gives back what it took when one refuses. A hold is the
estimate (input tokens + max_tokens at the model's prices), so the actual spend stays at or
under a limit: a job's actual cost exceeds its estimate only when the input estimate was low.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct, field
from nats.js.kv import KeyValue

from fleet_shared.kv import KeyWatch, compare_and_set
from fleet_shared.schema import METADATA_KEY_NAME, METADATA_TEAM, BudgetAlert

#: Where a job names the budgets it draws from (the gateway writes the key name).
KEY_FIELD = METADATA_KEY_NAME
TEAM_FIELD = METADATA_TEAM

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class Limit(Struct, frozen=True, forbid_unknown_fields=True):
    """The limits of one scope; None: unlimited."""

    daily_usd: Annotated[float, Meta(ge=0)] | None = None
    monthly_usd: Annotated[float, Meta(ge=0)] | None = None


class BudgetConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every budget of the fleet (a TOML file: ``[keys.<name>]``, ``[teams.<name>]``,
    ``[models.<id>]``, ``[providers.<name>]``, each with ``daily_usd`` / ``monthly_usd``)."""

    fleet: Limit = Limit()
    keys: dict[str, Limit] = field(default_factory=dict)
    teams: dict[str, Limit] = field(default_factory=dict)
    models: dict[str, Limit] = field(default_factory=dict)
    providers: dict[str, Limit] = field(default_factory=dict)
    #: share of a limit after which an alert (``<p>.alerts.budget``) is published once
    soft_fraction: Annotated[float, Meta(gt=0, le=1)] = 0.8
    #: an unsettled hold is released after this long (a dead router or worker)
    hold_s: Annotated[float, Meta(gt=0)] = 600.0

    def scoped(self, *, model: str, provider: str, metadata: dict[str, Any] | None) -> list[tuple[str, Limit]]:
        """The budgets a paid call of ``model`` draws from: (scope, limit) pairs."""
        meta = metadata or {}
        pairs: list[tuple[str, Limit | None]] = [
            ("fleet", self.fleet),
            (f"model:{model}", self.models.get(model)),
            (f"provider:{provider}", self.providers.get(provider)),
        ]
        for kind, table, name in (("key", self.keys, meta.get(KEY_FIELD)), ("team", self.teams, meta.get(TEAM_FIELD))):
            if isinstance(name, str) and name:
                pairs.append((f"{kind}:{name}", table.get(name)))
        return [(scope, limit) for scope, limit in pairs if limit is not None]

    def every_scope(self) -> list[tuple[str, Limit]]:
        """Every configured (scope, limit): what a router follows for its policy."""
        pairs = [("fleet", self.fleet)]
        for kind, table in (
            ("key", self.keys),
            ("team", self.teams),
            ("model", self.models),
            ("provider", self.providers),
        ):
            pairs += [(f"{kind}:{name}", limit) for name, limit in table.items()]
        return pairs


def load_budgets(
    path: str | None, *, daily_usd: float | None, monthly_usd: float | None, **overrides: Any
) -> BudgetConfig:
    """The budget file at ``path`` (if any) with the fleet-wide limits from the settings.

    Raises:
        msgspec.ValidationError: the file is invalid (the message names the field).
    """
    raw: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            raw = msgspec.toml.decode(fh.read())
        _check_tables(path, raw)
    raw["fleet"] = {"daily_usd": daily_usd, "monthly_usd": monthly_usd}
    raw.update(overrides)
    return msgspec.convert(raw, BudgetConfig)


def _check_tables(path: str, raw: dict[str, Any]) -> None:
    """Validate each ``[<section>.<name>]`` on its own, so an error names the table
    (msgspec's path shows a dict key only as ``[...]``)."""
    for section in ("keys", "teams", "models", "providers"):
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for name, value in table.items():
            try:
                msgspec.convert(value, Limit)
            except msgspec.ValidationError as exc:
                raise msgspec.ValidationError(f"{path}: [{section}.{name}]: {exc}") from exc


class Charge(Struct, frozen=True):
    """One KV key a hold is taken on, and its limit."""

    key: str
    scope: str
    period: str
    limit_usd: float


def charges(pairs: Iterable[tuple[str, Limit]], now: float) -> list[Charge]:
    """The day and month keys of each scope that has a limit for that period."""
    day = time.strftime("d%Y%m%d", time.gmtime(now))
    month = time.strftime("m%Y%m", time.gmtime(now))
    out = []
    for scope, limit in pairs:
        safe = _UNSAFE.sub("_", scope.replace(":", "-"))
        if limit.daily_usd is not None:
            out.append(Charge(f"{day}.{safe}", scope, day, limit.daily_usd))
        if limit.monthly_usd is not None:
            out.append(Charge(f"{month}.{safe}", scope, month, limit.monthly_usd))
    return out


class Hold(Struct, frozen=True, array_like=True):
    usd: float
    expires_at: float


class Spend(Struct, frozen=True, omit_defaults=True):
    """The value of one budget key."""

    spent_usd: float = 0.0
    holds: dict[str, Hold] = field(default_factory=dict)
    alerted: bool = False  # the soft-limit alert of this period was published

    def live_holds(self, now: float) -> dict[str, Hold]:
        return {h: v for h, v in self.holds.items() if v.expires_at > now}

    def committed(self, now: float) -> float:
        """Spent plus what live holds keep aside."""
        return self.spent_usd + sum(h.usd for h in self.live_holds(now).values())


_spend_decoder = msgspec.json.Decoder(Spend)


class BudgetBook:
    """Reserve and settle against the budgets in one KV bucket, and follow them.

    Parameters:
        kv: the budgets bucket.
        config: the limits.
        on_alert: awaited with each alert this process's write triggered (published by the caller).
    """

    def __init__(
        self,
        kv: KeyValue,
        config: BudgetConfig,
        *,
        on_alert: Callable[[BudgetAlert], Awaitable[None]] | None = None,
    ) -> None:
        self.kv = kv
        self.config = config
        self.on_alert = on_alert
        #: latest value seen per key (kept by ``watch``), for ``remaining``
        self.values: dict[str, Spend] = {}
        self.version = 0
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._watch = KeyWatch(kv, self._on_entry)

    async def reserve(self, hold_id: str, usd: float, to: list[Charge], *, now: float | None = None) -> Charge | None:
        """Hold ``usd`` on every charge, or on none: returns the charge that refused (None: held).

        Raises:
            RuntimeError: lost too many compare-and-set races (nothing stays held).
        """
        now = time.time() if now is None else now
        taken: list[Charge] = []
        try:
            for charge in to:
                if not await self._hold(hold_id, usd, charge, now):
                    await self._release(hold_id, taken, now)
                    return charge
                taken.append(charge)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(hold_id, taken, now))
            raise
        return None

    async def settle(self, hold_id: str, usd: float, keys: Iterable[str], *, now: float | None = None) -> None:
        """Replace the hold ``hold_id`` by ``usd`` actually spent, on every key (a hold that
        expired meanwhile is gone: the spend is still counted).

        Raises:
            RuntimeError: lost too many compare-and-set races.
        """
        now = time.time() if now is None else now
        for key in keys:

            def change(current: Spend | None) -> Spend | None:
                current = current or Spend()
                holds = current.live_holds(now)
                if holds.pop(hold_id, None) is None and usd == 0:
                    return None
                return Spend(current.spent_usd + usd, holds, current.alerted)

            await self._write(key, change)

    async def _hold(self, hold_id: str, usd: float, charge: Charge, now: float) -> bool:
        soft = charge.limit_usd * self.config.soft_fraction
        outcome: dict[str, Any] = {}

        def change(current: Spend | None) -> Spend | None:
            current = current or Spend()
            holds = current.live_holds(now)
            committed = current.spent_usd + sum(h.usd for h in holds.values())
            outcome.clear()
            if hold_id in holds:  # taken before (a redelivered message): keep it
                return None
            if committed + usd > charge.limit_usd:
                outcome["refused"] = committed
                return None
            holds[hold_id] = Hold(usd, now + self.config.hold_s)
            crossed = not current.alerted and committed + usd >= soft
            outcome["crossed"] = crossed
            return Spend(current.spent_usd, holds, current.alerted or crossed)

        await self._write(charge.key, change)
        if "refused" in outcome:
            await self._alert(charge, outcome["refused"] + usd, "exhausted", now)
            return False
        if outcome.get("crossed"):
            await self._alert(charge, self.values.get(charge.key, Spend()).committed(now), "soft", now)
        return True

    async def _release(self, hold_id: str, taken: list[Charge], now: float) -> None:
        await self.settle(hold_id, 0.0, [c.key for c in taken], now=now)

    async def _write(self, key: str, change: Callable[[Spend | None], Spend | None]) -> None:
        async with self._locks[key]:
            value = await compare_and_set(self.kv, key, _spend_decoder, change)
        if value is not None:
            self._apply(key, value)

    async def _alert(self, charge: Charge, committed: float, level: str, now: float) -> None:
        if self.on_alert is None:
            return
        alert = BudgetAlert(
            scope=charge.scope,
            period=charge.period,
            level=level,
            limit_usd=charge.limit_usd,
            committed_usd=round(committed, 9),
            at=now,
        )
        await self.on_alert(alert)

    # -- following the bucket -------------------------------------------------------------

    def remaining(self, pairs: Iterable[tuple[str, Limit]], now: float | None = None) -> dict[str, float]:
        """Per scope, the least left over its periods (from the values seen so far)."""
        now = time.time() if now is None else now
        left: dict[str, float] = {}
        for charge in charges(pairs, now):
            spend = self.values.get(charge.key)
            value = charge.limit_usd - (spend.committed(now) if spend else 0.0)
            left[charge.scope] = max(0.0, min(value, left.get(charge.scope, value)))
        return left

    async def watch(self) -> None:
        """Keep ``values`` current; returns once the bucket's present state is read."""
        await self._watch.start()

    async def _on_entry(self, entry: KeyValue.Entry) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.values.pop(entry.key, None)
            self.version += 1
            return
        with contextlib.suppress(msgspec.DecodeError):
            self._apply(entry.key, _spend_decoder.decode(entry.value))

    def _apply(self, key: str, value: Spend) -> None:
        self.values[key] = value
        self.version += 1

    async def stop(self) -> None:
        await self._watch.stop()
