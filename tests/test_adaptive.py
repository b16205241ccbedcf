"""Adaptive routing, pure tier: decaying statistics per model and task type, and the policy's
demotion and promotion given them."""

from __future__ import annotations

import pytest

from fleet_router.adaptive import PerformanceBook
from fleet_router.policy import IntelligentModelRouter, LiveState, ModelStats
from fleet_shared.schema import Attempt, ErrorInfo, Job, TaskType

T0 = 1_700_000_000.0


def attempt(model: str = "local_mlx", *, ok: bool = True, latency_ms: float = 100, code: str = "server_error"):
    return Attempt(
        model=model,
        provider="lmstudio",
        success=ok,
        latency_ms=latency_ms,
        cost_usd=0.001,
        error=None if ok else ErrorInfo(code, "boom"),
    )


def test_statistics_are_per_task_type_and_overall():
    book = PerformanceBook(half_life_s=60)
    for i in range(10):
        book.attempt(attempt(ok=i < 4), at=T0 + i, task_type="code_generation")
        book.attempt(attempt(), at=T0 + i, task_type="creative")
    overall, by_task = book.snapshot(T0 + 10)
    code = by_task["code_generation"]["local_mlx"]
    assert code.success_rate == pytest.approx(0.4, abs=0.03)
    assert by_task["creative"]["local_mlx"].success_rate == 1.0
    assert overall["local_mlx"].calls == pytest.approx(20, rel=0.1)
    assert code.cost_per_call_usd == pytest.approx(0.001)
    assert 100 <= code.latency_p50_ms <= 125


def test_outcomes_decay_by_time_with_the_half_life():
    book = PerformanceBook(half_life_s=10)
    for _ in range(8):
        book.attempt(attempt(ok=False), at=T0, task_type="reasoning")
    (_, now), (_, later) = (
        book.snapshot(T0)[1]["reasoning"].popitem(),
        book.snapshot(T0 + 10)[1]["reasoning"].popitem(),
    )
    assert now.failures == pytest.approx(8)
    assert later.failures == pytest.approx(4)


def test_the_order_outcomes_arrive_in_does_not_change_the_statistics():
    """Two routers reading the two streams interleaved differently hold the same numbers."""
    outcomes = [(attempt(ok=i % 3 != 0, latency_ms=50 * (i + 1)), T0 + i * 0.7) for i in range(30)]
    in_order, shuffled = PerformanceBook(half_life_s=5), PerformanceBook(half_life_s=5)
    for a, t in outcomes:
        in_order.attempt(a, at=t, task_type="analysis")
    for a, t in outcomes[1::2] + outcomes[::2]:
        shuffled.attempt(a, at=t, task_type="analysis")
    x = in_order.snapshot(T0 + 30)[1]["analysis"]["local_mlx"]
    y = shuffled.snapshot(T0 + 30)[1]["analysis"]["local_mlx"]
    assert x.calls == pytest.approx(y.calls) and x.failures == pytest.approx(y.failures)
    assert x.latency_p95_ms == y.latency_p95_ms


def test_a_failed_attempt_counts_for_its_task_type_and_quality_failures_count():
    book = PerformanceBook()
    book.attempt(attempt(ok=False, code="quality_json"), at=T0, job_id="job-1", task_type="code_generation")
    stats = book.snapshot(T0)[1]["code_generation"]["local_mlx"]
    assert stats.failures == pytest.approx(1) and stats.quality_failures == pytest.approx(1)


def test_feedback_is_joined_to_the_model_that_answered():
    book = PerformanceBook()
    book.attempt(attempt(model="claude"), at=T0, job_id="job-2", task_type="creative")
    assert book.feedback("job-2", 0.2, at=T0 + 1)
    assert not book.feedback("unknown-job", 1.0, at=T0 + 1)
    assert book.snapshot(T0 + 1)[1]["creative"]["claude"].feedback_mean == pytest.approx(0.2)


# -- the policy ----------------------------------------------------------------------------

CODE_JOB = Job(prompt="Write a function that parses a date", task_type=TaskType.CODE_GENERATION, complexity=5)


def route(state: LiveState, job: Job = CODE_JOB, job_id: str = "job-a"):
    return IntelligentModelRouter().route(job, state=state, job_id=job_id)


def state_with(model: str, stats: ModelStats, task: str = "code_generation") -> LiveState:
    return LiveState(task_stats={task: {model: stats}}, probe_share=0.0)


def test_a_failing_model_is_demoted_for_that_task_type_and_the_reasoning_says_why():
    healthy = route(LiveState())
    assert healthy.model.id == "local_mlx"
    d = route(state_with("local_mlx", ModelStats(calls=20, failures=12, latency_p95_ms=9100)))
    assert d.model.id != "local_mlx"
    assert "local_mlx demoted for code_generation: success 40% over the last 20, p95 9.1 s" in d.reasoning


def test_demotion_is_per_task_type():
    state = state_with("local_mlx", ModelStats(calls=20, failures=12), task="creative")
    assert route(state).model.id == "local_mlx"


def test_a_model_far_slower_than_its_estimate_is_demoted():
    d = route(state_with("local_mlx", ModelStats(calls=20, failures=0, latency_p50_ms=8000, latency_p95_ms=9000)))
    assert d.model.id != "local_mlx"
    assert "local_mlx demoted for code_generation: success 100%" in d.reasoning and "expected ~" in d.reasoning


def test_too_few_recent_calls_do_not_demote():
    assert route(state_with("local_mlx", ModelStats(calls=4, failures=4))).model.id == "local_mlx"


def test_a_recovered_model_is_promoted_back_and_the_reasoning_says_so():
    d = route(state_with("local_mlx", ModelStats(calls=30, failures=6, latency_p95_ms=200)))
    assert d.model.id == "local_mlx"
    assert "local_mlx promoted back for code_generation: success 80% over the last 30" in d.reasoning


def test_a_demoted_model_keeps_its_place_for_a_stable_share_of_jobs_to_be_probed():
    poor = ModelStats(calls=20, failures=15)
    state = LiveState(task_stats={"code_generation": {"local_mlx": poor}}, probe_share=0.25)
    chosen = [route(state, job_id=f"job-{i}").model.id for i in range(200)]
    probed = chosen.count("local_mlx")
    assert 20 <= probed <= 80  # about a quarter
    assert [route(state, job_id=f"job-{i}").model.id for i in range(200)] == chosen  # the same every time


# -- feedback ------------------------------------------------------------------------------


def test_a_score_read_before_its_result_is_credited_when_the_result_arrives():
    """The FEEDBACK and RESULTS replays are two consumers: their order is not known."""
    early, late = PerformanceBook(), PerformanceBook()
    assert not early.feedback("job-3", 1.5, at=T0 + 2)
    early.attempt(attempt(model="claude"), at=T0, job_id="job-3", task_type="creative")
    late.attempt(attempt(model="claude"), at=T0, job_id="job-3", task_type="creative")
    assert late.feedback("job-3", 1.5, at=T0 + 2)
    x, y = (b.snapshot(T0 + 2)[1]["creative"]["claude"] for b in (early, late))
    assert x.feedback_mean == y.feedback_mean == pytest.approx(1.5)
    assert x.feedback_count == pytest.approx(y.feedback_count)


def test_feedback_decays_and_goes_only_to_the_answering_model_and_task_type():
    book = PerformanceBook(half_life_s=10)
    book.attempt(attempt(model="local_mlx", ok=False), at=T0, job_id="job-4", task_type="creative")
    book.attempt(attempt(model="claude"), at=T0, job_id="job-4", task_type="creative")
    book.feedback("job-4", 2.0, at=T0)
    _, by_task = book.snapshot(T0 + 10)
    assert by_task["creative"]["claude"].feedback_count == pytest.approx(0.5)
    assert by_task["creative"]["local_mlx"].feedback_mean is None


def with_feedback(mean: float, count: float, *, task: str = "code_generation") -> LiveState:
    return state_with("local_mlx", ModelStats(calls=count, feedback_mean=mean, feedback_count=count), task=task)


def test_a_model_users_score_poorly_for_a_task_type_is_demoted_and_the_reasoning_says_so():
    d = route(with_feedback(1.8, 7))
    assert d.model.id != "local_mlx"
    assert "local_mlx demoted for code_generation: feedback 1.8/5 over 7" in d.reasoning


@pytest.mark.parametrize(
    ("mean", "count", "task"),
    [(1.8, 4, "code_generation"), (2.6, 20, "code_generation"), (1.0, 20, "creative")],
    ids=["too-few-scores", "mean-not-poor", "other-task-type"],
)
def test_feedback_that_is_thin_fair_or_for_another_task_type_does_not_demote(mean, count, task):
    d = route(with_feedback(mean, count, task=task))
    assert d.model.id == "local_mlx" and "feedback" not in d.reasoning


def test_poorly_scored_model_keeps_its_place_for_probe_share_of_jobs():
    stats = ModelStats(calls=8, feedback_mean=1.2, feedback_count=8)
    state = LiveState(task_stats={"code_generation": {"local_mlx": stats}}, probe_share=0.25)
    probed = [route(state, job_id=f"job-{i}") for i in range(100)]
    kept = [d for d in probed if d.model.id == "local_mlx"]
    assert 5 <= len(kept) <= 50
    assert all("feedback 1.2/5 over 8; kept in place to probe it" in d.reasoning for d in kept)


def test_the_replay_config_drops_its_start_time_when_an_ordered_consumer_resets():
    from datetime import UTC, datetime

    from nats.js.api import DeliverPolicy

    from fleet_router.feed import ReplayConfig

    config = ReplayConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=datetime.now(tz=UTC))
    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE  # what nats-py does on a reset
    config.opt_start_seq = 42
    sent = config.as_dict()
    assert "opt_start_time" not in sent
    assert sent["deliver_policy"] == "by_start_sequence" and sent["opt_start_seq"] == 42


def test_decayed_sums_match_a_direct_sum_in_any_order_and_across_rescaling():
    """Weights kept against a reference time (one addition per outcome) give the direct
    sum of 2 ** -(age / half-life), whatever the order, and after the sums were rescaled."""
    from fleet_router.adaptive import RESCALE_HALF_LIVES, Decayed

    times = [0.0, 3.0, 1.0, RESCALE_HALF_LIVES + 10.0, 2.0, RESCALE_HALF_LIVES + 11.5]
    sums = Decayed()
    for t in times:
        sums.add(Attempt(model="m", provider="p", success=t != 2.0, latency_ms=50.0), t, 1.0)
    now = RESCALE_HALF_LIVES + 12.0
    stats = sums.stats(now, 1.0)
    assert stats.calls == pytest.approx(sum(2 ** -(now - t) for t in times))
    assert stats.failures == pytest.approx(2 ** -(now - 2.0))
    assert stats.latency_p50_ms == stats.latency_p95_ms > 0
    assert Decayed().stats(now, 1.0).calls == 0
