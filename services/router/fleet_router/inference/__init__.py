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
from fleet_shared.schema import Job, TaskType
from fleet_shared.schema import LabelSource as Source

__all__ = ["Inference", "Source", "infer"]


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
            said.append(f"task {self.task_type.value} ({', '.join(self.task_type_signals)})")
        elif self.task_type_source == "default":
            said.append(f"task {self.task_type.value} (default: no clear signal)")
        if self.complexity_source == "inferred":
            said.append(f"complexity {self.complexity} ({', '.join(self.complexity_signals)})")
        elif self.complexity_source == "default":
            said.append(f"complexity {self.complexity} (default)")
        return f"inferred {'; '.join(said)}" if said else ""


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
        return Inference(task_type=task, complexity=complexity, task_type_source="given", complexity_source="given")
    if not enabled:
        return Inference(
            task_type=task or default_task_type,
            complexity=complexity or default_complexity,
            task_type_source="given" if task else "default",
            complexity_source="given" if complexity else "default",
        )
    f = features.extract(job)
    evidence = scoring.gather(f)
    type_signals: list[str] = []
    complexity_signals: list[str] = []
    task_source: Source = "given"
    complexity_source: Source = "given"
    if task is None:
        guessed, type_signals = scoring.task_type(evidence)
        task, task_source = (guessed, "inferred") if guessed is not None else (default_task_type, "default")
    if complexity is None:
        complexity, complexity_signals = scoring.complexity(f, evidence, task)
        complexity_source = "inferred"
    return Inference(
        task_type=task,
        complexity=complexity,
        task_type_source=task_source,
        complexity_source=complexity_source,
        task_type_signals=tuple(type_signals),
        complexity_signals=tuple(complexity_signals),
    )
