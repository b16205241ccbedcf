"""What the routing policy reads and returns: the snapshot of live state (``LiveState`` with
``ModelStats``), the decision (``RouteDecision``), and the pure helpers that read a snapshot.
Pure data and functions, no I/O; ``fleet_router.policy`` re-exports the types."""

from __future__ import annotations

import zlib
from typing import Any

from msgspec import Struct, field

from fleet_router.inference import Inference
from fleet_shared.budget import KEY_FIELD, TEAM_FIELD
from fleet_shared.registry import ModelSpec
from fleet_shared.schema import LabelSource

#: Output tokens assumed for latency estimates when max_tokens is larger.
EXPECTED_OUTPUT_TOKENS = 256


def admitted(job_key: str, model_id: str, fraction: float) -> bool:
    """Whether a ramping model takes this job: a stable hash of (job, model) below ``fraction``,
    so the same job always gets the same answer and the admitted share grows with ``fraction``."""
    if fraction >= 1.0:
        return True
    bucket = zlib.crc32(f"{job_key}/{model_id}".encode()) % 10_000
    return bucket < fraction * 10_000


class ModelStats(Struct, frozen=True):
    """Recent outcomes of one model (for one task type, or over all): decayed counts, the
    same on every router (``fleet_router.adaptive``)."""

    calls: float = 0
    failures: float = 0
    #: failures of a quality validator (``quality_*`` error codes), among ``failures``
    quality_failures: float = 0
    cost_per_call_usd: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    #: mean feedback score of the answers it gave (None: no feedback)
    feedback_mean: float | None = None
    feedback_count: float = 0

    @property
    def success_rate(self) -> float:
        return 1.0 if self.calls == 0 else 1.0 - self.failures / self.calls


class LiveState(Struct, frozen=True, kw_only=True):
    """What the router knows of the world right now (built by the service, read here)."""

    unavailable: frozenset[str] = frozenset()
    budget_remaining_usd: float | None = None
    stats: dict[str, ModelStats] = field(default_factory=dict)
    #: Below this recent success rate (over at least ``min_calls_for_stats``) a model is tried last.
    poor_success_rate: float = 0.5
    min_calls_for_stats: int = 10
    #: Models back from a cooldown: the share of jobs (0..1) each may take while it ramps up.
    ramp: dict[str, float] = field(default_factory=dict)
    #: Models (also in ``unavailable``) cooling down because their provider asked: unix
    #: time each is back. A job with only these left waits for them.
    cooling_until: dict[str, float] = field(default_factory=dict)
    #: The context window (tokens) a provider reports serving a model with (LM Studio: the
    #: loaded context length), used instead of the registry's ``context_window``.
    context_windows: dict[str, int] = field(default_factory=dict)
    #: Fleet-wide budgets left (USD) by scope: ``fleet``, ``model:<id>``, ``provider:<name>``,
    #: ``key:<name>``, ``team:<name>`` (the least over the day and the month). A scope absent
    #: here has no limit. ``budget_remaining_usd``, when set, is one more limit on ``fleet``.
    budget_left: dict[str, float] = field(default_factory=dict)
    #: Recent outcomes by task type (``TaskType.value``) then model: a model degraded for a
    #: task type is demoted for it (tried after the others); ``stats`` holds model-wide ones.
    task_stats: dict[str, dict[str, ModelStats]] = field(default_factory=dict)
    #: A model whose recent p95 latency is above this multiple of its estimate, and above
    #: ``slow_floor_ms``, is demoted like one failing often.
    slow_factor: float = 3.0
    slow_floor_ms: float = 1000.0
    #: Share of jobs (stable hash of the job) for which a demoted model keeps its place: the
    #: fleet keeps observing it, so it is promoted back once it recovers.
    probe_share: float = 0.1
    #: A model whose decayed mean feedback score (1..5) for a task type is below this, over at
    #: least ``min_feedback_for_stats`` decayed scores, is demoted for that task type.
    poor_feedback_mean: float = 2.5
    min_feedback_for_stats: float = 5.0


class RouteDecision(Struct, frozen=True, kw_only=True):
    """The chosen model (None when nothing is left) and why."""

    model: ModelSpec | None
    rule: str
    reasoning: str
    estimated_cost_usd: float = 0.0
    estimated_latency_ms: float = 0.0
    error_code: str | None = None
    #: rule "wait": seconds the job should stay queued before it is routed again
    wait_s: float = 0.0
    #: the task type and complexity routed on, and where each came from; set when the job
    #: did not give both (None: both given, see ``IntelligentModelRouter.infer``)
    resolved: Inference | None = None
    #: the custom rules (``fleet_router.rules``) that matched the job, in the order applied
    custom_rules: tuple[str, ...] = ()
    #: the experiment the job is in and its variant (None: none)
    experiment: str | None = None
    variant: str | None = None
    #: the model a shadow copy of this job goes to (its answer recorded, never returned)
    shadow: str | None = None

    @property
    def task_type_source(self) -> LabelSource:
        return self.resolved.task_type_source if self.resolved else "given"

    @property
    def complexity_source(self) -> LabelSource:
        return self.resolved.complexity_source if self.resolved else "given"


def budgets_left(
    state: LiveState, *, model: str, provider: str, metadata: dict[str, Any] | None
) -> tuple[float, str] | None:
    """The least budget left (USD, scope) among those a paid call of ``model`` draws from;
    None when none of them has a limit."""
    if not state.budget_left and state.budget_remaining_usd is None:
        return None  # no budget at all (the common case): nothing to look up
    scopes = ["fleet", f"model:{model}", f"provider:{provider}"]
    for kind, field_name in (("key", KEY_FIELD), ("team", TEAM_FIELD)):
        name = (metadata or {}).get(field_name)
        if isinstance(name, str) and name:
            scopes.append(f"{kind}:{name}")
    least = None if state.budget_remaining_usd is None else (state.budget_remaining_usd, "fleet")
    for scope in scopes:
        value = state.budget_left.get(scope)
        if value is not None and (least is None or value < least[0]):
            least = (value, scope)
    return least


def poor_feedback(s: ModelStats, state: LiveState) -> str | None:
    """ "feedback 1.8/5 over 7" when the users' decayed mean score is poor (None: it is not, or
    there are too few scores to say)."""
    mean = s.feedback_mean
    if mean is None or s.feedback_count < state.min_feedback_for_stats or mean >= state.poor_feedback_mean:
        return None
    return f"feedback {mean:.1f}/5 over {s.feedback_count:.0f}"


def figures(s: ModelStats) -> str:
    """A model's recent figures for the reasoning: "success 40% over the last 12, p95 9.1 s"."""
    said = f"success {s.success_rate:.0%} over the last {s.calls:.0f}"
    if s.latency_p95_ms:
        said += f", p95 {s.latency_p95_ms / 1000:.1f} s"
    if s.quality_failures >= 1:
        said += f", {s.quality_failures:.0f} failed quality checks"
    return said
