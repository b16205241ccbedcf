"""Task type and complexity inferred from a job that does not give them.

Pure code: no I/O, no model file, nothing learned at run time. ``infer`` reads a bounded
part of the job (see ``features``), weighs the terms of a hand-written lexicon
(``lexicon``) and the request's shape (``scoring``), and says which signals decided.
A value the job gives is never overridden: it is reported as ``given``.

    >>> from fleet_shared.schema import Job
    >>> infer(Job(prompt="Write a haiku about autumn")).task_type.value
    'creative'
"""

from __future__ import annotations

from msgspec import Struct

from fleet_router.inference import features, scoring
from fleet_shared.schema import Dispatch, Job, TaskType
from fleet_shared.schema import LabelSource as Source

__all__ = ["Inference", "Source", "carried", "infer"]


class Inference(Struct, frozen=True, kw_only=True):
    """A job's task type and complexity, where each came from, and why."""

    task_type: TaskType
    complexity: int
    task_type_source: Source
    complexity_source: Source
    task_type_signals: tuple[str, ...] = ()
    complexity_signals: tuple[str, ...] = ()

    @property
    def inferred(self) -> bool:
        return self.task_type_source != "given" or self.complexity_source != "given"

    def explain(self) -> str:
        """What was inferred and from what, for the decision's reasoning ("" when nothing was)."""
        said = []
        if self.task_type_source == "inferred":
            said.append(f"task {self.task_type.value} ({', '.join(self.task_type_signals) or _CARRIED})")
        elif self.task_type_source == "default":
            said.append(f"task {self.task_type.value} (default: no clear signal)")
        if self.complexity_source == "inferred":
            said.append(f"complexity {self.complexity} ({', '.join(self.complexity_signals) or _CARRIED})")
        elif self.complexity_source == "default":
            said.append(f"complexity {self.complexity} (default)")
        return f"inferred {'; '.join(said)}" if said else ""


#: The labels a job gives, as an ``Inference`` (60 at most: 6 task types x 10 complexities).
_GIVEN: dict[tuple[TaskType, int], Inference] = {}
#: How ``explain`` names the signals of values carried from an earlier attempt.
_CARRIED = "as at the first attempt"


def carried(dispatch: Dispatch) -> Inference | None:
    """The task type and complexity an earlier attempt was routed with, when at least one
    was inferred or defaulted (the job's own labels are read again, at no cost): an
    escalation keeps them instead of inferring again, so every attempt of a job is routed
    as the same task. None when the dispatch does not say where they came from."""
    task_source, complexity_source = dispatch.task_type_source, dispatch.complexity_source
    if task_source is None or complexity_source is None or task_source == complexity_source == "given":
        return None
    return Inference(
        task_type=dispatch.task_type,
        complexity=dispatch.complexity,
        task_type_source=task_source,
        complexity_source=complexity_source,
    )


def infer(
    job: Job,
    *,
    default_task_type: TaskType = TaskType.COMPLETION,
    default_complexity: int = 5,
    enabled: bool = True,
) -> Inference:
    """The job's task type and complexity: given ones kept, missing ones inferred.

    Parameters:
        job: a validated job.
        default_task_type, default_complexity: used when inference is off (``enabled``
            false), and for the task type when no type has enough evidence.
    """
    task, complexity = job.task_type, job.complexity
    if task is not None and complexity is not None:
        given = _GIVEN.get((task, complexity))
        if given is None:  # frozen: one per (task type, complexity), made once
            given = _GIVEN[(task, complexity)] = Inference(
                task_type=task, complexity=complexity, task_type_source="given", complexity_source="given"
            )
        return given
    if not enabled:
        return Inference(
            task_type=task or default_task_type,
            complexity=complexity or default_complexity,
            task_type_source="given" if task else "default",
            complexity_source="given" if complexity else "default",
        )
    f = features.extract(job)
    task, guessed, type_signals, value, complexity_signals = scoring.assess(
        f, task, default_task_type, complexity=complexity is None
    )
    return Inference(
        task_type=task,
        complexity=value if complexity is None else complexity,
        task_type_source="given" if job.task_type is not None else "inferred" if guessed else "default",
        complexity_source="inferred" if complexity is None else "given",
        task_type_signals=tuple(type_signals),
        complexity_signals=tuple(complexity_signals),
    )
