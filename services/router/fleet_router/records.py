"""What the router says about a job besides its Dispatch: its ``Decision`` (the ledger's
``routing_decisions``; it travels inside the Dispatch, or inside the failed Result when no
attempt follows) and the failed ``Result`` of a job no model is left for. Pure builders:
``fleet_router.handlers`` publishes them."""

from __future__ import annotations

import time
from typing import Any

from fleet_router.inference import Inference
from fleet_router.policy import RouteDecision
from fleet_router.rules import SHADOW_OF
from fleet_shared.schema import Attempt, Decision, Dispatch, ErrorInfo, Job, Result, TaskType


def exhausted_error(decision: RouteDecision, attempts: list[Attempt]) -> ErrorInfo:
    """The error of a job no model is left for."""
    if decision.error_code == "budget_exhausted":  # whatever the attempts before: money ran out
        return ErrorInfo("budget_exhausted", decision.reasoning)
    if not attempts:
        return ErrorInfo(decision.error_code or "no_model_available", decision.reasoning)
    last = attempts[-1].error
    if decision.rule == "fail_fast" and last is not None:  # e.g. invalid_request: the job is wrong
        return ErrorInfo(last.code, last.message)
    detail = f"; last error: {last.code}: {last.message}" if last else ""
    return ErrorInfo("all_models_failed", f"{len(attempts)} attempts failed{detail}")


def failed_result(
    job_id: str,
    job: Job | None,
    task_type: TaskType | None,
    complexity: int | None,
    reasoning: str,
    attempts: list[Attempt],
    error: ErrorInfo,
    accepted_at: float,
    sources: Inference | Dispatch | None = None,
    decision: Decision | None = None,
) -> Result:
    """The Result of a job that ends without an answer, with what its attempts spent
    (``sources``: where its task type and complexity came from; ``decision``: the last one,
    for the ledger)."""
    return Result(
        job_id=job_id,
        success=False,
        task_type=task_type,
        complexity=complexity,
        reasoning=reasoning,
        attempts=attempts,
        error=error,
        metadata=job.metadata if job else None,
        tokens_in=sum(a.tokens_in for a in attempts),
        tokens_out=sum(a.tokens_out for a in attempts),
        cost_usd=sum(a.cost_usd for a in attempts),
        latency_ms=max(0.0, (time.time() - accepted_at) * 1000) if accepted_at else 0.0,
        task_type_source=sources.task_type_source if sources else None,
        complexity_source=sources.complexity_source if sources else None,
        decision=decision,
    )


def routed_decision(
    job_id: str,
    attempt_no: int,
    objective: str,
    task_type: TaskType,
    complexity: int,
    decision: RouteDecision,
    job_metadata: dict[str, Any] | None = None,
) -> Decision:
    spec = decision.model
    return Decision(
        job_id=job_id,
        attempt_no=attempt_no,
        objective=objective,
        task_type=task_type.value,
        complexity=complexity,
        model=spec.id if spec else None,
        provider=spec.provider if spec else None,
        reasoning=decision.reasoning,
        estimated_cost_usd=decision.estimated_cost_usd,
        estimated_latency_ms=decision.estimated_latency_ms,
        at=time.time(),
        task_type_source=decision.task_type_source,
        complexity_source=decision.complexity_source,
        experiment=decision.experiment,
        variant=decision.variant,
        shadow_of=shadow_of if isinstance(shadow_of := (job_metadata or {}).get(SHADOW_OF), str) else None,
    )


def unrouted_decision(job_id: str, objective: str, reasoning: str) -> Decision:
    """The decision of a job no policy ever saw (rejected, or given up before routing)."""
    return Decision(
        job_id=job_id,
        attempt_no=1,
        objective=objective,
        task_type=None,
        complexity=None,
        model=None,
        provider=None,
        reasoning=reasoning,
        at=time.time(),
    )
