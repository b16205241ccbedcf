"""NATS KV helpers: open-or-create a bucket, compare-and-set updates, and a lease.

Only KV features of nats-server 2.9 are used (no per-key TTL): values carry their own
timestamps, and a bucket-wide ``ttl`` ages out keys nobody writes any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from msgspec import Struct
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Compare-and-set tries before giving up (each lost race means another writer moved on).
CAS_TRIES = 25


async def open_bucket(js: JetStreamContext, name: str, *, ttl_s: float | None = None, replicas: int = 1) -> KeyValue:
    """Bind to bucket ``name``, creating it (history 1, file storage) when missing. The fleet's
    buckets are made at start-up by ``bus.ensure_streams`` with FLEET_STREAM_REPLICAS."""
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=name, history=1, ttl=ttl_s, replicas=replicas)
    except Exception:  # created meanwhile by another process
        return await js.key_value(name)


async def read(kv: KeyValue, key: str, decoder: msgspec.json.Decoder[T]) -> tuple[T | None, int]:
    """The decoded value and its revision; (None, 0) when the key is absent or deleted."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    if not entry.value:
        return None, entry.revision or 0
    try:
        return decoder.decode(entry.value), entry.revision or 0
    except msgspec.DecodeError:
        return None, entry.revision or 0


async def compare_and_set(
    kv: KeyValue,
    key: str,
    decoder: msgspec.json.Decoder[T],
    change: Callable[[T | None], T | None],
) -> T | None:
    """Apply ``change(current) -> new`` atomically; ``None`` from ``change`` writes nothing.

    Raises:
        RuntimeError: lost ``CAS_TRIES`` races in a row.
    """
    for _ in range(CAS_TRIES):
        stored = await read(kv, key, decoder)
        current, revision = stored  # unpacked apart from the call: python/mypy#20219 infers T wrongly otherwise
        new = change(current)
        if new is None:
            return current
        payload = msgspec.json.encode(new)
        try:
            if revision:
                await kv.update(key, payload, last=revision)
            else:
                await kv.create(key, payload)
            return new
        except KeyWrongLastSequenceError:
            continue  # someone wrote in between: read again
        except Exception as exc:  # create() on a deleted key reports a wrong sequence too
            if "wrong last sequence" not in str(exc).lower():
                raise
    raise RuntimeError(f"kv {key}: lost {CAS_TRIES} compare-and-set races")


class LeaseValue(Struct, frozen=True):
    holder: str
    expires_at: float  # unix seconds


_lease_decoder = msgspec.json.Decoder(LeaseValue)


def holder_id() -> str:
    """Who this process is, for lease values and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    """One holder at a time for ``key``: taken when free or stale, renewed by its holder.

    Parameters:
        ttl_s: a holder that has not renewed for this long is stale and may be replaced.
    """

    def __init__(self, kv: KeyValue, key: str, *, ttl_s: float, holder: str | None = None) -> None:
        self.kv = kv
        self.key = key
        self.ttl_s = ttl_s
        self.holder = holder or holder_id()
        self.held = False

    async def acquire(self, now: float | None = None) -> bool:
        """Take or renew the lease; True while this process holds it."""
        now = time.time() if now is None else now

        def change(current: LeaseValue | None) -> LeaseValue | None:
            if current is None or current.holder == self.holder or current.expires_at <= now:
                return LeaseValue(self.holder, now + self.ttl_s)
            return None

        try:
            value = await compare_and_set(self.kv, self.key, _lease_decoder, change)
        except RuntimeError:
            value = None
        was, self.held = self.held, value is not None and value.holder == self.holder
        if self.held != was:
            log.info("lease %s %s by %s", self.key, "taken" if self.held else "lost", self.holder)
        return self.held

    async def release(self) -> None:
        """Give the lease up now (on a clean stop), so another process takes over at once."""
        if not self.held:
            return
        self.held = False

        def change(current: LeaseValue | None) -> LeaseValue | None:
            if current is not None and current.holder == self.holder:
                return LeaseValue("", 0.0)
            return None

        try:
            await compare_and_set(self.kv, self.key, _lease_decoder, change)
        except Exception as exc:  # NATS gone while stopping: the lease simply expires
            log.info("lease %s not released: %s", self.key, exc)


class KeyWatch:
    """Follows ``keys`` of a bucket: ``on_entry`` gets each stored entry, then every change
    (a deleted key comes with ``operation`` DEL or PURGE). ``start`` returns once the present
    state is read (at most ``sync_timeout_s``); ``stop`` is idempotent. A failing ``on_entry``
    is logged and the watch goes on: one bad value must not blind the process to the rest.

    Parameters:
        kv: the bucket.
        on_entry: awaited with each ``KeyValue.Entry``.
        keys: the key or wildcard to follow.
    """

    def __init__(
        self,
        kv: KeyValue,
        on_entry: Callable[[KeyValue.Entry], Awaitable[None]],
        *,
        keys: str = ">",
        sync_timeout_s: float = 5.0,
    ) -> None:
        self.kv = kv
        self.on_entry = on_entry
        self.keys = keys
        self.sync_timeout_s = sync_timeout_s
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._watcher = await self.kv.watch(self.keys)
        self._task = asyncio.create_task(self._follow(self._watcher))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._synced.wait(), self.sync_timeout_s)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the watcher has delivered everything stored so far
                self._synced.set()
                continue
            try:
                await self.on_entry(entry)
            except Exception:
                log.warning("kv %s: entry %s not applied", self.keys, entry.key, exc_info=True)
            if entry.delta == 0:
                self._synced.set()

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated
            self._watcher = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
