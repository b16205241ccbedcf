"""Where the custom rules live: the text of the rule file in NATS KV (``<STEM>_CONFIG``,
key ``rules``), with its earlier versions (the bucket keeps ``CONFIG_HISTORY``), and what
each router loaded (key ``status.<router>``).

Writers (``modelrouter rules set``, ``apply-recommendation``, the ledger's auto mode)
validate before writing; routers validate again on load and keep their rules when a
version does not validate (``fleet_router.rules_watch``).
"""

from __future__ import annotations

import time

import msgspec
from msgspec import Struct
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from fleet_shared.bus import CONFIG_HISTORY
from fleet_shared.rules import RULES_KEY, RuleSet, parse_rules
from fleet_shared.subjects import Subjects

STATUS_PREFIX = "status."


class RulesStatus(Struct, frozen=True, kw_only=True):
    """What one router made of the newest version of the rules it saw."""

    router: str
    revision: int  # the KV revision of the version seen
    loaded_revision: int  # the revision the router routes with (0: none, the seed's tree only)
    error: str | None = None  # why ``revision`` was rejected (None: it was loaded)
    rules: int = 0
    experiments: int = 0
    at: float = 0.0


status_decoder = msgspec.json.Decoder(RulesStatus)


class RulesVersion(Struct, frozen=True):
    revision: int
    text: str
    at: float  # unix seconds the version was written


async def open_config(js: JetStreamContext, subjects: Subjects) -> KeyValue:
    """The config bucket, created (with history) when missing."""
    try:
        return await js.key_value(subjects.config_bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=subjects.config_bucket, history=CONFIG_HISTORY)
    except Exception:  # created meanwhile by another process
        return await js.key_value(subjects.config_bucket)


async def current(kv: KeyValue) -> RulesVersion | None:
    """The rules' newest version (None: never set, or deleted)."""
    try:
        entry = await kv.get(RULES_KEY)
    except KeyNotFoundError:
        return None
    return RulesVersion(entry.revision or 0, (entry.value or b"").decode(), _at(entry))


async def history(kv: KeyValue) -> list[RulesVersion]:
    """Every version kept, oldest first (deletions skipped)."""
    try:
        entries = await kv.history(RULES_KEY)
    except (KeyNotFoundError, NoKeysError):
        return []
    return [
        RulesVersion(e.revision or 0, e.value.decode(), _at(e))
        for e in entries
        if e.operation not in ("DEL", "PURGE") and e.value is not None
    ]


async def write(
    kv: KeyValue, text: str, *, known_models: frozenset[str] | set[str] | None = None
) -> tuple[int, RuleSet]:
    """Validate ``text`` and store it as the new version; returns (its revision, the rules).

    Raises:
        RulesError: ``text`` does not validate (nothing is written).
    """
    rules = parse_rules(text, known_models=known_models)
    revision = await kv.put(RULES_KEY, text.encode())
    return revision, rules


async def revert(kv: KeyValue, *, to_revision: int | None = None) -> tuple[int, RulesVersion]:
    """Store an earlier version again (default: the one before the newest); returns (the new
    revision, the version restored).

    Raises:
        LookupError: no such earlier version is kept.
    """
    versions = await history(kv)
    if to_revision is None:
        if len(versions) < 2:
            raise LookupError("no earlier version of the rules is kept")
        target = versions[-2]
    else:
        found = [v for v in versions if v.revision == to_revision]
        if not found:
            kept = ", ".join(str(v.revision) for v in versions) or "none"
            raise LookupError(f"revision {to_revision} is not kept (kept: {kept})")
        target = found[0]
    revision = await kv.put(RULES_KEY, target.text.encode())
    return revision, target


async def statuses(kv: KeyValue) -> list[RulesStatus]:
    """What every router reported loading."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    found = []
    for key in sorted(k for k in keys if k.startswith(STATUS_PREFIX)):
        try:
            entry = await kv.get(key)
            found.append(status_decoder.decode(entry.value or b""))
        except (KeyNotFoundError, msgspec.DecodeError):
            continue
    return found


async def report(kv: KeyValue, status: RulesStatus) -> None:
    await kv.put(STATUS_PREFIX + status.router, msgspec.json.encode(status))


def _at(entry: object) -> float:
    created = getattr(entry, "created", None)
    return created.timestamp() if created is not None and hasattr(created, "timestamp") else time.time()
