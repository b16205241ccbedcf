"""Models that performed badly lately move to the end of a rule's candidates (pure code).

A model is *degraded* for a task type when its recent statistics (``fleet_router.adaptive``:
decayed, the same on every router) show a success rate under ``poor_success_rate``, or a
p95 latency past both ``slow_floor_ms`` and ``slow_factor`` times its registry estimate, or
users' feedback scores under the floor (judged per task type only: a model poor at poems
may code well). Without outcomes for the task type yet, its outcomes over every type judge
it. A degraded model keeps its place for ``probe_share`` of jobs (a stable hash of the job),
so its recovery is seen and it is promoted back; every move is said in the reasoning.
"""

from __future__ import annotations

from fleet_router.snapshot import EXPECTED_OUTPUT_TOKENS, LiveState, ModelStats, admitted, figures, poor_feedback
from fleet_shared.registry import Registry
from fleet_shared.schema import TaskType


def by_recent_performance(
    models: list[str], state: LiveState, skipped: list[str], task_type: TaskType, job_key: str, registry: Registry
) -> list[str]:
    """``models`` in order, those degraded lately for ``task_type`` moved to the end (stable);
    what moved, or was kept in place to probe it, or came back, is appended to ``skipped``."""
    poor = []
    # a TaskType is a str: it is its own key (``.value`` is an enum descriptor call per use)
    by_task = state.task_stats.get(task_type, {})
    for m in models:
        s, overall = by_task.get(m), False
        verdict = poor_feedback(s, state) if s is not None else None
        if verdict is None:
            if s is None:  # no outcome for this task type yet: its outcomes over every type
                s, overall = state.stats.get(m), True
            if s is None or s.calls < state.min_calls_for_stats:
                continue
            verdict = degraded(m, s, state, registry)
            if verdict is None:
                if s.failures >= state.min_calls_for_stats * (1 - state.poor_success_rate):
                    skipped.append(f"{m} promoted back for {_scope(task_type, overall)}: {figures(s)}")
                continue
        scope = _scope(task_type, overall)
        if admitted(job_key, f"probe:{m}", state.probe_share):
            skipped.append(f"{m} demoted for {scope}: {verdict}; kept in place to probe it")
            continue
        poor.append(m)
        skipped.append(f"{m} demoted for {scope}: {verdict}")
    return [m for m in models if m not in poor] + poor


def degraded(model_id: str, s: ModelStats, state: LiveState, registry: Registry) -> str | None:
    """Why ``s`` is too poor to keep ``model_id`` in its place (None: it is fine)."""
    if s.success_rate < state.poor_success_rate:
        return figures(s)
    spec = registry.models.get(model_id)
    if spec is None or s.latency_p95_ms <= state.slow_floor_ms:  # the common case: no estimate needed
        return None
    expected = spec.estimate_latency_ms(EXPECTED_OUTPUT_TOKENS)
    if s.latency_p95_ms > max(state.slow_floor_ms, state.slow_factor * expected):
        return f"{figures(s)} (expected ~{expected / 1000:.1f} s)"
    return None


def _scope(task_type: TaskType, overall: bool) -> str:
    """What the statistics judged were of: the task type's, or every type's."""
    return f"{task_type.value} (all task types)" if overall else task_type.value
