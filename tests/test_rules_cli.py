"""``modelrouter rules`` and recommendations that act, through a real fleet (emulators,
router, workers, ledger on a private nats-server and PostgreSQL); the ledger's auto mode
and its threshold."""

from __future__ import annotations

import json

import asyncpg
import nats
import pytest

from fleet_ledger.auto_rules import apply_once, to_apply
from fleet_shared import rules_store
from fleet_shared.recommend_rules import recommendation_id, rule_for, with_rule
from fleet_shared.registry import load_registry
from fleet_shared.rules import RulesError, parse_rules
from fleet_shared.subjects import Subjects
from tests.client_harness import cli, fresh_database
from tests.fleet_harness import running_fleet
from tests.test_rules_fleet import router_status

pytestmark = [pytest.mark.anyio]

KNOWN = frozenset(load_registry().models)
GOOD = '[[rule]]\nname = "code-to-gemini"\nmatch = { task_types = ["code_generation"] }\nprefer = ["gemini"]\n'
BAD = '[[rule]]\nname = "x"\n\n[[rule]]\nname = "y"\nmatch = { complexity_max = 0 }\n'


@pytest.fixture(scope="module")
def own_database_url(postgres_admin_dsn):
    with fresh_database(postgres_admin_dsn) as url:
        yield url


@pytest.fixture
async def fleet(make_settings, own_database_url):
    settings = make_settings(database_url=own_database_url)
    async with running_fleet(settings) as (fleet, watch):
        fleet.watch = watch
        fleet.config = await rules_store.open_config(fleet.js, fleet.subjects)
        yield fleet


async def commercial_simple_jobs(database_url: str, n: int) -> None:
    """``n`` complexity-2 jobs whose first attempt went to openai: a route_locally finding."""
    conn = await asyncpg.connect(database_url)
    try:
        for i in range(n):
            await conn.execute(
                """INSERT INTO routing_decisions (job_id, "timestamp", task_type, complexity, selected_model,
                   success, attempts_count, finished_at) VALUES ($1, 1, 'completion', 2, 'openai', true, 1, 2)""",
                f"rec-{i}",
            )
            await conn.execute(
                """INSERT INTO attempts (job_id, attempt_no, model, provider, success, cost_usd, latency_ms, at)
                   VALUES ($1, 1, 'openai', 'openai', true, 0.001, 100, 2)""",
                f"rec-{i}",
            )
    finally:
        await conn.close()


@pytest.mark.integration
async def test_check_set_show_and_a_refused_file(fleet, tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    checked = await cli("rules", "check", str(bad), settings=fleet.settings)
    assert checked.code == 1 and "line 4" in checked.err and "rule[1] 'y'" in checked.err
    assert (await cli("rules", "check", str(good), settings=fleet.settings)).code == 0

    stored = await cli("rules", "set", str(good), "--json", settings=fleet.settings)
    assert stored.code == 0
    revision = json.loads(stored.out)["revision"]
    assert (await router_status(fleet, revision)).loaded_revision == revision
    refused = await cli("rules", "set", str(bad), settings=fleet.settings)
    assert refused.code == 1 and "complexity_max" in refused.err
    assert (await rules_store.current(fleet.config)).revision == revision  # nothing written

    shown = json.loads((await cli("rules", "show", "--json", settings=fleet.settings)).out)
    assert shown["current"]["text"] == GOOD and shown["current"]["revision"] == revision
    assert [s["loaded_revision"] for s in shown["routers"]] == [revision]
    human = await cli("rules", "show", settings=fleet.settings)
    assert "code-to-gemini" in human.out and "routing with revision" in human.out


@pytest.mark.integration
async def test_a_recommendation_becomes_a_rule_and_is_reverted(fleet, own_database_url):
    await commercial_simple_jobs(own_database_url, 12)
    recs = json.loads((await cli("analytics", "recommendations", "--json", settings=fleet.settings)).out)
    rec = next(r for r in recs if r["id"] == "route_locally:openai")
    assert "max_cost_usd = 0.0" in rec["rule"] and "complexity_max = 3" in rec["rule"]

    first, _ = await rules_store.write(fleet.config, GOOD)
    applied = await cli("rules", "apply-recommendation", "route_locally:openai", "--json", settings=fleet.settings)
    assert applied.code == 0, applied.err
    revision = json.loads(applied.out)["revision"]
    assert (await router_status(fleet, revision)).rules == 2
    forced = await fleet.request({"prompt": "hi", "complexity": 2, "context": {"force_model": "openai"}})
    assert forced.model in ("local_mlx", "local_devstral")
    assert "rule 'rec-route_locally:openai'" in forced.reasoning
    again = await cli("rules", "apply-recommendation", "route_locally:openai", settings=fleet.settings)
    assert again.code == 1 and "duplicate" in again.err
    unknown = await cli("rules", "apply-recommendation", "nope", settings=fleet.settings)
    assert unknown.code == 1 and "route_locally:openai" in unknown.err

    reverted = await cli("rules", "revert", "--json", settings=fleet.settings)
    assert reverted.code == 0 and json.loads(reverted.out)["restored"] == first
    back = json.loads(reverted.out)["revision"]
    assert (await router_status(fleet, back)).rules == 1
    history = json.loads((await cli("rules", "history", "--json", settings=fleet.settings)).out)
    assert [v["revision"] for v in history][-3:] == [first, revision, back]


# -- recommendations -> rules, pure ------------------------------------------------------


def rec(kind: str, evidence: dict, **kw) -> dict:
    r = {"kind": kind, "message": "m", "evidence": evidence, **kw}
    r["id"] = recommendation_id(r)
    r["rule"] = rule_for(r, complex_models=["claude", "gemini"], local_models=["local_mlx"])
    return r


def test_every_kind_of_recommendation_has_a_rule_that_validates():
    recs = [
        rec("low_success_rate", {"attempts": 20}, model="openai"),
        rec("slow_model", {"p50_latency_ms": 1}, model="gemini"),
        rec("route_locally", {"jobs": 9, "max_complexity": 3}, model="openai"),
        rec("high_escalation", {"jobs": 30}, task_type="reasoning"),
        rec("budget", {"fraction_spent": 0.9}),
    ]
    text = ""
    for r in recs:
        text = with_rule(text, r["rule"], known_models=KNOWN)
    rules = parse_rules(text, known_models=KNOWN)
    assert [x.from_recommendation for x in rules.rules] == [r["id"] for r in recs]
    assert rules.rules[0].forbid == ["openai"] and rules.rules[2].max_cost_usd == 0.0
    assert rules.rules[3].prefer == ["claude", "gemini"] and rules.rules[4].prefer == ["local_mlx"]
    with pytest.raises(RulesError, match="duplicate"):
        with_rule(text, recs[0]["rule"], known_models=KNOWN)
    assert rule_for({"kind": "something_new", "message": "?"}, complex_models=[], local_models=[]) is None


def test_the_auto_mode_applies_only_what_crosses_its_threshold():
    recs = [
        rec("route_locally", {"jobs": 10, "max_complexity": 3}, model="openai"),
        rec("low_success_rate", {"attempts": 9}, model="gemini"),
        rec("high_escalation", {"jobs": 50}, task_type="reasoning"),
        rec("budget", {"jobs": 1000}),
    ]
    assert recs[3]["id"] == "budget"
    chosen = to_apply(recs, applied={"high_escalation:reasoning"}, min_evidence=10)
    assert [r["id"] for r in chosen] == ["route_locally:openai"]
    assert to_apply(recs, applied=set(), min_evidence=0) == []  # 0: the auto mode is off


class StubAnalytics:
    def __init__(self, recs: list[dict]) -> None:
        self.recs = recs

    async def get_optimization_recommendations(self) -> list[dict]:
        return self.recs


async def test_the_auto_mode_writes_one_logged_reversible_version_per_rule(nats_url, prefix, caplog):
    nc = await nats.connect(nats_url)
    try:
        kv = await rules_store.open_config(nc.jetstream(), Subjects(prefix))
        base, _ = await rules_store.write(kv, GOOD)
        analytics = StubAnalytics(
            [
                rec("route_locally", {"jobs": 40, "max_complexity": 3}, model="openai"),
                rec("low_success_rate", {"attempts": 12}, model="gemini"),
                rec("slow_model", {"attempts": 3}, model="claude"),
            ]
        )
        done = await apply_once(analytics, kv, min_evidence=10, known_models=KNOWN)  # type: ignore[arg-type]
        assert done == ["route_locally:openai", "low_success_rate:gemini"]
        assert "auto mode applied recommendation route_locally:openai" in caplog.text
        assert await apply_once(analytics, kv, min_evidence=10, known_models=KNOWN) == []  # type: ignore[arg-type]
        rules = parse_rules((await rules_store.current(kv)).text)
        assert [r.name for r in rules.rules] == [
            "code-to-gemini",
            "rec-route_locally:openai",
            "rec-low_success_rate:gemini",
        ]
        await rules_store.revert(kv, to_revision=base)
        assert (await rules_store.current(kv)).text == GOOD
    finally:
        await nc.close()
