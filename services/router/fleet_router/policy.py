"""The routing policy: pure code, no I/O.

``IntelligentModelRouter.route`` takes a job (already validated), the model registry and a
snapshot of live state, and returns a ``RouteDecision`` whose ``reasoning`` says why. The
seed's decision tree, in order:

1. forced model (``context.force_model``), unless already tried or unavailable;
2. after ``local_failures_before_commercial`` (2) failed local attempts -> commercial models;
3. complexity <= ``simple_max_complexity`` (3) -> local models;
4. complexity >= ``complex_min_complexity`` (7) -> ``complex_models`` (Claude, then Gemini);
5. otherwise the task type's preference list.

A job that does not give its task type or complexity gets them inferred from its text
(``fleet_router.inference``; off with ``[routing] infer_missing = false``, then the
configured defaults apply). A given value is never overridden; the decision's reasoning
starts with what was inferred and from which signals, and ``RouteDecision.resolved`` says
where each value came from.

A rule's candidates are tried in order, skipping models already tried for this job (a retry
always uses a different model), known unavailable, too small for the prompt, over the
remaining budget, or (moved last: ``fleet_router.demotion``) performing badly lately. When
a rule has no usable candidate, every other usable model is the fallback, so escalation
goes on until one succeeds or none is left.

When none is left only because the models are cooling down at their provider's request
(a 429 with retry-after, an overload), the decision is ``wait``: the job stays queued
until the first of them is back (at most ``max_queue_wait_s``), instead of failing while
a rate-limit storm passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from fleet_router.demotion import by_recent_performance
from fleet_router.inference import Inference, infer
from fleet_router.rules import NO_PLAN, RulePlan, plan_for, with_plan
from fleet_router.snapshot import EXPECTED_OUTPUT_TOKENS, LiveState, ModelStats, RouteDecision, admitted, budgets_left
from fleet_shared.registry import Registry, load_registry
from fleet_shared.rules import EMPTY, RuleSet
from fleet_shared.schema import Attempt, Job, TaskType
from fleet_shared.tokens import BYTES_PER_TOKEN, estimate_input_tokens  # noqa: F401 (re-exported)

__all__ = [
    "EXPECTED_OUTPUT_TOKENS",
    "FAIL_FAST_ERRORS",
    "IntelligentModelRouter",
    "LiveState",
    "ModelStats",
    "RouteDecision",
    "admitted",
    "budgets_left",
]

#: Attempt error classes after which no other model is tried: the request itself is wrong.
FAIL_FAST_ERRORS = frozenset({"invalid_request"})


class IntelligentModelRouter:
    """Chooses a model for a job. Pure: the same inputs always give the same decision."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or load_registry()
        self.rules = self.registry.rules
        #: the operator's custom rules and experiments, swapped whole on a hot reload
        self.custom: RuleSet = EMPTY
        #: the tree's (rule, why, candidates) by (task type, complexity) while no local attempt
        #: failed: the registry and its rules never change under a policy, so each is made once
        self._tree: dict[tuple[TaskType, int], tuple[str, str, tuple[str, ...]]] = {}

    def set_custom_rules(self, rules: RuleSet) -> None:
        """Route with ``rules`` from the next decision on (one reference swap: no lock needed)."""
        self.custom = rules

    def infer(self, job: Job) -> Inference:
        """The job's task type and complexity: given values kept, missing ones inferred (or
        the configured defaults when inference is off), each with its source."""
        rules = self.rules
        return infer(
            job,
            default_task_type=rules.default_task_type,
            default_complexity=rules.default_complexity,
            enabled=rules.infer_missing,
        )

    def resolve(self, job: Job) -> tuple[TaskType, int]:
        """The job's task type and complexity, inferred or defaulted where not given."""
        resolved = self.infer(job)
        return resolved.task_type, resolved.complexity

    def route(
        self,
        job: Job,
        *,
        attempts: Sequence[Attempt] = (),
        state: LiveState | None = None,
        job_id: str | None = None,
        now: float | None = None,
        resolved: Inference | None = None,
    ) -> RouteDecision:
        """Pick the next model for ``job`` given the attempts made so far.

        ``job_id`` keys the admission of ramping models (default: the job's own id or text).
        Models still ramping up after a cooldown that do not admit this job are used only
        when nothing else is left. ``now`` (unix time) turns the cooldowns in
        ``state.cooling_until`` into a ``wait`` decision when only those models are left.
        ``resolved``: the task type and complexity an earlier attempt was routed with
        (``inference.carried``), used instead of inferring them again.
        """
        state = state or LiveState()
        resolved = resolved or self.infer(job)
        plan = self._plan(job, resolved, job_id)
        decision = with_plan(self._decision(job, resolved, attempts, state, job_id, now, plan), plan)
        if resolved.task_type_source == "given" and resolved.complexity_source == "given":
            return decision
        note = resolved.explain()
        reasoning = f"{note}; {decision.reasoning}" if note else decision.reasoning
        return msgspec.structs.replace(decision, resolved=resolved, reasoning=reasoning)

    def _decision(
        self,
        job: Job,
        resolved: Inference,
        attempts: Sequence[Attempt],
        state: LiveState,
        job_id: str | None,
        now: float | None,
        plan: RulePlan = NO_PLAN,
    ) -> RouteDecision:
        last = attempts[-1].error if attempts else None
        if last is not None and last.code in FAIL_FAST_ERRORS:
            return RouteDecision(
                model=None,
                rule="fail_fast",
                error_code=last.code,
                reasoning=f"{attempts[-1].model} answered {last.code}: the request itself is wrong, "
                f"so no other model is tried ({last.message})",
            )
        job_key = job_id or job.id or job.objective()[:200]
        decision = self._route(job, resolved, attempts, state, job_key, ramp_gate=True, plan=plan)
        if decision.model is None and decision.error_code == "no_model_available" and state.ramp:
            decision = self._route(job, resolved, attempts, state, "", ramp_gate=False, plan=plan)
        if decision.model is None and decision.error_code == "no_model_available" and state.cooling_until and now:
            decision = self._wait_for_cooldown(job, resolved, attempts, state, now, plan) or decision
        return decision

    def _wait_for_cooldown(
        self,
        job: Job,
        resolved: Inference,
        attempts: Sequence[Attempt],
        state: LiveState,
        now: float,
        plan: RulePlan = NO_PLAN,
    ) -> RouteDecision | None:
        """A ``wait`` decision when a model cooling down at its provider's request would take
        the job, and is back within ``max_queue_wait_s``; else None."""
        cooling = state.cooling_until
        relaxed = msgspec.structs.replace(state, unavailable=state.unavailable - cooling.keys(), cooling_until={})
        next_up = self._route(job, resolved, attempts, relaxed, "", ramp_gate=False, plan=plan)
        if next_up.model is None or next_up.model.id not in cooling:
            return None
        wait_s = max(0.0, cooling[next_up.model.id] - now)
        if wait_s > self.rules.max_queue_wait_s:
            return None
        return RouteDecision(
            model=None,
            rule="wait",
            wait_s=wait_s,
            reasoning=f"every model left is cooling down at its provider's request; {next_up.model.id} "
            f"is back in {wait_s:.1f}s: the job waits in the queue ({next_up.reasoning})",
        )

    def _route(
        self,
        job: Job,
        resolved: Inference,
        attempts: Sequence[Attempt],
        state: LiveState,
        job_key: str,
        *,
        ramp_gate: bool,
        plan: RulePlan = NO_PLAN,
    ) -> RouteDecision:
        task_type, complexity = resolved.task_type, resolved.complexity
        input_tokens = estimate_input_tokens(job)
        max_tokens = job.max_tokens or self.rules.default_max_tokens
        tried = {a.model for a in attempts}
        min_window = self._min_context_window(attempts, state)
        skipped: list[str] = []
        over_budget: list[str] = []

        def usable(model_id: str) -> bool:
            why = self._skip_reason(model_id, tried, state, input_tokens, max_tokens)
            if why is None:
                why = self._over_budget(model_id, job, state, input_tokens, max_tokens)
                if why is not None:
                    over_budget.append(model_id)
            why = why or self._filtered(plan, model_id, state, input_tokens, max_tokens)
            window = self._window(model_id, state)
            if why is None and min_window and window <= min_window:
                why = f"{model_id} context window {window} <= {min_window} that overflowed"
            fraction = state.ramp.get(model_id)
            if why is None and ramp_gate and fraction is not None and not admitted(job_key, model_id, fraction):
                why = f"{model_id} ramping up after a cooldown (admitting {fraction:.0%})"
            if why is None and job.tools and not self.registry.models[model_id].supports_tools:
                why = f"{model_id} does not support tools"
            if why and why not in skipped:
                skipped.append(why)
            return why is None

        pinned = self._pinned(job, attempts, usable, skipped, input_tokens, max_tokens)
        if pinned is not None:
            return pinned
        custom = self._custom_route(plan, usable, skipped, input_tokens, max_tokens)
        if custom is not None:
            return custom

        rule, why, candidates = self._rule(task_type, complexity, attempts)
        ordered = by_recent_performance(
            [m for m in candidates if usable(m)], state, skipped, task_type, job_key, self.registry
        )
        if ordered:
            return self._decide(ordered[0], rule, self._explain(why, skipped), input_tokens, max_tokens)

        rest = [m for m in self._fallback_order(task_type) if m not in candidates and usable(m)]
        rest = by_recent_performance(rest, state, skipped, task_type, job_key, self.registry)
        if rest:
            why = f"{why}, but none of {', '.join(candidates) or 'its models'} is usable; falling back"
            return self._decide(rest[0], "fallback", self._explain(why, skipped), input_tokens, max_tokens)

        return self._none_left(skipped, over_budget=bool(over_budget))

    def _pinned(
        self,
        job: Job,
        attempts: Sequence[Attempt],
        usable: Callable[[str], bool],
        skipped: list[str],
        input_tokens: int,
        max_tokens: int,
    ) -> RouteDecision | None:
        """The forced model, or the registry fallbacks of a model that failed; None: the rules decide."""
        forced = job.force_model
        if forced is not None:
            if forced not in self.registry.models:
                return RouteDecision(
                    model=None,
                    rule="forced",
                    error_code="unknown_model",
                    reasoning=f"context.force_model names unknown model {forced!r}; "
                    f"known: {', '.join(self.registry.models)}",
                )
            if usable(forced):
                return self._decide(forced, "forced", "forced by context.force_model", input_tokens, max_tokens)
            if job.no_fallback:
                why = f"forced model {forced} is not usable and the job forbids a fallback"
                return RouteDecision(
                    model=None, rule="forced", error_code="no_model_available", reasoning=self._explain(why, skipped)
                )
        named = [m for a in attempts for m in self._registry_fallbacks(a.model) if usable(m)]
        if named:
            why = f"{attempts[-1].model} failed; its registry fallbacks come first"
            return self._decide(named[0], "fallback", self._explain(why, skipped), input_tokens, max_tokens)
        return None

    def _none_left(self, skipped: list[str], *, over_budget: bool) -> RouteDecision:
        if over_budget:
            why = "no model left within budget, and no free local model can take the job"
            return RouteDecision(
                model=None,
                rule="budget_exhausted",
                error_code="budget_exhausted",
                reasoning=self._explain(why, skipped),
            )
        return RouteDecision(
            model=None,
            rule="exhausted",
            error_code="no_model_available",
            reasoning=self._explain("no untried, available model is left", skipped),
        )

    # -- the decision tree ----------------------------------------------------------

    def _rule(
        self, task_type: TaskType, complexity: int, attempts: Sequence[Attempt]
    ) -> tuple[str, str, Sequence[str]]:
        local_failures = sum(1 for a in attempts if not a.success and self._is_local(a.model)) if attempts else 0
        if local_failures < self.rules.local_failures_before_commercial:
            known = self._tree.get((task_type, complexity))
            if known is None:
                rule, why, candidates = self._tree_rule(task_type, complexity, local_failures)
                known = self._tree[(task_type, complexity)] = (rule, why, tuple(candidates))
            return known
        return self._tree_rule(task_type, complexity, local_failures)

    def _tree_rule(self, task_type: TaskType, complexity: int, local_failures: int) -> tuple[str, str, list[str]]:
        rules = self.rules
        prefs = rules.preferences.get(task_type, [])
        if local_failures >= rules.local_failures_before_commercial:
            commercial = [m for m in [*prefs, *rules.complex_models, *self.registry.models] if not self._is_local(m)]
            return (
                "escalate_commercial",
                f"{local_failures} local attempts failed (>= {rules.local_failures_before_commercial}) -> commercial API",
                _unique(commercial),
            )
        if complexity <= rules.simple_max_complexity:
            local = [m for m in [*prefs, *self.registry.models] if self._is_local(m)]
            return (
                "simple_local",
                f"complexity {complexity} <= {rules.simple_max_complexity} -> free local model",
                _unique(local),
            )
        if complexity >= rules.complex_min_complexity:
            return (
                "complex",
                f"complexity {complexity} >= {rules.complex_min_complexity} -> {' / '.join(rules.complex_models)} for reasoning",
                list(rules.complex_models),
            )
        return (
            "task_preference",
            f"{task_type.value} prefers {' -> '.join(prefs) or 'nothing'} (complexity {complexity})",
            list(prefs),
        )

    def _window(self, model_id: str, state: LiveState) -> int:
        """The context window ``model_id`` is served with: the provider's report, else the registry's."""
        return state.context_windows.get(model_id) or self.registry.models[model_id].context_window

    def _min_context_window(self, attempts: Sequence[Attempt], state: LiveState) -> int:
        """The largest context window a prompt of this job already overflowed (0: none)."""
        windows = [
            self._window(a.model, state)
            for a in attempts
            if a.error is not None and a.error.code == "context_length" and a.model in self.registry.models
        ]
        return max(windows, default=0)

    def _registry_fallbacks(self, model_id: str) -> list[str]:
        spec = self.registry.models.get(model_id)
        return list(spec.fallbacks) if spec else []

    def _fallback_order(self, task_type: TaskType) -> list[str]:
        prefs = self.rules.preferences.get(task_type, [])
        return _unique([*prefs, *self.rules.complex_models, *self.registry.models])

    # -- filters and ordering -------------------------------------------------------

    def _skip_reason(
        self, model_id: str, tried: set[str], state: LiveState, input_tokens: int, max_tokens: int
    ) -> str | None:
        spec = self.registry.models[model_id]
        if model_id in tried:
            return f"{model_id} already tried"
        if model_id in state.unavailable:
            return f"{model_id} unavailable"
        window = self._window(model_id, state)
        if input_tokens > window:
            served = "" if window == spec.context_window else " as loaded"
            return f"{model_id} context window {window}{served} < ~{input_tokens} prompt tokens"
        return None

    def _over_budget(self, model_id: str, job: Job, state: LiveState, input_tokens: int, max_tokens: int) -> str | None:
        """Why a paid model's estimate does not fit a budget it draws from (None: it fits)."""
        spec = self.registry.models[model_id]
        if spec.is_local:
            return None
        left = budgets_left(state, model=model_id, provider=spec.provider, metadata=job.metadata)
        if left is None:
            return None
        budget, scope = left
        cost = spec.cost_usd(input_tokens, max_tokens)
        if cost > budget:
            return f"{model_id} est. ${cost:.4f} > budget left ${budget:.4f} ({scope})"
        return None

    def _is_local(self, model_id: str) -> bool:
        spec = self.registry.models.get(model_id)
        return spec is not None and spec.is_local

    # -- custom rules (fleet_router.rules documents the order) ---------------------

    def _plan(self, job: Job, resolved: Inference, job_id: str | None) -> RulePlan:
        if self.custom.empty:
            return NO_PLAN
        return plan_for(
            self.custom,
            job,
            task_type=resolved.task_type,
            complexity=resolved.complexity,
            input_tokens=estimate_input_tokens(job),
            job_key=job_id or job.id or job.objective()[:200],
        )

    def _filtered(
        self, plan: RulePlan, model_id: str, state: LiveState, input_tokens: int, max_tokens: int
    ) -> str | None:
        if plan is NO_PLAN:
            return None
        cost = self.registry.models[model_id].cost_usd(input_tokens, max_tokens)
        return plan.filter_reason(model_id, cost, self._window(model_id, state))

    def _custom_route(
        self, plan: RulePlan, usable: Callable[[str], bool], skipped: list[str], input_tokens: int, max_tokens: int
    ) -> RouteDecision | None:
        """The first usable model of the routing rule's force / prefer list; None: the tree decides."""
        if not plan.routes:
            return None
        wanted = plan.candidates()
        chosen = next((m for m in wanted if m in self.registry.models and usable(m)), None)
        verb = "forces" if plan.force else "prefers"
        if chosen is None:
            skipped.append(f"rule {plan.routed_by!r} {verb} {', '.join(wanted)}: none usable")
            return None
        why = f"custom rule {plan.routed_by!r} {verb} {' -> '.join(wanted)}"
        return self._decide(chosen, f"custom:{plan.routed_by}", self._explain(why, skipped), input_tokens, max_tokens)

    # -- the decision ---------------------------------------------------------------

    def _decide(self, model_id: str, rule: str, why: str, input_tokens: int, max_tokens: int) -> RouteDecision:
        spec = self.registry.models[model_id]
        cost = spec.cost_usd(input_tokens, max_tokens)
        latency = spec.estimate_latency_ms(min(max_tokens, EXPECTED_OUTPUT_TOKENS))
        return RouteDecision(
            model=spec,
            rule=rule,
            reasoning=f"{why}: chose {model_id} ({spec.provider}/{spec.provider_model}, est. ${cost:.6f})",
            estimated_cost_usd=cost,
            estimated_latency_ms=latency,
        )

    @staticmethod
    def _explain(why: str, skipped: list[str]) -> str:
        return f"{why} [{'; '.join(skipped)}]" if skipped else why


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
