"""How the pure policy acts on an attempt's error class (pure tests, no I/O)."""

from __future__ import annotations

from fleet_router.policy import IntelligentModelRouter
from fleet_shared.registry import load_registry
from fleet_shared.schema import Attempt, ErrorInfo, Job, TaskType

router = IntelligentModelRouter(load_registry())


def failed(model: str, code: str) -> Attempt:
    spec = router.registry.models[model]
    return Attempt(model=model, provider=spec.provider, success=False, error=ErrorInfo(code, "boom"))


def test_context_length_escalates_only_to_larger_windows():
    job = Job(prompt="long", task_type=TaskType.CODE_GENERATION, complexity=2)
    d = router.route(job, attempts=[failed("local_mlx", "context_length")])
    assert d.model.id not in ("local_devstral",)  # same 32k window: skipped
    assert d.model.context_window > 32768 and "that overflowed" in d.reasoning
    d = router.route(job, attempts=[failed("local_mlx", "context_length"), failed("openai", "context_length")])
    assert d.model.context_window > 128000


def test_invalid_request_fails_fast_with_the_providers_error():
    d = router.route(Job(prompt="x"), attempts=[failed("openai", "invalid_request")])
    assert d.model is None and d.rule == "fail_fast" and d.error_code == "invalid_request"


def test_other_classes_escalate():
    for code in ("auth", "rate_limited", "overloaded", "server_error", "timeout", "connection", "content_filtered"):
        d = router.route(Job(prompt="x"), attempts=[failed("openai", code)])
        assert d.model is not None and d.model.id != "openai", code
