"""Fleet-wide budgets: the pure parts (config, charges, the policy's use of what is left) and
the reservations in a real NATS KV bucket shared by several processes."""

from __future__ import annotations

import asyncio

import msgspec
import nats
import pytest

from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_shared.budget import BudgetBook, BudgetConfig, Limit, Spend, charges, load_budgets
from fleet_shared.kv import open_bucket
from fleet_shared.schema import BudgetAlert, Job

T0 = 1_796_558_400.0  # 2026-12-06 12:00 UTC


def test_charges_name_the_day_and_month_of_each_limited_scope():
    config = BudgetConfig(fleet=Limit(daily_usd=1.0, monthly_usd=20.0), keys={"alice": Limit(daily_usd=0.5)})
    got = charges(config.scoped(model="claude", provider="anthropic", metadata={"key_name": "alice"}), T0)
    assert [(c.key, c.limit_usd) for c in got] == [
        ("d20261206.fleet", 1.0),
        ("m202612.fleet", 20.0),
        ("d20261206.key-alice", 0.5),
    ]
    # a key without a budget of its own draws only from the fleet's
    assert [c.scope for c in charges(config.scoped(model="x", provider="y", metadata={"key_name": "bob"}), T0)] == [
        "fleet",
        "fleet",
    ]


def test_a_budget_file_with_an_unknown_field_is_rejected_with_its_path(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text("[keys.alice]\ndaily_usd = 1.0\nweekly_usd = 3.0\n")
    with pytest.raises(msgspec.ValidationError, match=r"\[keys\.alice\]: Object contains unknown field `weekly_usd`"):
        load_budgets(str(path), daily_usd=10.0, monthly_usd=None)
    path.write_text("[models.claude]\ndaily_usd = -1\n")
    with pytest.raises(
        msgspec.ValidationError, match=r"\[models\.claude\]: Expected `float` >= 0.0 - at `\$\.daily_usd`"
    ):
        load_budgets(str(path), daily_usd=10.0, monthly_usd=None)


def test_expired_holds_no_longer_count():
    spend = Spend(spent_usd=1.0, holds={"a": (0.5, T0 + 10), "b": (0.25, T0 - 1)})  # type: ignore[dict-item]
    spend = msgspec.convert(msgspec.to_builtins(spend), Spend)
    assert spend.committed(T0) == pytest.approx(1.5)


# -- the policy -------------------------------------------------------------------------------

router = IntelligentModelRouter()
HARD = Job(prompt="Prove the claim rigorously", complexity=8, metadata={"key_name": "alice"})


def test_a_key_out_of_budget_falls_back_to_a_free_local_model():
    decision = router.route(HARD, state=LiveState(budget_left={"key:alice": 0.0}))
    assert decision.model is not None and decision.model.is_local
    assert "budget left $0.0000 (key:alice)" in decision.reasoning
    # another key is not held back by alice's budget
    other = router.route(
        msgspec.structs.replace(HARD, metadata={"key_name": "bob"}), state=LiveState(budget_left={"key:alice": 0.0})
    )
    assert other.model is not None and not other.model.is_local


def test_with_no_free_model_left_the_job_fails_budget_exhausted():
    local = frozenset(m for m, spec in router.registry.models.items() if spec.is_local)
    decision = router.route(HARD, state=LiveState(unavailable=local, budget_left={"fleet": 0.0}))
    assert decision.model is None and decision.error_code == "budget_exhausted"
    assert "within budget" in decision.reasoning


def test_a_model_budget_moves_the_job_to_the_next_paid_model():
    decision = router.route(HARD, state=LiveState(budget_left={"model:claude": 0.0}))
    assert decision.model is not None and decision.model.id == "gemini"


# -- reservations in NATS KV ---------------------------------------------------------------


@pytest.fixture
async def books(nats_url, subjects):
    """Two books on one bucket, as two router processes would have; alerts collected."""
    clients = [await nats.connect(nats_url) for _ in range(2)]
    alerts: list[BudgetAlert] = []

    async def collect(alert: BudgetAlert) -> None:
        alerts.append(alert)

    config = BudgetConfig(fleet=Limit(daily_usd=1.0), soft_fraction=0.5, hold_s=60.0)
    made = [
        BudgetBook(await open_bucket(nc.jetstream(), subjects.budgets_bucket), config, on_alert=collect)
        for nc in clients
    ]
    yield made, alerts
    for book in made:
        await book.stop()
    for nc in clients:
        await nc.drain()


def fleet_charges(book: BudgetBook, now: float = T0):
    return charges(book.config.scoped(model="claude", provider="anthropic", metadata=None), now)


@pytest.mark.anyio
async def test_concurrent_reservations_of_two_processes_never_pass_the_limit(books):
    (a, b), _ = books
    # 300 reservations of $0.03 against $1: at most 33 fit
    results = await asyncio.gather(
        *(book.reserve(f"job{i}", 0.03, fleet_charges(book), now=T0) for i, book in enumerate([a, b] * 150))
    )
    held = [r for r in results if r is None]
    assert len(held) == 33
    await b.watch()
    assert b.values["d20261206.fleet"].committed(T0) == pytest.approx(0.99)


@pytest.mark.anyio
async def test_settling_replaces_the_hold_by_the_actual_cost_and_survives_a_restart(books, nats_url, subjects):
    (a, _), _ = books
    assert await a.reserve("j1", 0.6, fleet_charges(a), now=T0) is None
    refused = await a.reserve("j2", 0.6, fleet_charges(a), now=T0)
    assert refused is not None and refused.scope == "fleet"
    await a.settle("j1", 0.1, [c.key for c in fleet_charges(a)], now=T0)
    assert await a.reserve("j2", 0.6, fleet_charges(a), now=T0) is None
    # a process started later (a restarted router) knows the day's spend
    nc = await nats.connect(nats_url)
    try:
        fresh = BudgetBook(await open_bucket(nc.jetstream(), subjects.budgets_bucket), a.config)
        await fresh.watch()
        assert fresh.remaining(a.config.every_scope(), now=T0) == {"fleet": pytest.approx(0.3)}
        await fresh.stop()
    finally:
        await nc.drain()


@pytest.mark.anyio
async def test_an_abandoned_hold_expires(books):
    (a, _), _ = books
    assert await a.reserve("dead", 0.9, fleet_charges(a), now=T0) is None
    assert await a.reserve("next", 0.9, fleet_charges(a), now=T0) is not None
    later = T0 + a.config.hold_s + 1
    assert await a.reserve("next", 0.9, fleet_charges(a, later), now=later) is None


@pytest.mark.anyio
async def test_a_reservation_is_all_or_nothing_over_its_budgets(books):
    (a, _), _ = books
    config = BudgetConfig(fleet=Limit(daily_usd=1.0), keys={"alice": Limit(daily_usd=0.2)})
    both = charges(config.scoped(model="claude", provider="anthropic", metadata={"key_name": "alice"}), T0)
    refused = await a.reserve("j1", 0.5, both, now=T0)
    assert refused is not None and refused.scope == "key:alice"
    # the fleet's hold taken first was given back
    assert a.values["d20261206.fleet"].committed(T0) == 0.0


@pytest.mark.anyio
async def test_the_soft_limit_alerts_once_and_a_refusal_alerts(books):
    (a, b), alerts = books
    for i in range(4):  # 0.2 each: the third crosses 0.5
        assert await (a if i % 2 else b).reserve(f"j{i}", 0.2, fleet_charges(a), now=T0) is None
    assert await a.reserve("big", 0.5, fleet_charges(a), now=T0) is not None
    assert [(x.level, x.scope) for x in alerts] == [("soft", "fleet"), ("exhausted", "fleet")]
    assert alerts[0].committed_usd == pytest.approx(0.6) and alerts[1].limit_usd == 1.0
