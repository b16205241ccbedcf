"""The router's feed of outcomes for adaptive routing: the fleet's Results replayed from a
bounded look-back, so every router (a new or restarted one too) holds the same statistics.

Reads ``<p>.result.*`` (RESULTS, a kept stream) with an ordered consumer starting
``lookback_s`` ago (deliver policy by start time): each Result carries every attempt of its
job, failed ones included, and the task type it was routed as. The EVENTS stream, where
failed attempts are also published as they happen, is a work queue the ledger drains: it
cannot be replayed, and a second consumer on it is refused. So an attempt counts when its
job ends (for a job that escalates, seconds after the attempt). Users' scores
(``<p>.feedback``, ``fleet_shared.schema.Feedback``) are replayed the same way from the
FEEDBACK stream, over the same look-back, and credited to the model whose answer the
router read in that job's Result (``PerformanceBook.feedback``; a score read before its
Result waits for it). Each outcome is folded in at its message's stream timestamp (see
``fleet_router.adaptive`` for why this, and not a shared KV aggregate).
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from fleet_router.state import LiveStateTracker
from fleet_shared.delivery import stream_time
from fleet_shared.schema import Attempt, feedback_decoder
from fleet_shared.subjects import Subjects

log = logging.getLogger("fleet.router.feed")


class _Outcome(msgspec.Struct):
    """The part of a Result the statistics need (decoding skips the rest)."""

    job_id: str
    task_type: str | None = None
    attempts: list[Attempt] = []


_outcome_decoder = msgspec.json.Decoder(_Outcome)


class ReplayConfig(ConsumerConfig):
    """A by-start-time consumer config that survives an ordered consumer's reset.

    On a gap or a missed heartbeat nats-py recreates the consumer from the next sequence
    (deliver policy by start sequence) but leaves ``opt_start_time`` set, which the server
    refuses (err 10094): the feed would stop for good. Switching to a sequence drops the time.
    """

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "deliver_policy" and value == DeliverPolicy.BY_START_SEQUENCE:
            super().__setattr__("opt_start_time", None)


class PerformanceFeed:
    """Folds the fleet's outcomes into ``tracker`` (``start``/``stop``)."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, subjects: Subjects, tracker: LiveStateTracker, *, lookback_s: float
    ) -> None:
        self.nc, self.js, self.subjects, self.tracker = nc, js, subjects, tracker
        self.lookback_s = lookback_s
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        since = datetime.fromtimestamp(time.time() - self.lookback_s, tz=UTC)
        subj = self.subjects
        # one config each: nats-py's ordered consumer rewrites its config when it resets
        # (deliver by sequence from where it was), so a shared one would corrupt the other
        for subject, cb in ((subj.result_all, self.on_result), (subj.feedback, self.on_feedback)):
            replay = ReplayConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
            self._subs.append(await self.js.subscribe(subject, cb=cb, ordered_consumer=True, config=replay))

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def on_result(self, msg: Msg) -> None:
        try:
            outcome = _outcome_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        at = stream_time(msg)
        for attempt in outcome.attempts:
            self.tracker.observe(attempt, at=at, job_id=outcome.job_id, task_type=outcome.task_type)

    async def on_feedback(self, msg: Msg) -> None:
        try:
            feedback = feedback_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return  # the ledger answers bad feedback (its reply says why); here it is only a signal
        self.tracker.performance.feedback(feedback.job_id, feedback.score, at=stream_time(msg))
