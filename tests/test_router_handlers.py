"""The router's handlers without a server: a message stub in, an outcome out, and what they
published on the in-memory bus. Jobs and escalations (fleet_router.handlers), max-deliveries
advisories (fleet_router.deadletter) and the sweep of jobs with no live worker
(fleet_router.orphans). Nothing here settles a message: the stubs stay unsettled."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
from nats.js.api import RawStreamMsg

from fleet_router.deadletter import MAX_DELIVERIES, DeadLetters, GiveUp
from fleet_router.handlers import RouterHandlers
from fleet_router.intake import FRESH_ID_HEADER
from fleet_router.orphans import NO_WORKER, OrphanWatch
from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_shared.config import Settings
from fleet_shared.outcome import DONE, DeadLetter, DeadLetterStored, Drop, Wait
from fleet_shared.publish import MSG_ID_HEADER, REPLY_TO_HEADER
from fleet_shared.schema import (
    Attempt,
    Decision,
    Dispatch,
    ErrorInfo,
    Job,
    Result,
    TaskType,
    dispatch_decoder,
    encode,
    event_decoder,
    result_decoder,
)
from fleet_shared.subjects import Subjects
from tests.stubs import FakeJetStream, FakeNats, StubMsg

pytestmark = pytest.mark.anyio
SETTINGS = Settings.from_env({}, subject_prefix="t", max_deliver=5)
SUBJECTS = Subjects("t")
REGISTRY = SETTINGS.registry()
INBOX = "_INBOX.requester"


class Router:
    """RouterHandlers over in-memory doubles, with a live state the test sets."""

    def __init__(self, state: LiveState | None = None) -> None:
        self.nc, self.js = FakeNats(), FakeJetStream()
        self.state = state or LiveState()
        self.handlers = RouterHandlers(
            nc=self.nc,
            js=self.js,
            subjects=SUBJECTS,
            settings=SETTINGS,
            policy=IntelligentModelRouter(REGISTRY),
            live_state=lambda: self.state,
        )

    def dispatched(self) -> list[Dispatch]:
        return [dispatch_decoder.decode(p.data) for p in self.js.published if p.subject.startswith("t.dispatch.")]

    def result(self, job_id: str) -> Result:
        (published,) = self.js.on(SUBJECTS.result(job_id))
        return result_decoder.decode(published.data)

    def decisions(self) -> list[Decision]:
        """Every decision the router told of: carried in a Dispatch or a Result (none goes
        out on its own any more: the assertion below keeps it so)."""
        assert self.js.on(SUBJECTS.decision_event) == []
        carried = [d.decision for d in self.dispatched()]
        carried += [
            result_decoder.decode(p.data).decision for p in self.js.published if p.subject.startswith("t.result.")
        ]
        return [d for d in carried if d is not None]


def job_msg(payload: dict | bytes, **kw) -> StubMsg:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return StubMsg(data, subject=SUBJECTS.submit, stream=SUBJECTS.jobs_stream, **kw)


def dispatch(job_id: str = "j1", *, attempts: list[Attempt] | None = None, model: str = "local_mlx") -> Dispatch:
    spec = REGISTRY.models[model]
    return Dispatch(
        job_id=job_id,
        job=Job(prompt="Write a sort function", complexity=2, metadata={"team": "a"}),
        task_type=TaskType.CODE_GENERATION,
        complexity=2,
        model=model,
        provider=spec.provider,
        provider_model=spec.provider_model,
        reasoning="simple: local first",
        attempts=attempts or [],
        reply_to=INBOX,
        accepted_at=time.time(),
    )


def failed(model: str, code: str = "timeout") -> Attempt:
    return Attempt(model=model, provider=REGISTRY.models[model].provider, success=False, error=ErrorInfo(code, "x"))


def everything_cooling(for_s: float = 5.0) -> LiveState:
    back = time.time() + for_s
    return LiveState(unavailable=frozenset(REGISTRY.models), cooling_until=dict.fromkeys(REGISTRY.models, back))


# -- jobs -------------------------------------------------------------------------------


async def test_a_job_is_dispatched_then_done():
    router = Router()
    outcome = await router.handlers.on_job(job_msg({"id": "j1", "prompt": "hello", "complexity": 1}))
    assert outcome == DONE
    (d,) = router.dispatched()
    assert d.job_id == "j1" and d.attempts == [] and d.model in REGISTRY.models
    assert router.js.on(SUBJECTS.dispatch(d.provider))[0].headers[MSG_ID_HEADER] == "dispatch:j1:1"
    (decision,) = router.decisions()
    assert decision.job_id == "j1" and decision.model == d.model


async def test_a_job_that_already_has_a_result_is_done_and_its_requester_gets_it():
    router = Router()
    earlier = encode(Result(job_id="j1", success=True, content="earlier"))
    await router.js.publish(SUBJECTS.result("j1"), earlier)
    msg = job_msg({"id": "j1", "prompt": "again"}, headers={REPLY_TO_HEADER: INBOX})
    assert await router.handlers.on_job(msg) == DONE
    assert router.nc.on(INBOX) == [earlier]
    assert router.dispatched() == [] and router.decisions() == []


async def test_a_job_whose_id_the_intake_made_is_looked_up_only_when_redelivered():
    """The first delivery of a job named by the intake (FRESH_ID_HEADER) skips the look-up
    for an earlier Result: none can exist. A Result planted under that id proves it: the
    first delivery is routed anyway; a redelivery (or a header naming another id) finds it."""
    router = Router()
    earlier = encode(Result(job_id="f1", success=True, content="earlier"))
    await router.js.publish(SUBJECTS.result("f1"), earlier)

    def fresh(delivery: int, marked: str = "f1") -> StubMsg:
        headers = {MSG_ID_HEADER: "f1", FRESH_ID_HEADER: marked, REPLY_TO_HEADER: INBOX}
        return job_msg({"prompt": "hello", "complexity": 1}, headers=headers, num_delivered=delivery)

    assert await router.handlers.on_job(fresh(1)) == DONE
    assert [d.job_id for d in router.dispatched()] == ["f1"] and router.nc.on(INBOX) == []
    assert await router.handlers.on_job(fresh(2)) == DONE
    assert len(router.dispatched()) == 1 and router.nc.on(INBOX) == [earlier]
    assert await router.handlers.on_job(fresh(1, marked="other")) == DONE
    assert len(router.dispatched()) == 1 and router.nc.on(INBOX) == [earlier, earlier]


async def test_a_job_that_does_not_decode_gets_a_failed_result_and_is_done():
    router = Router()
    msg = job_msg(b"not json", headers={MSG_ID_HEADER: "bad-1", REPLY_TO_HEADER: INBOX})
    assert await router.handlers.on_job(msg) == DONE
    result = router.result("bad-1")
    assert not result.success and result.error.code == "invalid_json"
    assert router.nc.on(INBOX) == [encode(result)]
    (decision,) = router.decisions()
    assert decision.objective == "not json" and decision.model is None
    assert router.dispatched() == []


async def test_a_job_waits_in_the_queue_while_every_model_cools_down():
    router = Router(everything_cooling(for_s=5.0))
    outcome = await router.handlers.on_job(job_msg({"id": "j1", "prompt": "hello", "complexity": 1}))
    assert isinstance(outcome, Wait) and 0 < outcome.delay_s <= 5.0 and "cooling" in outcome.why
    assert router.js.published == []  # nothing decided yet: it is routed again after the wait


async def test_a_job_out_of_deliveries_to_wait_with_fails_instead():
    router = Router(everything_cooling())
    msg = job_msg({"id": "j1", "prompt": "hello", "complexity": 1}, num_delivered=SETTINGS.max_deliver - 1)
    assert await router.handlers.on_job(msg) == DONE
    assert router.result("j1").error.code == "no_model_available"


# -- escalations --------------------------------------------------------------------------


async def test_an_escalation_that_does_not_decode_is_dead_lettered():
    outcome = await Router().handlers.on_escalation(StubMsg(b"\x00 not a dispatch", stream="ESCALATE"))
    assert isinstance(outcome, DeadLetter) and outcome.reason.startswith("undecodable")


async def test_an_escalation_goes_to_another_model_then_is_done():
    router = Router()
    prev = dispatch(attempts=[failed("local_mlx")])
    assert await router.handlers.on_escalation(StubMsg(encode(prev), stream="ESCALATE")) == DONE
    (d,) = router.dispatched()
    assert d.model != "local_mlx" and d.attempts == prev.attempts and d.reply_to == INBOX
    assert router.js.on(SUBJECTS.dispatch(d.provider))[0].headers[MSG_ID_HEADER] == "dispatch:j1:2"


async def test_an_escalation_keeps_the_inferred_task_type_and_complexity_of_the_first_attempt():
    # the job says nothing; its first attempt was routed as an analysis of complexity 6:
    # the escalation routes it as that again, whatever reading the text once more would say
    router = Router()
    first = msgspec.structs.replace(
        dispatch(attempts=[failed("local_mlx")]),
        job=Job(prompt="Write a haiku about the sea"),
        task_type=TaskType.ANALYSIS,
        complexity=6,
        task_type_source="inferred",
        complexity_source="inferred",
    )
    assert await router.handlers.on_escalation(StubMsg(encode(first), stream="ESCALATE")) == DONE
    (d,) = router.dispatched()
    assert (d.task_type, d.complexity) == (TaskType.ANALYSIS, 6)
    assert (d.task_type_source, d.complexity_source) == ("inferred", "inferred")
    assert "as at the first attempt" in d.reasoning


async def test_an_escalation_of_a_wrong_request_ends_the_job_with_its_error():
    router = Router()
    prev = dispatch(attempts=[failed("local_mlx", "invalid_request")])
    assert await router.handlers.on_escalation(StubMsg(encode(prev), stream="ESCALATE")) == DONE
    result = router.result("j1")
    assert not result.success and result.error.code == "invalid_request"
    assert result.attempts == prev.attempts and result.metadata == {"team": "a"}
    assert router.nc.on(INBOX) == [encode(result)] and router.dispatched() == []


async def test_an_escalation_whose_job_has_a_result_is_only_done():
    router = Router()
    await router.js.publish(SUBJECTS.result("j1"), encode(Result(job_id="j1", success=True)))
    prev = dispatch(attempts=[failed("local_mlx")])
    assert await router.handlers.on_escalation(StubMsg(encode(prev), stream="ESCALATE")) == DONE
    assert router.dispatched() == []


async def test_an_escalation_waits_while_every_model_left_cools_down():
    router = Router(everything_cooling(for_s=2.0))
    prev = dispatch(attempts=[failed("local_mlx")])
    outcome = await router.handlers.on_escalation(StubMsg(encode(prev), stream="ESCALATE"))
    assert isinstance(outcome, Wait) and 0 < outcome.delay_s <= 2.0


# -- giving up ----------------------------------------------------------------------------


async def test_giving_up_a_job_never_routed_records_its_decision_and_a_failed_result():
    router = Router()
    error = ErrorInfo(MAX_DELIVERIES, "given up")
    data = json.dumps({"prompt": "hello", "metadata": {"m": 2}}).encode()
    await router.handlers.give_up(GiveUp(job_id="g1", error=error, data=data, reply_to=INBOX))
    result = router.result("g1")
    assert result.error == error and result.metadata == {"m": 2}
    (decision,) = router.decisions()
    assert decision.objective == "hello" and decision.reasoning == f"given up: {MAX_DELIVERIES}"
    assert router.nc.on(INBOX) == [encode(result)]


async def test_giving_up_a_routed_job_keeps_its_attempts_and_never_replaces_a_result():
    router = Router()
    prev = dispatch(attempts=[failed("local_mlx")])
    error = ErrorInfo(MAX_DELIVERIES, "given up")
    await router.handlers.give_up(GiveUp(job_id="j1", error=error, prev=prev, reply_to=INBOX))
    result = router.result("j1")
    assert result.attempts == prev.attempts and result.task_type == TaskType.CODE_GENERATION
    await router.handlers.give_up(GiveUp(job_id="j1", error=ErrorInfo("other", "y"), prev=prev, reply_to=INBOX))
    assert router.result("j1") == result  # still the one Result, and the requester got it again
    assert router.nc.on(INBOX) == [encode(result), encode(result)]


# -- max-deliveries advisories ---------------------------------------------------------------


class GaveUp:
    def __init__(self) -> None:
        self.jobs: list[GiveUp] = []

    async def __call__(self, job: GiveUp) -> None:
        self.jobs.append(job)


def advisory(stream: str, seq: int) -> StubMsg:
    body = {"stream": stream, "consumer": "worker-openai", "stream_seq": seq, "deliveries": 5}
    return StubMsg(json.dumps(body).encode(), stream=SUBJECTS.advisories_stream)


async def test_an_advisory_that_does_not_decode_is_dropped():
    gave_up = GaveUp()
    outcome = await DeadLetters(FakeJetStream(), SUBJECTS, gave_up).on_advisory(StubMsg(b"??"))
    assert isinstance(outcome, Drop) and gave_up.jobs == []


async def test_an_advisory_whose_message_is_gone_is_done():
    gave_up = GaveUp()
    outcome = await DeadLetters(FakeJetStream(), SUBJECTS, gave_up).on_advisory(advisory("DISPATCH", 3))
    assert outcome == DONE and gave_up.jobs == []


async def test_a_job_given_up_gets_a_failed_result_and_its_message_is_dead_lettered():
    js, gave_up = FakeJetStream(), GaveUp()
    data = b'{"id": "j9", "prompt": "hi"}'
    headers = {REPLY_TO_HEADER: INBOX}
    js.stored[(SUBJECTS.jobs_stream, 3)] = RawStreamMsg(subject=SUBJECTS.submit, seq=3, data=data, headers=headers)
    outcome = await DeadLetters(js, SUBJECTS, gave_up).on_advisory(advisory(SUBJECTS.jobs_stream, 3))
    assert isinstance(outcome, DeadLetterStored)
    assert (outcome.stream, outcome.seq, outcome.subject, outcome.data) == (
        SUBJECTS.jobs_stream,
        3,
        SUBJECTS.submit,
        data,
    )
    assert outcome.headers == headers and outcome.reason.startswith(MAX_DELIVERIES)
    (job,) = gave_up.jobs
    assert job.job_id == "j9" and job.data == data and job.reply_to == INBOX and job.prev is None
    assert job.error.code == MAX_DELIVERIES and "delivered 5 times to worker-openai" in job.error.message


async def test_a_routed_job_given_up_keeps_its_dispatch():
    js, gave_up = FakeJetStream(), GaveUp()
    prev = dispatch(attempts=[failed("local_mlx")])
    js.stored[("DISPATCH", 4)] = RawStreamMsg(subject="t.dispatch.openai", seq=4, data=encode(prev))
    outcome = await DeadLetters(js, SUBJECTS, gave_up).on_advisory(advisory("DISPATCH", 4))
    assert isinstance(outcome, DeadLetterStored) and outcome.data == encode(prev)
    (job,) = gave_up.jobs
    assert job.prev == prev and job.reply_to == INBOX


async def test_an_undecodable_dispatch_given_up_is_dead_lettered_without_a_result():
    js, gave_up = FakeJetStream(), GaveUp()
    js.stored[("DISPATCH", 5)] = RawStreamMsg(subject="t.dispatch.openai", seq=5, data=b"junk")
    outcome = await DeadLetters(js, SUBJECTS, gave_up).on_advisory(advisory("DISPATCH", 5))
    assert isinstance(outcome, DeadLetterStored) and outcome.data == b"junk"
    assert gave_up.jobs == []


# -- jobs of a provider with no live worker ----------------------------------------------------


async def test_a_job_of_a_workerless_provider_is_escalated_as_a_no_worker_attempt():
    js = FakeJetStream()
    watch = OrphanWatch(FakeNats(), js, SUBJECTS, SETTINGS, REGISTRY)
    d = dispatch(model="claude", attempts=[failed("local_mlx")])
    assert await watch.handle("anthropic", StubMsg(encode(d), stream="DISPATCH")) == DONE
    (record,) = [event_decoder.decode(p.data) for p in js.on(SUBJECTS.attempt_event)]
    assert record.job_id == "j1" and record.attempt_no == 2 and record.attempt.error.code == NO_WORKER
    (escalated,) = js.on(SUBJECTS.escalate("anthropic"))
    assert escalated.headers[MSG_ID_HEADER] == "escalate:j1:2"
    assert dispatch_decoder.decode(escalated.data) == msgspec.structs.replace(d, attempts=[*d.attempts, record.attempt])
    assert watch.escalated == 1


async def test_an_undecodable_job_of_a_workerless_provider_is_dead_lettered():
    js = FakeJetStream()
    watch = OrphanWatch(FakeNats(), js, SUBJECTS, SETTINGS, REGISTRY)
    outcome = await watch.handle("anthropic", StubMsg(b"junk", stream="DISPATCH"))
    assert isinstance(outcome, DeadLetter) and js.published == [] and watch.escalated == 0
