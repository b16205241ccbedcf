"""The ledger's auto mode for recommendations (issue 11, item 8; off by default).

With ``FLEET_RULES_AUTO_APPLY_EVIDENCE=N`` the ledger reads its optimisation
recommendations every ``FLEET_RULES_AUTO_APPLY_INTERVAL_S`` and turns each one whose
evidence counts at least N jobs (or attempts) into a custom rule, appended to the fleet's
rules in NATS KV (``fleet_shared.rules_store``): every router reloads them. Each rule
applied is logged at warning with its evidence; ``modelrouter rules revert`` undoes it (the
previous version stays in the bucket's history). A recommendation already applied (a rule
with its ``from_recommendation``) is not applied again; ``budget`` advice is about one day
and never applied automatically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from nats.js.kv import KeyValue

from fleet_ledger.analytics import RouterAnalytics
from fleet_shared import rules_store
from fleet_shared.recommend_rules import applied_ids, with_rule
from fleet_shared.rules import RulesError, parse_rules

log = logging.getLogger("fleet.ledger.auto_rules")

#: Recommendation kinds never applied automatically.
MANUAL_ONLY = frozenset({"budget"})


def evidence_count(rec: dict[str, Any]) -> int:
    """The jobs (else attempts) a recommendation rests on."""
    evidence = rec.get("evidence") or {}
    return int(evidence.get("jobs") or evidence.get("attempts") or 0)


def to_apply(recs: Iterable[dict[str, Any]], *, applied: set[str], min_evidence: int) -> list[dict[str, Any]]:
    """The recommendations the auto mode applies: a rule, enough evidence, not applied yet."""
    return [
        r
        for r in recs
        if r.get("rule")
        and r["kind"] not in MANUAL_ONLY
        and r.get("id") not in applied
        and evidence_count(r) >= min_evidence > 0
    ]


async def apply_once(
    analytics: RouterAnalytics, kv: KeyValue, *, min_evidence: int, known_models: frozenset[str]
) -> list[str]:
    """Apply what crosses the threshold now; returns the ids applied (one new version each)."""
    recs = await analytics.get_optimization_recommendations()
    done: list[str] = []
    current = await rules_store.current(kv)
    text = current.text if current else ""
    applied = applied_ids(parse_rules(text)) if text.strip() else set()
    for rec in to_apply(recs, applied=applied, min_evidence=min_evidence):
        try:
            text = with_rule(text, rec["rule"], known_models=known_models)
        except RulesError as exc:  # e.g. the rules in force do not validate any more
            log.warning("auto mode: recommendation %s not applied: %s", rec["id"], exc)
            continue
        revision, _ = await rules_store.write(kv, text, known_models=known_models)
        log.warning(
            "auto mode applied recommendation %s as rules revision %d (evidence %s); undo: modelrouter rules revert",
            rec["id"],
            revision,
            rec.get("evidence"),
        )
        done.append(rec["id"])
    return done


async def run_auto_mode(
    analytics: RouterAnalytics,
    kv: KeyValue,
    *,
    min_evidence: int,
    interval_s: float,
    known_models: frozenset[str],
    stopping: asyncio.Event,
) -> None:
    """``apply_once`` every ``interval_s`` until ``stopping`` is set; a failed round is logged."""
    while not stopping.is_set():
        try:
            await apply_once(analytics, kv, min_evidence=min_evidence, known_models=known_models)
        except Exception:
            log.warning("auto mode round failed", exc_info=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)
