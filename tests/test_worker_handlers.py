"""The worker's handler without a server (fleet_workers.handler): a Dispatch stub in, an
outcome out, and what was published on the in-memory bus. The provider is a fake adapter,
the gate and the health reporter are fakes that record what they were told."""

from __future__ import annotations

import time

import pytest
from nats.errors import ConnectionClosedError

from fleet_shared.config import Settings
from fleet_shared.outcome import DONE, DeadLetter, Requeue, Wait
from fleet_shared.publish import MSG_ID_HEADER
from fleet_shared.runtime import GEN0_THRESHOLD
from fleet_shared.schema import Attempt, Dispatch, ErrorInfo, Job, TaskType, dispatch_decoder, encode, event_decoder
from fleet_shared.subjects import Subjects
from fleet_workers.gate import Gate, Verdict
from fleet_workers.handler import DispatchHandler
from fleet_workers.providers.base import ProviderError, ProviderReply
from fleet_workers.service import LIVE_OBJECTS_PER_CALL, MAX_GEN0_THRESHOLD, gen0_threshold
from tests.stubs import FakeJetStream, FakeNats, StubMsg

pytestmark = pytest.mark.anyio
SETTINGS = Settings.from_env({}, subject_prefix="t", max_deliver=5)
SUBJECTS = Subjects("t")
REGISTRY = SETTINGS.registry()
INBOX = "_INBOX.requester"
OK = ProviderReply(content="def sort(xs): return sorted(xs)", tokens_in=120, tokens_out=30, finish_reason="stop")


class FakeAdapter:
    provider = "openai"

    def __init__(self, reply: ProviderReply | None = None, error: Exception | None = None) -> None:
        self.reply, self.error = reply, error
        self.requests: list = []

    async def call(self, request, on_delta=None) -> ProviderReply:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return self.reply

    async def aclose(self) -> None:
        pass


class FixedGate(Gate):
    """A gate whose verdict the test sets."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(None, None, key_fingerprint="")
        self.verdict = verdict

    async def check(self, d, spec) -> Verdict:
        return self.verdict


class Reporter:
    def __init__(self) -> None:
        self.told: list[tuple] = []

    async def failure(self, model: str, code: str, retry_after_s: float | None) -> None:
        self.told.append(("failure", model, code, retry_after_s))

    async def success(self, model: str, limit_reset_s: float | None) -> None:
        self.told.append(("success", model, limit_reset_s))


class Worker:
    """A DispatchHandler for openai over in-memory doubles."""

    def __init__(self, adapter: FakeAdapter, *, gate: Gate | None = None, js: FakeJetStream | None = None) -> None:
        self.nc, self.js, self.adapter, self.reporter = FakeNats(), js or FakeJetStream(), adapter, Reporter()
        self.handler = DispatchHandler(
            nc=self.nc,
            js=self.js,
            subjects=SUBJECTS,
            settings=SETTINGS,
            provider="openai",
            registry=REGISTRY,
            adapter=adapter,
            gate=gate or Gate(None, None, key_fingerprint=""),
            reporter=self.reporter,
        )

    def escalated(self) -> list[Dispatch]:
        return [dispatch_decoder.decode(p.data) for p in self.js.on(SUBJECTS.escalate("openai"))]

    def records(self) -> list:
        return [event_decoder.decode(p.data) for p in self.js.on(SUBJECTS.attempt_event)]


def dispatch(*, prompt: str = "Write a sort function", attempts: list[Attempt] | None = None) -> Dispatch:
    spec = REGISTRY.models["openai"]
    return Dispatch(
        job_id="j1",
        job=Job(prompt=prompt, metadata={"team": "a"}),
        task_type=TaskType.CODE_GENERATION,
        complexity=5,
        model="openai",
        provider="openai",
        provider_model=spec.provider_model,
        reasoning="escalated",
        attempts=attempts or [],
        reply_to=INBOX,
        accepted_at=time.time(),
    )


def dispatch_msg(d: Dispatch, **kw) -> StubMsg:
    return StubMsg(encode(d), subject=SUBJECTS.dispatch("openai"), stream=SUBJECTS.dispatch_stream, **kw)


async def test_an_answer_becomes_the_result_then_done():
    worker = Worker(FakeAdapter(OK))
    earlier = Attempt(model="local_mlx", provider="lmstudio", success=False, error=ErrorInfo("timeout", "slow"))
    msg = dispatch_msg(dispatch(attempts=[earlier]))
    assert await worker.handler.handle(msg) == DONE
    (stored,) = worker.js.on(SUBJECTS.result("j1"))
    assert worker.nc.on(INBOX) == [stored.data]  # the requester is answered with the same Result
    assert b"def sort" in stored.data and b'"success":true' in stored.data
    assert worker.escalated() == [] and worker.records() == []
    assert worker.reporter.told == [("success", "openai", None)]
    assert msg.settled == []  # the loop settles, not the handler


async def test_a_failed_call_is_recorded_and_escalated_then_done():
    error = ProviderError("rate_limited", "429 slow down", status=429, retry_after_s=3.0)
    worker = Worker(FakeAdapter(error=error))
    d = dispatch()
    assert await worker.handler.handle(dispatch_msg(d)) == DONE
    (record,) = worker.records()
    assert record.attempt_no == 1 and record.attempt.error == ErrorInfo("rate_limited", "429 slow down")
    (escalation,) = worker.escalated()
    assert escalation.attempts == [record.attempt] and escalation.job == d.job
    assert worker.js.on(SUBJECTS.escalate("openai"))[0].headers[MSG_ID_HEADER] == "escalate:j1:1"
    assert worker.js.on(SUBJECTS.result("j1")) == []
    assert worker.reporter.told == [("failure", "openai", "rate_limited", 3.0)]


async def test_a_model_cooling_down_leaves_the_job_in_the_queue_without_a_call():
    adapter = FakeAdapter(OK)
    worker = Worker(adapter, gate=FixedGate(Verdict(wait_s=2.0)))
    outcome = await worker.handler.handle(dispatch_msg(dispatch()))
    assert isinstance(outcome, Wait) and outcome.delay_s == 2.0
    assert adapter.requests == [] and worker.js.published == []


async def test_a_job_that_waited_often_is_put_back_as_a_fresh_message():
    worker = Worker(FakeAdapter(OK), gate=FixedGate(Verdict(wait_s=2.0)))
    msg = dispatch_msg(dispatch(), num_delivered=SETTINGS.max_deliver - 1, seq=17)
    outcome = await worker.handler.handle(msg)
    assert isinstance(outcome, Requeue) and outcome.msg_id == "wait:j1:1:17"


async def test_a_key_known_to_be_rejected_fails_the_attempt_without_a_call():
    adapter = FakeAdapter(OK)
    refused = ErrorInfo("auth", "openai: the configured API key was rejected; not called")
    worker = Worker(adapter, gate=FixedGate(Verdict(error=refused)))
    assert await worker.handler.handle(dispatch_msg(dispatch())) == DONE
    assert adapter.requests == []
    (escalation,) = worker.escalated()
    assert escalation.attempts[-1].error == refused
    assert worker.reporter.told == []  # the board knows already: it said so


async def test_an_answer_too_large_for_the_bus_escalates_with_what_it_spent():
    big = ProviderReply(content="x" * 4000, tokens_in=100, tokens_out=2000)
    worker = Worker(FakeAdapter(big), js=FakeJetStream(max_payload=3000))
    assert await worker.handler.handle(dispatch_msg(dispatch())) == DONE
    assert worker.js.on(SUBJECTS.result("j1")) == []
    (escalation,) = worker.escalated()
    last = escalation.attempts[-1]
    assert not last.success and last.error.code == "bad_response" and last.tokens_out == 2000 and last.cost_usd > 0
    assert worker.reporter.told == [("failure", "openai", "bad_response", None)]


async def test_a_dispatch_that_does_not_decode_is_dead_lettered():
    adapter = FakeAdapter(OK)
    worker = Worker(adapter)
    outcome = await worker.handler.handle(StubMsg(b"junk", stream=SUBJECTS.dispatch_stream))
    assert isinstance(outcome, DeadLetter) and outcome.reason.startswith("undecodable")
    assert adapter.requests == [] and worker.js.published == []


async def test_an_answer_failing_a_quality_check_escalates_with_what_it_spent():
    refusal = ProviderReply(content="I'm sorry, but I can't help with that.", tokens_in=120, tokens_out=12)
    worker = Worker(FakeAdapter(refusal))
    assert await worker.handler.handle(dispatch_msg(dispatch())) == DONE
    assert worker.js.on(SUBJECTS.result("j1")) == [] and worker.nc.on(INBOX) == []  # never accepted
    (record,) = worker.records()
    (escalation,) = worker.escalated()
    last = escalation.attempts[-1]
    assert record.attempt == last
    assert not last.success and last.error.code == "quality_refusal" and "refused" in last.error.message
    assert last.tokens_in == 120 and last.tokens_out == 12 and last.cost_usd > 0  # spent: kept
    assert worker.reporter.told == [("failure", "openai", "quality_refusal", None)]


async def test_code_that_does_not_parse_fails_a_code_task():
    broken = ProviderReply(content="```python\ndef sort(xs)\n    return sorted(xs)\n```", tokens_in=10, tokens_out=10)
    worker = Worker(FakeAdapter(broken))
    assert await worker.handler.handle(dispatch_msg(dispatch())) == DONE
    (escalation,) = worker.escalated()
    assert escalation.attempts[-1].error.code == "quality_code"


async def test_checks_turned_off_accept_the_same_answer():
    worker = Worker(FakeAdapter(ProviderReply(content="", tokens_in=1, tokens_out=0)))
    worker.handler.quality_checks = frozenset()  # as FLEET_QUALITY_CHECKS="" would
    assert await worker.handler.handle(dispatch_msg(dispatch())) == DONE
    assert worker.escalated() == [] and len(worker.js.on(SUBJECTS.result("j1"))) == 1


async def test_a_result_whose_store_fails_is_not_done_though_its_requester_was_answered():
    # the answer does not wait for the store's ack; the message is not settled without it,
    # so its redelivery serves the job again (the requester ignores a second answer)
    worker = Worker(FakeAdapter(OK), js=FakeJetStream(fail_on={SUBJECTS.result("j1"): ConnectionClosedError()}))
    msg = dispatch_msg(dispatch())
    with pytest.raises(ConnectionClosedError):
        await worker.handler.handle(msg)
    assert len(worker.nc.on(INBOX)) == 1 and msg.settled == []


def test_a_worker_holding_thousands_of_calls_raises_its_gc_threshold_above_them() -> None:
    assert gen0_threshold(SETTINGS) <= GEN0_THRESHOLD  # a few dozen calls: the fleet's default applies
    many = Settings.from_env({}, subject_prefix="t", worker_concurrency=2900)
    assert gen0_threshold(many) == 2900 * LIVE_OBJECTS_PER_CALL > GEN0_THRESHOLD
    most = Settings.from_env({}, subject_prefix="t", worker_concurrency=10_000)
    assert gen0_threshold(most) == MAX_GEN0_THRESHOLD
