"""Hot reload of the custom rules: the router follows the ``rules`` key of the config bucket
and swaps each valid version into its policy, without a restart.

A version that does not validate (written by hand, or against models this router does not
know) is rejected with its line and reason, logged at warning, and reported in the bucket
(``status.<router>``); the policy keeps the rules it had. Deleting the key clears the rules.
"""

from __future__ import annotations

import logging
import time

from nats.js.kv import KeyValue

from fleet_router.policy import IntelligentModelRouter
from fleet_shared import rules_store
from fleet_shared.kv import KeyWatch
from fleet_shared.rules import EMPTY, RULES_KEY, RulesError, parse_rules

log = logging.getLogger("fleet.router.rules")

#: Seconds ``start`` waits for the bucket's present state before routing without it.
SYNC_TIMEOUT_S = 5.0


class RulesWatch:
    """Keeps ``policy``'s custom rules equal to the newest valid version in ``kv``.

    Parameters:
        kv: the config bucket (``rules_store.open_config``).
        policy: the router's policy; its ``set_custom_rules`` is called on every valid version.
        router: this router's name in the status it reports.
    """

    def __init__(self, kv: KeyValue, policy: IntelligentModelRouter, *, router: str) -> None:
        self.kv = kv
        self.policy = policy
        self.router = router
        #: the revision routed with (0: none), and the newest revision seen
        self.loaded_revision = 0
        self.seen_revision = 0
        self._watch = KeyWatch(kv, self._on_entry, keys=RULES_KEY, sync_timeout_s=SYNC_TIMEOUT_S)

    async def start(self) -> None:
        """Load the present rules, then follow changes; returns once the present state is read."""
        await self._watch.start()

    async def _on_entry(self, entry: KeyValue.Entry) -> None:
        # (a failure, e.g. a status not written, is logged by the watch, which goes on)
        await self.apply(entry.revision or 0, entry.value or b"", deleted=entry.operation in ("DEL", "PURGE"))

    async def apply(self, revision: int, value: bytes, *, deleted: bool = False) -> bool:
        """Load one version of the rules; returns whether it was loaded."""
        self.seen_revision = revision
        try:
            rules = (
                EMPTY if deleted else parse_rules(value.decode(), known_models=frozenset(self.policy.registry.models))
            )
        except (RulesError, UnicodeDecodeError) as exc:
            log.warning("rules revision %d rejected, keeping revision %d: %s", revision, self.loaded_revision, exc)
            await self._report(revision, error=str(exc))
            return False
        self.policy.set_custom_rules(rules)
        self.loaded_revision = revision
        log.info(
            "rules revision %d loaded: %d rules, %d experiments", revision, len(rules.rules), len(rules.experiments)
        )
        await self._report(revision)
        return True

    async def _report(self, revision: int, *, error: str | None = None) -> None:
        rules = self.policy.custom
        status = rules_store.RulesStatus(
            router=self.router,
            revision=revision,
            loaded_revision=self.loaded_revision,
            error=error,
            rules=len(rules.rules),
            experiments=len(rules.experiments),
            at=time.time(),
        )
        await rules_store.report(self.kv, status)

    async def stop(self) -> None:
        await self._watch.stop()
