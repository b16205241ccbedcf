"""Custom rules and experiments: parsing (line and reason of a bad file), each match and
action, their order relative to the seed's tree, and the experiments' stable split. Pure."""

from __future__ import annotations

import collections

import pytest

from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_router.rules import plan_for, variant_for
from fleet_router.shadow import shadow_job
from fleet_shared.registry import load_registry
from fleet_shared.rules import RulesError, RuleSet, parse_rules
from fleet_shared.schema import Attempt, ErrorInfo, Job, TaskType

REGISTRY = load_registry()
KNOWN = frozenset(REGISTRY.models)


def router_with(text: str) -> IntelligentModelRouter:
    router = IntelligentModelRouter(REGISTRY)
    router.set_custom_rules(parse_rules(text, known_models=KNOWN))
    return router


def job(task: TaskType = TaskType.CODE_GENERATION, complexity: int = 5, **kw) -> Job:
    return Job(prompt=kw.pop("prompt", "Write a function"), task_type=task, complexity=complexity, **kw)


def chosen(decision) -> str | None:
    return decision.model.id if decision.model else None


# -- parsing ----------------------------------------------------------------------------


def test_a_valid_file_parses_into_rules_and_experiments():
    rules = parse_rules(
        """
[[rule]]
name = "sql"
match = { task_types = ["code_generation"], complexity_min = 4, prompt_regex = "(?i)select" }
prefer = ["claude"]

[[experiment]]
name = "ab"
shadow = "gemini"
[[experiment.variant]]
name = "control"
[[experiment.variant]]
name = "openai"
weight = 3
prefer = ["openai"]
""",
        known_models=KNOWN,
    )
    assert [r.name for r in rules.rules] == ["sql"]
    assert rules.rules[0].match.task_types == [TaskType.CODE_GENERATION]
    assert [v.name for v in rules.experiments[0].variants] == ["control", "openai"]
    assert rules.experiments[0].variants[1].weight == 3


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[[rule]]\nname = "a"\nprefer = ["claude" "gemini"]\nforce = "claude"\n', 3, "TOML syntax error"),
        ('[[rule]]\nname = "a"\nprefer = [\n', 3, "end of document"),
        (
            '[[rule]]\nname = "a"\n\n[[rule]]\nname = "b"\nmatch = { complexity_min = 11 }\n',
            4,
            "$.rule[1].match.complexity_min",
        ),
        ('[[rule]]\nname = "a"\nmatch = { prompt_regex = "(unclosed" }\n', 1, "does not compile"),
        ('[[rule]]\nname = "a"\nprefer = ["gpt-99"]\n', 1, "unknown model(s) gpt-99"),
        ('[[rule]]\nname = "a"\nprefr = ["claude"]\n', 1, "prefr"),
        ('[[rule]]\nname = "a"\n[[rule]]\nname = "a"\n', 3, "duplicate rule name"),
        (
            '[[rule]]\nname = "a"\nmatch = { complexity_min = 8, complexity_max = 3 }\n',
            1,
            "complexity_min 8 > complexity_max 3",
        ),
        ('[[experiment]]\nname = "e"\n', 1, "variant"),
    ],
)
def test_an_invalid_file_is_rejected_with_its_line_and_reason(text, line, reason):
    with pytest.raises(RulesError) as caught:
        parse_rules(text, known_models=KNOWN)
    assert caught.value.line == line
    assert reason in str(caught.value)


def test_semantic_errors_name_the_rule():
    with pytest.raises(RulesError, match=r"rule\[0\] 'cheap'.*max_cost_usd"):
        parse_rules('[[rule]]\nname = "cheap"\nmax_cost_usd = -1\n')


# -- matching ----------------------------------------------------------------------------

PREFER_OPENAI = 'prefer = ["openai"]\n'


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ('task_types = ["reasoning"]', job(TaskType.REASONING), job(TaskType.ANALYSIS)),
        ("complexity_min = 4, complexity_max = 6", job(complexity=6), job(complexity=7)),
        ("min_prompt_tokens = 100", job(prompt="x" * 1000), job(prompt="short")),
        ("max_prompt_tokens = 10", job(prompt="short"), job(prompt="x" * 1000)),
        ('key_names = ["ci"]', job(metadata={"key_name": "ci"}), job(metadata={"key_name": "web"})),
        ('teams = ["ml"]', job(metadata={"team": "ml"}), job()),
        ('metadata = { project = "apollo", tier = 2 }', job(metadata={"project": "apollo", "tier": 2}),
         job(metadata={"project": "apollo", "tier": "2"})),
        ('prompt_regex = "(?i)\\\\bselect\\\\b"', job(prompt="SELECT * FROM t"), job(prompt="selection sort")),
    ],
)  # fmt: skip
def test_each_match_condition(match, hit, miss):
    router = router_with(f'[[rule]]\nname = "r"\nmatch = {{ {match} }}\n{PREFER_OPENAI}')
    d_hit, d_miss = router.route(hit), router.route(miss)
    assert chosen(d_hit) == "openai" and d_hit.rule == "custom:r" and d_hit.custom_rules == ("r",)
    assert "custom rule 'r' prefers openai" in d_hit.reasoning
    assert d_miss.rule != "custom:r" and d_miss.custom_rules == ()


def test_the_prompt_regex_also_reads_the_system_prompt():
    router = router_with('[[rule]]\nname = "r"\nmatch = { prompt_regex = "pirate" }\nforce = "gemini"\n')
    assert chosen(router.route(job(system="Talk like a pirate"))) == "gemini"


# -- actions -----------------------------------------------------------------------------


def test_prefer_tries_its_list_in_order_before_the_tree():
    router = router_with('[[rule]]\nname = "p"\nprefer = ["gemini", "openai"]\n')
    assert chosen(router.route(job(complexity=2))) == "gemini"  # the tree would say local
    d = router.route(job(complexity=2), state=LiveState(unavailable=frozenset({"gemini"})))
    assert chosen(d) == "openai"


def test_a_preference_with_no_usable_model_leaves_the_decision_to_the_tree():
    router = router_with('[[rule]]\nname = "p"\nprefer = ["gemini"]\n')
    d = router.route(job(complexity=2), state=LiveState(unavailable=frozenset({"gemini"})))
    assert chosen(d) == "local_mlx" and d.rule == "simple_local"
    assert "rule 'p' prefers gemini: none usable" in d.reasoning


def test_force_wins_over_prefer_of_the_same_rule_and_escalates_when_it_fails():
    router = router_with('[[rule]]\nname = "f"\nforce = "claude"\nprefer = ["gemini"]\n')
    assert chosen(router.route(job(complexity=2))) == "claude"
    failed = Attempt(model="claude", provider="anthropic", success=False, error=ErrorInfo("server_error", "x"))
    assert chosen(router.route(job(complexity=2), attempts=[failed])) == "gemini"


def test_forbid_removes_a_model_everywhere_even_the_jobs_forced_model():
    router = router_with('[[rule]]\nname = "no-claude"\nforbid = ["claude"]\n')
    d = router.route(job(TaskType.REASONING, 9))
    assert chosen(d) == "gemini" and "claude forbidden by rule 'no-claude'" in d.reasoning
    forced = router.route(job(TaskType.REASONING, 9, context={"force_model": "claude"}))
    assert chosen(forced) == "gemini"


def test_a_cost_cap_keeps_expensive_models_out():
    capped = router_with('[[rule]]\nname = "cap"\nmax_cost_usd = 0.0000001\n')
    d = capped.route(job(TaskType.REASONING, 9))
    assert d.model is not None and d.model.is_local and "cap $0.000000 of rule 'cap'" in d.reasoning


def test_a_required_context_window_skips_smaller_models():
    smallest = min(REGISTRY.models.values(), key=lambda m: m.context_window)
    need = smallest.context_window + 1
    router = router_with(f'[[rule]]\nname = "long"\nmin_context_window = {need}\n')
    d = router.route(job(complexity=2), state=LiveState())
    assert d.model is not None and d.model.context_window >= need
    assert "required by rule 'long'" in d.reasoning


def test_the_first_routing_rule_wins_and_every_filter_applies():
    router = router_with(
        '[[rule]]\nname = "a"\nforbid = ["openai"]\n'
        '[[rule]]\nname = "b"\nprefer = ["openai", "gemini"]\n'
        '[[rule]]\nname = "c"\nprefer = ["claude"]\n'
    )
    d = router.route(job())
    assert chosen(d) == "gemini" and d.rule == "custom:b" and d.custom_rules == ("a", "b", "c")
    assert "rules applied: a, b, c" in d.reasoning


def test_rules_apply_after_the_jobs_forced_model_and_registry_fallbacks():
    router = router_with('[[rule]]\nname = "p"\nprefer = ["gemini"]\n')
    assert chosen(router.route(job(context={"force_model": "openai"}))) == "openai"


def test_an_empty_rule_set_changes_nothing():
    plain, empty = IntelligentModelRouter(REGISTRY), router_with("")
    for j in (job(complexity=2), job(complexity=5), job(TaskType.REASONING, 9)):
        assert plain.route(j) == empty.route(j)


# -- experiments -------------------------------------------------------------------------

AB = """
[[experiment]]
name = "ab"
match = { task_types = ["code_generation"] }
shadow = "gemini"
shadow_fraction = 0.5
[[experiment.variant]]
name = "control"
weight = 3
[[experiment.variant]]
name = "claude"
weight = 1
prefer = ["claude"]
"""


def test_the_split_is_stable_and_follows_the_weights():
    experiment = parse_rules(AB).experiments[0]
    ids = [f"job-{i}" for i in range(20_000)]
    counts = collections.Counter(variant_for(experiment, i).name for i in ids)
    assert abs(counts["control"] / len(ids) - 0.75) < 0.015
    assert all(variant_for(experiment, i) == variant_for(experiment, i) for i in ids[:500])


def test_an_experiment_routes_by_variant_and_records_it():
    router = router_with(AB)
    decisions = [router.route(job(), job_id=f"j{i}") for i in range(400)]
    by_variant = collections.defaultdict(set)
    for d in decisions:
        assert d.experiment == "ab"
        by_variant[d.variant].add(chosen(d))
    assert by_variant["claude"] == {"claude"}
    assert "claude" not in by_variant["control"]  # the tree: medium code -> its preference list
    shadows = sum(d.shadow == "gemini" for d in decisions)
    assert 150 < shadows < 250  # shadow_fraction 0.5
    # the same job on another attempt (another router) keeps its variant
    assert router.route(job(), job_id="j7").variant == decisions[7].variant


def test_a_shadow_copy_is_never_itself_in_an_experiment():
    rules = parse_rules(AB)
    copy = shadow_job("j1", job(metadata={"key_name": "ci", "team": "ml"}), model="gemini", experiment="ab")
    assert copy.id == "j1-shadow" and copy.force_model == "gemini" and copy.no_fallback
    assert "key_name" not in copy.metadata and "team" not in copy.metadata  # not the caller's budgets
    plan = plan_for(rules, copy, task_type=TaskType.CODE_GENERATION, complexity=5, input_tokens=10, job_key="j1-shadow")
    assert (plan.experiment, plan.variant, plan.shadow) == ("ab", "shadow", None)  # recorded, not split again
    d = router_with(AB).route(copy, job_id="j1-shadow")
    assert chosen(d) == "gemini" and d.variant == "shadow" and d.shadow is None


def test_jobs_outside_the_experiment_are_not_in_it():
    d = router_with(AB).route(job(TaskType.CREATIVE), job_id="x")
    assert d.experiment is None and d.variant is None and d.shadow is None


def test_rule_set_default_is_empty():
    assert RuleSet().empty
