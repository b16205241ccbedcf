"""The routing policy, branch by branch: pure tests, no I/O."""

from __future__ import annotations

import msgspec
import pytest

from fleet_router.inference import Inference
from fleet_router.policy import IntelligentModelRouter, LiveState, ModelStats
from fleet_shared.registry import load_registry
from fleet_shared.schema import Attempt, ErrorInfo, Job, TaskType

router = IntelligentModelRouter(load_registry())


def job(task: TaskType | None = None, complexity: int | None = None, **kw) -> Job:
    return Job(prompt=kw.pop("prompt", "Write a function"), task_type=task, complexity=complexity, **kw)


def failed(model: str, code: str = "server_error") -> Attempt:
    provider = router.registry.models[model].provider
    return Attempt(model=model, provider=provider, success=False, error=ErrorInfo(code, "boom"))


def chosen(decision) -> str | None:
    return decision.model.id if decision.model else None


# -- 1. forced model ---------------------------------------------------------------


def test_forced_model_wins_over_every_rule():
    d = router.route(job(TaskType.CODE_GENERATION, 2, context={"force_model": "openai"}))
    assert chosen(d) == "openai" and d.rule == "forced"
    assert "force_model" in d.reasoning


def test_forced_unknown_model_is_an_error_decision():
    d = router.route(job(context={"force_model": "gpt-99"}))
    assert d.model is None and d.error_code == "unknown_model"
    assert "gpt-99" in d.reasoning


def test_forced_model_already_tried_falls_back_to_the_tree():
    d = router.route(job(TaskType.CODE_GENERATION, 2, context={"force_model": "openai"}), attempts=[failed("openai")])
    assert chosen(d) == "local_mlx" and d.rule == "simple_local"
    assert "openai already tried" in d.reasoning


def test_forced_model_unavailable_falls_back():
    d = router.route(
        job(TaskType.REASONING, 8, context={"force_model": "claude"}),
        state=LiveState(unavailable=frozenset({"claude"})),
    )
    assert chosen(d) == "gemini"


# -- 2. escalation after local failures ----------------------------------------------


def test_one_local_failure_tries_the_other_local_model():
    d = router.route(job(TaskType.CODE_GENERATION, 2), attempts=[failed("local_mlx")])
    assert chosen(d) == "local_devstral" and d.rule == "simple_local"


def test_two_local_failures_escalate_to_commercial_in_preference_order():
    attempts = [failed("local_mlx"), failed("local_devstral")]
    d = router.route(job(TaskType.CODE_GENERATION, 2), attempts=attempts)
    assert chosen(d) == "openai" and d.rule == "escalate_commercial"
    assert "2 local attempts failed" in d.reasoning


def test_commercial_escalation_for_refactor_follows_its_preference():
    attempts = [failed("local_mlx"), failed("local_devstral")]
    assert chosen(router.route(job(TaskType.CODE_REFACTOR, 5), attempts=attempts)) == "claude"


def test_escalation_continues_through_commercial_models_then_is_exhausted():
    attempts = [failed("local_mlx"), failed("local_devstral"), failed("openai")]
    seen = []
    while True:
        d = router.route(job(TaskType.CODE_GENERATION, 2), attempts=attempts)
        if d.model is None:
            break
        seen.append(d.model.id)
        attempts.append(failed(d.model.id))
    assert seen == ["claude", "gemini"]
    assert d.error_code == "no_model_available"
    assert len({a.model for a in attempts}) == len(attempts) == 5  # never the same model twice


# -- 3. simple tasks go local -------------------------------------------------------


@pytest.mark.parametrize("complexity", [1, 2, 3])
@pytest.mark.parametrize("task", list(TaskType))
def test_simple_tasks_go_to_a_local_model(task, complexity):
    d = router.route(job(task, complexity))
    assert chosen(d) == "local_mlx" and d.rule == "simple_local"
    assert d.estimated_cost_usd == 0.0


def test_simple_task_with_both_locals_down_falls_back_to_commercial():
    state = LiveState(unavailable=frozenset({"local_mlx", "local_devstral"}))
    d = router.route(job(TaskType.CODE_GENERATION, 2), state=state)
    assert chosen(d) == "openai" and d.rule == "fallback"
    assert "local_mlx unavailable" in d.reasoning


# -- 4. complex tasks go to Claude / Gemini -----------------------------------------


@pytest.mark.parametrize("complexity", [7, 8, 9, 10])
@pytest.mark.parametrize("task", list(TaskType))
def test_complex_tasks_go_to_claude(task, complexity):
    d = router.route(job(task, complexity))
    assert chosen(d) == "claude" and d.rule == "complex"


def test_complex_task_goes_to_gemini_when_claude_failed():
    assert chosen(router.route(job(TaskType.REASONING, 9), attempts=[failed("claude")])) == "gemini"


# -- 5. the task type's preference list (the seed's table, every row) ----------------

PREFERENCES = {
    TaskType.CODE_GENERATION: ["local_mlx", "openai"],
    TaskType.CODE_REFACTOR: ["local_mlx", "claude"],
    TaskType.REASONING: ["claude", "gemini"],
    TaskType.ANALYSIS: ["claude", "gemini"],
    TaskType.COMPLETION: ["openai", "local_mlx"],
    TaskType.CREATIVE: ["claude", "gemini"],
}


@pytest.mark.parametrize("task,prefs", PREFERENCES.items())
def test_medium_complexity_follows_the_seed_preference_table(task, prefs):
    first = router.route(job(task, 5))
    assert chosen(first) == prefs[0] and first.rule == "task_preference"
    second = router.route(job(task, 5), attempts=[failed(prefs[0])])
    assert chosen(second) == prefs[1]


def test_preference_list_exhausted_falls_back_to_other_models():
    d = router.route(job(TaskType.REASONING, 5), attempts=[failed("claude"), failed("gemini")])
    assert d.rule == "fallback" and chosen(d) == "local_mlx"


# -- defaults, filters and state ----------------------------------------------------


def test_defaults_for_a_bare_prompt_when_inference_is_off():
    rules = msgspec.structs.replace(router.registry.rules, infer_missing=False)
    plain = IntelligentModelRouter(msgspec.structs.replace(router.registry, rules=rules))
    task, complexity = plain.resolve(Job(prompt="hello"))
    assert (task, complexity) == (TaskType.COMPLETION, 5)
    d = plain.route(Job(prompt="hello"))
    assert chosen(d) == "openai"
    assert (d.task_type_source, d.complexity_source) == ("default", "default")


def test_prompt_larger_than_a_context_window_skips_that_model():
    big = "x" * (40_000 * 4)  # ~40k tokens: more than the local models' 32k window
    d = router.route(job(TaskType.CODE_GENERATION, 2, prompt=big))
    assert chosen(d) == "openai" and "context window" in d.reasoning


def test_budget_exhausted_keeps_commercial_models_out():
    d = router.route(job(TaskType.REASONING, 8), state=LiveState(budget_remaining_usd=0.0))
    assert chosen(d) == "local_mlx" and "budget" in d.reasoning


def test_recent_poor_performance_moves_a_model_last():
    state = LiveState(stats={"claude": ModelStats(calls=20, failures=15)}, probe_share=0.0)
    d = router.route(job(TaskType.REASONING, 8), state=state)
    assert (
        chosen(d) == "gemini"
        and "claude demoted for reasoning (all task types): success 25% over the last 20" in d.reasoning
    )


def test_few_observations_do_not_count_as_poor_performance():
    state = LiveState(stats={"claude": ModelStats(calls=3, failures=3)})
    assert chosen(router.route(job(TaskType.REASONING, 8), state=state)) == "claude"


def test_nothing_available_is_a_clear_error():
    state = LiveState(unavailable=frozenset(router.registry.models))
    d = router.route(job(), state=state)
    assert d.model is None and d.error_code == "no_model_available"


def test_estimates_use_prices_and_max_tokens():
    d = router.route(job(TaskType.REASONING, 8, prompt="x" * 4000, max_tokens=1000))
    spec = router.registry.models["claude"]
    assert d.estimated_cost_usd == pytest.approx(spec.cost_usd(1000, 1000))
    assert d.estimated_latency_ms > spec.first_token_ms


def test_policy_is_deterministic():
    j = job(TaskType.ANALYSIS, 6)
    assert router.route(j) == router.route(j)


# -- waiting out a cooldown the provider asked for ---------------------------------------

NOW = 1_800_000_000.0


def cooling(**seconds: float) -> LiveState:
    """Every model unavailable; those named are cooling down for that many more seconds."""
    return LiveState(
        unavailable=frozenset(router.registry.models), cooling_until={m: NOW + s for m, s in seconds.items()}
    )


def test_a_job_waits_for_the_next_model_back_from_a_provider_cooldown():
    d = router.route(job(TaskType.REASONING, 8), state=cooling(claude=2.0, gemini=0.5), now=NOW)
    # the tree's choice is claude; it is back in 2 s (gemini sooner, but the rule prefers claude)
    assert d.model is None and d.rule == "wait" and d.wait_s == pytest.approx(2.0)
    assert "claude is back in 2.0s" in d.reasoning


def test_waiting_skips_models_already_tried():
    d = router.route(
        job(TaskType.REASONING, 8),
        attempts=[failed("claude", "rate_limited")],
        state=cooling(claude=1.0, gemini=5.0),
        now=NOW,
    )
    assert d.rule == "wait" and d.wait_s == pytest.approx(5.0) and "gemini" in d.reasoning


def test_no_wait_beyond_the_limit_or_without_a_clock_or_for_other_outages():
    too_long = router.registry.rules.max_queue_wait_s + 1
    assert (
        router.route(job(TaskType.REASONING, 8), state=cooling(claude=too_long, gemini=too_long), now=NOW).error_code
        == "no_model_available"
    )
    assert (
        router.route(job(TaskType.REASONING, 8), state=cooling(claude=1.0), now=None).error_code == "no_model_available"
    )
    # down for a rejected key (not a provider-asked cooldown): nothing to wait for
    assert router.route(job(TaskType.REASONING, 8), state=cooling(), now=NOW).error_code == "no_model_available"


def test_the_context_window_a_model_is_loaded_with_counts():
    # LM Studio loaded qwen with 4k context: a ~5k-token prompt no longer fits it
    big = job(TaskType.CODE_GENERATION, 2, prompt="x" * 20_000)
    assert chosen(router.route(big)) == "local_mlx"  # the registry's 32k window
    d = router.route(big, state=LiveState(context_windows={"local_mlx": 4096}))
    assert chosen(d) == "local_devstral" and "local_mlx context window 4096 as loaded" in d.reasoning
    # and an overflow on a 4k-loaded model escalates to anything larger than 4k
    overflow = failed("local_mlx", "context_length")
    d = router.route(big, attempts=[overflow], state=LiveState(context_windows={"local_mlx": 4096}))
    assert chosen(d) == "local_devstral"


# -- tools, registry fallbacks, no fallback ------------------------------------------


def _registry_with(tmp_path, extra: str):
    from pathlib import Path

    base = (Path(load_registry.__code__.co_filename).parent / "models.toml").read_text()
    path = tmp_path / "models.toml"
    path.write_text(base + extra)
    return IntelligentModelRouter(load_registry(path))


def test_a_job_with_tools_skips_models_without_tool_support():
    import msgspec

    from fleet_shared.schema import Tool

    models = dict(router.registry.models)
    models["local_mlx"] = msgspec.structs.replace(models["local_mlx"], supports_tools=False)
    no_tools = IntelligentModelRouter(msgspec.structs.replace(router.registry, models=models))
    tools = [Tool(name="get_weather")]
    d = no_tools.route(job(TaskType.CODE_GENERATION, 2, tools=tools))
    assert chosen(d) == "local_devstral" and "local_mlx does not support tools" in d.reasoning
    assert chosen(no_tools.route(job(TaskType.CODE_GENERATION, 2))) == "local_mlx"  # no tools: as before


def test_registry_fallbacks_come_first_when_escalating_from_that_model(tmp_path):
    patched = _registry_with(tmp_path, "")
    text = (
        (tmp_path / "models.toml")
        .read_text()
        .replace('[models.openai]\nprovider = "openai"', '[models.openai]\nfallbacks = ["gemini"]\nprovider = "openai"')
    )
    (tmp_path / "models.toml").write_text(text)
    patched = IntelligentModelRouter(load_registry(tmp_path / "models.toml"))
    forced = job(TaskType.CODE_GENERATION, 2, context={"force_model": "openai"})
    d = patched.route(forced, attempts=[failed("openai")])
    assert chosen(d) == "gemini" and d.rule == "fallback" and "registry fallbacks" in d.reasoning
    # without the registry entry, the tree decides (a simple task: a local model)
    assert chosen(router.route(forced, attempts=[failed("openai")])) == "local_mlx"
    # the fallback failed too: the usual order goes on
    assert chosen(patched.route(forced, attempts=[failed("openai"), failed("gemini")])) == "local_mlx"


def test_registry_rejects_a_fallback_naming_an_unknown_model(tmp_path):
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="unknown models"):
        _registry_with(
            tmp_path,
            '\n[models.extra]\nprovider = "openai"\nprovider_model = "m"\ncontext_window = 1\n'
            'tokens_per_s = 1.0\nfallbacks = ["nope"]\n',
        )


def test_no_fallback_forbids_escalating_from_the_forced_model():
    forced = job(TaskType.CODE_GENERATION, 2, context={"force_model": "openai", "no_fallback": True})
    assert chosen(router.route(forced)) == "openai"
    d = router.route(forced, attempts=[failed("openai")])
    assert d.model is None and d.error_code == "no_model_available" and "forbids a fallback" in d.reasoning
    down = router.route(forced, state=LiveState(unavailable={"openai"}))
    assert down.model is None and "openai unavailable" in down.reasoning
    with pytest.raises(ValueError, match="no_fallback"):
        job(context={"force_model": "openai", "no_fallback": "yes"})


# -- inferred task type and complexity (jobs that do not give them) ----------------------


def test_an_unlabelled_trivial_question_goes_to_the_free_local_model():
    d = router.route(Job(prompt="What is the capital of France?"))
    assert d.rule == "simple_local" and chosen(d) == "local_mlx"
    assert d.resolved is not None and d.resolved.complexity <= 3
    assert (d.task_type_source, d.complexity_source) == ("inferred", "inferred")
    assert d.reasoning.startswith("inferred task completion (")


def test_an_unlabelled_hard_proof_goes_to_a_commercial_reasoning_model():
    d = router.route(
        Job(prompt="Prove rigorously that every planar graph is 5-colorable, stating and proving each lemma you use.")
    )
    assert d.rule == "complex" and chosen(d) == "claude"
    assert d.resolved is not None and d.resolved.task_type is TaskType.REASONING and d.resolved.complexity >= 7
    assert "prove" in d.reasoning


def test_labelled_jobs_route_exactly_as_before():
    # the prompt reads as a hard proof; the labels say otherwise and win
    d = router.route(job(TaskType.CREATIVE, 2, prompt="Prove the Riemann hypothesis rigorously."))
    assert d.rule == "simple_local" and chosen(d) == "local_mlx"
    assert d.resolved is None and "inferred" not in d.reasoning
    assert (d.task_type_source, d.complexity_source) == ("given", "given")


def test_a_given_complexity_is_kept_and_only_the_task_type_inferred():
    d = router.route(Job(prompt="Analyze the pros and cons of microservices", complexity=5))
    assert d.rule == "task_preference" and chosen(d) == "claude"  # analysis prefers claude
    assert d.resolved is not None and d.resolved.task_type is TaskType.ANALYSIS
    assert (d.task_type_source, d.complexity_source) == ("inferred", "given")
    assert d.reasoning.startswith("inferred task analysis (") and "inferred complexity" not in d.reasoning


def test_a_resolution_carried_from_an_earlier_attempt_is_used_instead_of_inferring_again():
    carried = Inference(
        task_type=TaskType.REASONING, complexity=9, task_type_source="inferred", complexity_source="inferred"
    )
    d = router.route(Job(prompt="What is the capital of France?"), resolved=carried)
    assert d.resolved is carried and d.rule == "complex"
    assert d.reasoning.startswith("inferred task reasoning (as at the first attempt); complexity 9 (as at")


def test_inference_is_explained_once_when_the_policy_routes_twice():
    # every model ramping and none admitting: the policy routes a second time without the gate
    state = LiveState(ramp={m: 0.0 for m in router.registry.models})
    d = router.route(Job(prompt="Write a haiku about autumn"), state=state)
    assert d.model is not None and d.reasoning.count("inferred") == 1
