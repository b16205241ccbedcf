"""Custom rules and experiments applied to one job: pure code, no I/O.

``plan_for`` reads a ``RuleSet`` (``fleet_shared.rules``) and a job and returns the
``RulePlan`` the policy follows. The order, relative to the seed's tree
(``fleet_router.policy``):

1. **Filters** (``forbid``, ``max_cost_usd``, ``min_context_window``) of every matching rule,
   and of the job's experiment variant, apply to every candidate at every step: the job's
   ``context.force_model``, the registry fallbacks, the preferences, the tree and the
   fallback. A model they remove is named in the reasoning with the rule that removed it.
2. The job's ``context.force_model`` (the caller's explicit choice) and the registry
   fallbacks of a model that failed come first, as in the seed's tree.
3. **Routing** (``force``, then ``prefer``): the experiment's variant when it has one,
   else the first matching rule in file order that has one. Its models are tried before the
   seed's tree; when none of them is usable, the tree decides (then the fallback).
4. The seed's tree, then every other usable model.

Experiments: the first experiment whose match holds assigns the job a variant by a stable
hash of the job id (``variant_for``), with the variants' weights; the variant's action is
applied as above and recorded in the decision. A shadow copy of a job is never itself in
an experiment (its metadata carries ``shadow_of``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from msgspec import Struct

from fleet_router.snapshot import RouteDecision
from fleet_shared.rules import REGEX_SCAN_CHARS, Action, Experiment, Match, RuleSet, Variant, compiled
from fleet_shared.schema import METADATA_KEY_NAME, METADATA_TEAM, Job, TaskType

#: Job metadata field naming the job a shadow copy was made from.
SHADOW_OF = "shadow_of"
#: Job metadata field of a shadow copy naming its experiment.
SHADOW_EXPERIMENT = "experiment"


class RulePlan(Struct, frozen=True, kw_only=True):
    """What the custom rules say about one job."""

    #: names of every rule (and ``experiment/variant``) that matched, in the order applied
    applied: tuple[str, ...] = ()
    #: the rule (or ``experiment/variant``) whose force / prefer routes the job
    routed_by: str | None = None
    force: str | None = None
    prefer: tuple[str, ...] = ()
    #: model -> the rule that forbids it
    forbidden: dict[str, str] = {}
    #: (USD, rule) of the lowest cost cap, and (tokens, rule) of the largest context required
    max_cost: tuple[float, str] | None = None
    min_context: tuple[int, str] | None = None
    experiment: str | None = None
    variant: str | None = None
    #: the model a copy of this job is also sent to (its answer recorded, never returned)
    shadow: str | None = None

    @property
    def routes(self) -> bool:
        return self.routed_by is not None

    def candidates(self) -> list[str]:
        """The models the routing rule tries first, in order."""
        return list(dict.fromkeys([*([self.force] if self.force else []), *self.prefer]))

    def filter_reason(self, model_id: str, cost_usd: float, window: int) -> str | None:
        """Why a filter removes ``model_id`` (None: it stays)."""
        rule = self.forbidden.get(model_id)
        if rule is not None:
            return f"{model_id} forbidden by rule {rule!r}"
        if self.max_cost is not None and cost_usd > self.max_cost[0]:
            cap, rule = self.max_cost
            return f"{model_id} est. ${cost_usd:.6f} > cap ${cap:.6f} of rule {rule!r}"
        if self.min_context is not None and window < self.min_context[0]:
            need, rule = self.min_context
            return f"{model_id} context window {window} < {need} required by rule {rule!r}"
        return None


NO_PLAN = RulePlan()


def matches(match: Match, job: Job, task_type: TaskType, complexity: int, input_tokens: int) -> bool:
    """Whether every condition of ``match`` holds for the job."""
    if match.task_types and task_type not in match.task_types:
        return False
    if not match.complexity_min <= complexity <= match.complexity_max:
        return False
    if input_tokens < match.min_prompt_tokens:
        return False
    if match.max_prompt_tokens is not None and input_tokens > match.max_prompt_tokens:
        return False
    meta = job.metadata or {}
    if match.key_names and meta.get(METADATA_KEY_NAME) not in match.key_names:
        return False
    if match.teams and meta.get(METADATA_TEAM) not in match.teams:
        return False
    if any(meta.get(k) != v or type(meta.get(k)) is not type(v) for k, v in match.metadata.items()):
        return False
    if match.prompt_regex is not None:
        text = _text(job)
        return compiled(match.prompt_regex).search(text) is not None
    return True


def _text(job: Job) -> str:
    """The job's text a prompt regex is searched in: the system prompt and the conversation."""
    parts = [job.system_prompt() or "", job.objective()]
    return "\n".join(p for p in parts if p)[:REGEX_SCAN_CHARS]


def variant_for(experiment: Experiment, job_key: str) -> Variant:
    """The variant of ``experiment`` a job gets: a stable hash of (experiment, job) placed on
    the cumulative weights, so a job keeps its variant on every router and every attempt."""
    digest = hashlib.blake2b(f"{experiment.name}/{job_key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in experiment.variants)
    running = 0.0
    for variant in experiment.variants:
        running += variant.weight
        if point < running:
            return variant
    return experiment.variants[-1]


def shadowed(experiment: Experiment, job_key: str) -> bool:
    """Whether a job of ``experiment`` gets a shadow copy (a stable share of ``shadow_fraction``)."""
    if experiment.shadow is None or experiment.shadow_fraction <= 0:
        return False
    digest = hashlib.blake2b(f"shadow/{experiment.name}/{job_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < experiment.shadow_fraction


def plan_for(
    rules: RuleSet, job: Job, *, task_type: TaskType, complexity: int, input_tokens: int, job_key: str
) -> RulePlan:
    """The plan of ``rules`` for one job (``NO_PLAN`` when nothing matches)."""
    if rules.empty:
        return NO_PLAN
    applied: list[tuple[str, Action]] = []
    experiment = variant = None
    is_shadow = SHADOW_OF in (job.metadata or {})
    for exp in () if is_shadow else rules.experiments:
        if matches(exp.match, job, task_type, complexity, input_tokens):
            experiment, variant = exp, variant_for(exp, job_key)
            applied.append((f"{exp.name}/{variant.name}", variant))
            break
    applied += [
        (rule.name, rule) for rule in rules.rules if matches(rule.match, job, task_type, complexity, input_tokens)
    ]
    if is_shadow:
        return _shadow_plan(job, applied)
    if not applied:
        return NO_PLAN
    return _combine(
        applied,
        experiment=experiment.name if experiment else None,
        variant=variant.name if variant else None,
        shadow=experiment.shadow if experiment and shadowed(experiment, job_key) else None,
    )


def _shadow_plan(job: Job, applied: Sequence[tuple[str, Action]]) -> RulePlan:
    """A shadow copy: the rules' filters apply; it is recorded under its experiment as "shadow"."""
    experiment = (job.metadata or {}).get(SHADOW_EXPERIMENT)
    return _combine(
        applied, experiment=experiment if isinstance(experiment, str) else None, variant="shadow", shadow=None
    )


def _combine(
    applied: Sequence[tuple[str, Action]], *, experiment: str | None, variant: str | None, shadow: str | None
) -> RulePlan:
    forbidden: dict[str, str] = {}
    max_cost: tuple[float, str] | None = None
    min_context: tuple[int, str] | None = None
    router: tuple[str, Action] | None = None
    for name, action in applied:
        for model in action.forbid:
            forbidden.setdefault(model, name)
        if action.max_cost_usd is not None and (max_cost is None or action.max_cost_usd < max_cost[0]):
            max_cost = (action.max_cost_usd, name)
        if action.min_context_window is not None and (
            min_context is None or action.min_context_window > min_context[0]
        ):
            min_context = (action.min_context_window, name)
        if router is None and action.routes:
            router = (name, action)
    return RulePlan(
        applied=tuple(name for name, _ in applied),
        routed_by=router[0] if router else None,
        force=router[1].force if router else None,
        prefer=tuple(router[1].prefer) if router else (),
        forbidden=forbidden,
        max_cost=max_cost,
        min_context=min_context,
        experiment=experiment,
        variant=variant,
        shadow=shadow,
    )


def with_plan(decision: RouteDecision, plan: RulePlan) -> RouteDecision:
    """``decision`` with the rules that matched named in it (and its experiment's variant)."""
    if plan is NO_PLAN:
        return decision
    note = f" [rules applied: {', '.join(plan.applied)}]" if plan.applied else ""
    return msgspec.structs.replace(
        decision,
        reasoning=decision.reasoning + note,
        custom_rules=plan.applied,
        experiment=plan.experiment,
        variant=plan.variant,
        shadow=plan.shadow,
    )
