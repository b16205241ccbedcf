"""Recent performance per model and task type, the same on every router: decaying statistics
built from the attempt stream.

Why replay the stream rather than share an aggregate in NATS KV
---------------------------------------------------------------
Every outcome the fleet produces is already stored, in order, by JetStream: each job's
Result (RESULTS, a kept stream) carries all its attempts, failed ones included, and the
task type it was routed as. Each router reads that stream with an ordered consumer that
starts ``lookback_s`` ago (deliver policy ``by_start_time``, ``fleet_router.feed``) and
folds every attempt in at the *stream's* timestamp of its Result. The statistics are sums
of ``2 ** -((now - t_i) / half_life_s)`` over outcomes i, which do not depend on the order
the outcomes are folded in (``Decayed`` keeps each sum against a reference time, so adding
an outcome is one addition whatever its age). So two routers, or a router started a minute
ago, that have read the same messages hold the same numbers; a new router converges
as soon as its consumer catches up with the look-back (seconds). A KV aggregate written with
compare-and-set would need one write per attempt, contend on a few hot keys at thousands of
attempts/s (every loser re-reads and retries), and be one more state to repair after a
crash; the stream is written anyway, and reading it costs each router one decode per job.
The price: an attempt counts when its job ends, not when it fails (seconds later for a job
that escalates; a hung call counts at its timeout).

What is kept per (model, task type), and per model over all task types (``ANY_TASK``):
calls and failures (decayed counts), failures of a quality validator (``quality_*`` error
codes), cost per call, a latency histogram (log-spaced buckets, decayed weights: p50/p95),
and feedback scores (``<p>.feedback``, replayed from the FEEDBACK stream over the same
look-back: the decayed mean of the scores given to the answers the model gave for that task
type; the policy demotes a model for a task type whose users score it poorly).
Pure code: no I/O; ``fleet_router.feed`` reads the streams.
"""

from __future__ import annotations

import collections
import math
import sys
from bisect import bisect_left

from fleet_router.policy import ModelStats
from fleet_shared.schema import Attempt

#: The key of a model's statistics over every task type.
ANY_TASK = "*"
#: Latency bucket upper edges (ms): 5 ms growing by 25% a bucket, up to ~15 minutes.
LATENCY_EDGES_MS: tuple[float, ...] = tuple(5.0 * 1.25**k for k in range(55))
#: Jobs whose answering model is remembered, to credit a feedback score to it: the newest
#: this many (at 100 jobs/s, the last ~3 minutes). Memory, not time, bounds it: each costs
#: ~100 bytes of the router's RSS, whatever the rate (the soak holds RSS growth under 10 %).
JOBS_REMEMBERED = 20_000
#: Half-lives past ``Decayed.ref`` after which its sums are rescaled (2 ** 64 ~ 1.8e19: far
#: from a float's range, and rescaling happens once every 64 half-lives).
RESCALE_HALF_LIVES = 64.0
#: Scores kept per job whose answer is not known yet (a client resubmitting one is bounded).
EARLY_SCORES_PER_JOB = 8


class Decayed:
    """Exponentially decaying sums of one model's outcomes (for one task type, or all).

    The sums are kept in units of a reference time ``ref``: an outcome at ``t`` adds
    ``2 ** ((t - ref) / half_life_s)``, the same whatever order outcomes come in, and one
    addition each (decaying every sum, the 56 latency buckets included, at each outcome
    cost a visible share of the router's CPU); ``stats`` scales them down to ``now``. When
    weights grow past ``2 ** RESCALE_HALF_LIVES`` everything is rescaled to a later ``ref``.
    """

    __slots__ = ("at", "calls", "cost", "failures", "feedback", "feedback_n", "latency", "quality", "ref")

    def __init__(self) -> None:
        self.ref = self.at = -math.inf  # the reference time; the latest outcome's time
        self.calls = self.failures = self.quality = self.cost = 0.0
        self.feedback = self.feedback_n = 0.0
        self.latency = [0.0] * (len(LATENCY_EDGES_MS) + 1)

    def _weight(self, t: float, half_life_s: float) -> float:
        """The weight of an outcome at ``t`` in units of ``ref``."""
        if self.ref == -math.inf:
            self.ref = t
        if t > self.at:
            self.at = t
        exponent = (t - self.ref) / half_life_s
        if exponent > RESCALE_HALF_LIVES:
            self._rescale(t, half_life_s)
            exponent = 0.0
        return 2.0**exponent

    def _rescale(self, ref: float, half_life_s: float) -> None:
        factor = 0.5 ** ((ref - self.ref) / half_life_s)
        self.calls *= factor
        self.failures *= factor
        self.quality *= factor
        self.cost *= factor
        self.feedback *= factor
        self.feedback_n *= factor
        self.latency = [w * factor for w in self.latency]
        self.ref = ref

    def add(self, attempt: Attempt, t: float, half_life_s: float) -> None:
        w = self._weight(t, half_life_s)
        self.calls += w
        self.cost += w * attempt.cost_usd
        if not attempt.success:
            self.failures += w
            if attempt.error is not None and attempt.error.code.startswith("quality_"):
                self.quality += w
        if attempt.latency_ms > 0:
            self.latency[bisect_left(LATENCY_EDGES_MS, attempt.latency_ms)] += w

    def add_feedback(self, score: float, t: float, half_life_s: float) -> None:
        w = self._weight(t, half_life_s)
        self.feedback += w * score
        self.feedback_n += w

    def stats(self, now: float, half_life_s: float) -> ModelStats:
        """The sums decayed to ``now`` (never to before the latest outcome; never changes them)."""
        if self.ref == -math.inf:
            return ModelStats()
        factor = 0.5 ** ((max(now, self.at) - self.ref) / half_life_s)
        feedback_at_latest = self.feedback_n * 0.5 ** ((self.at - self.ref) / half_life_s)
        return ModelStats(
            calls=self.calls * factor,
            failures=self.failures * factor,
            quality_failures=self.quality * factor,
            cost_per_call_usd=self.cost / self.calls if self.calls else 0.0,
            latency_p50_ms=_percentile(self.latency, 0.50),
            latency_p95_ms=_percentile(self.latency, 0.95),
            feedback_mean=self.feedback / self.feedback_n if feedback_at_latest > 1e-9 else None,
            feedback_count=self.feedback_n * factor,
        )


def _percentile(weights: list[float], q: float) -> float:
    """The upper edge (ms) of the bucket holding quantile ``q`` (0: no latency seen)."""
    total = sum(weights)
    if total <= 0:
        return 0.0
    target, seen = q * total, 0.0
    for i, w in enumerate(weights):
        seen += w
        if seen >= target:
            return LATENCY_EDGES_MS[min(i, len(LATENCY_EDGES_MS) - 1)]
    return LATENCY_EDGES_MS[-1]


class PerformanceBook:
    """Decaying statistics per (task type, model), fed outcomes with their stream timestamps.

    Parameters:
        half_life_s: an outcome counts half as much after this long.
    """

    def __init__(self, *, half_life_s: float = 60.0) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self.half_life_s = half_life_s
        self._sums: dict[tuple[str, str], Decayed] = {}
        #: job id -> the model that answered it (for feedback)
        self._answered_by: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        #: job id -> scores (score, time) given before its Result was read: the FEEDBACK and
        #: RESULTS replays are two consumers, so a score may arrive before its job's answer
        self._early_feedback: collections.OrderedDict[str, list[tuple[float, float]]] = collections.OrderedDict()
        #: bumped by every outcome folded in (the tracker rebuilds its snapshot on a change)
        self.version = 0

    def attempt(self, attempt: Attempt, *, at: float, job_id: str | None = None, task_type: str | None = None) -> None:
        """Fold one attempt in, for ``task_type`` (a Result carries it) and model-wide."""
        task = task_type
        self._sums_for(ANY_TASK, attempt.model).add(attempt, at, self.half_life_s)
        if task:
            self._sums_for(task, attempt.model).add(attempt, at, self.half_life_s)
            if attempt.success and job_id:
                # interned: a Result's strings are new objects; a few shared ones keep each entry small
                _remember(self._answered_by, job_id, (sys.intern(task), sys.intern(attempt.model)))
                for score, scored_at in self._early_feedback.pop(job_id, ()):
                    self._add_feedback(task, attempt.model, score, scored_at)
        self.version += 1

    def feedback(self, job_id: str, score: float, *, at: float) -> bool:
        """A user's score of ``job_id``'s answer, credited to the model that answered it, for
        the task type it was routed as. False when that answer is not known here yet: the
        score is kept (bounded) and credited when the job's Result is read."""
        found = self._answered_by.get(job_id)
        if found is None:
            early = self._early_feedback.get(job_id)
            if early is None:
                _remember(self._early_feedback, job_id, [(score, at)])
            elif len(early) < EARLY_SCORES_PER_JOB:
                early.append((score, at))
            return False
        self._add_feedback(*found, score, at)
        return True

    def _add_feedback(self, task: str, model: str, score: float, at: float) -> None:
        self._sums_for(ANY_TASK, model).add_feedback(score, at, self.half_life_s)
        self._sums_for(task, model).add_feedback(score, at, self.half_life_s)
        self.version += 1

    def snapshot(self, now: float) -> tuple[dict[str, ModelStats], dict[str, dict[str, ModelStats]]]:
        """(model-wide stats by model, stats by task type then model), decayed to ``now``."""
        overall: dict[str, ModelStats] = {}
        by_task: dict[str, dict[str, ModelStats]] = {}
        for (task, model), sums in self._sums.items():
            stats = sums.stats(now, self.half_life_s)
            if task == ANY_TASK:
                overall[model] = stats
            else:
                by_task.setdefault(task, {})[model] = stats
        return overall, by_task

    def _sums_for(self, task: str, model: str) -> Decayed:
        sums = self._sums.get((task, model))
        if sums is None:
            sums = self._sums[(task, model)] = Decayed()
        return sums


def _remember(memory: collections.OrderedDict, key: str, value: object) -> None:
    memory[key] = value
    memory.move_to_end(key)
    if len(memory) > JOBS_REMEMBERED:
        memory.popitem(last=False)
