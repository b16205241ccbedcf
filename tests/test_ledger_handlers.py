"""The ledger's batch handling without a server (fleet_ledger.handler, fleet_ledger.consumer):
message stubs in, one outcome per message out; then the batch loop settles them, holds a
batch while PostgreSQL is away and hands it back on stop. PostgreSQL is a fake pool that
can be "down" or refuse one job's rows; the real writes are in test_ledger.py."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from fleet_ledger.consumer import BatchConsumer
from fleet_ledger.handler import REFUSED, BatchHandler
from fleet_ledger.metrics import LedgerMetrics
from fleet_shared.loop import Settler
from fleet_shared.outcome import DONE, DeadLetter
from fleet_shared.schema import Result, encode, result_decoder
from fleet_shared.subjects import Subjects
from tests.stubs import FakeJetStream, StubMsg

pytestmark = pytest.mark.anyio
SUBJECTS = Subjects("t")
WAIT_S = 10.0


class FakePool:
    """PostgreSQL as the writer sees it: ``acquire()`` -> a connection with ``transaction()``
    and ``execute``. ``down``: every statement fails like a lost connection; a row naming
    ``refuse`` fails like a value PostgreSQL will not store. Committed job ids: ``committed``."""

    def __init__(self, *, refuse: str | None = None) -> None:
        self.down = False
        self.refuse = refuse
        self.committed: list[str] = []
        self.transactions = 0

    @contextlib.asynccontextmanager
    async def acquire(self):
        if self.down:
            raise ConnectionRefusedError("PostgreSQL is away")
        yield _FakeConn(self)


class _FakeConn:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool
        self.pending: list[str] = []

    @contextlib.asynccontextmanager
    async def transaction(self):
        yield
        self.pool.transactions += 1
        self.pool.committed += self.pending  # only when the block did not raise

    async def execute(self, sql: str, *columns) -> None:
        job_ids = columns[0]
        if self.pool.refuse in job_ids:
            raise asyncpg.NumericValueOutOfRangeError("value out of range for type integer")
        self.pending += job_ids


def result_msg(job_id: str, seq: int = 1) -> StubMsg:
    data = encode(Result(job_id=job_id, success=True, content="ok", model="openai"))
    return StubMsg(data, subject=SUBJECTS.result(job_id), stream=SUBJECTS.results_stream, seq=seq)


def handler(pool: FakePool, metrics: LedgerMetrics | None = None) -> BatchHandler:
    return BatchHandler(name="results", decoder=result_decoder, pool=pool, metrics=metrics or LedgerMetrics())


def errors(metrics: LedgerMetrics, kind: str) -> int:
    return metrics.errors.get({"consumer": "results", "kind": kind})


# -- the handler --------------------------------------------------------------------------


async def test_a_message_that_does_not_decode_is_dead_lettered_the_rest_written():
    metrics = LedgerMetrics()
    good, bad = result_msg("a"), StubMsg(b'{"job_id": 7}', stream=SUBJECTS.results_stream)
    pending, settled = handler(FakePool(), metrics).decode([good, bad])
    assert [msg for msg, _ in pending] == [good]
    ((msg, outcome),) = settled
    assert msg is bad and isinstance(outcome, DeadLetter) and outcome.reason.startswith("undecodable")
    assert errors(metrics, "decode") == 1


async def test_a_batch_is_written_in_one_transaction_and_each_message_is_done():
    pool = FakePool()
    h = handler(pool)
    msgs = [result_msg("a", 1), result_msg("b", 2)]
    pending, _ = h.decode(msgs)
    written = await h.write(pending)
    assert written.outcomes == [(msgs[0], DONE), (msgs[1], DONE)] and written.committed == 2
    assert sorted(pool.committed) == ["a", "b"] and pool.transactions == 1
    (rows,) = written.rows
    assert sorted(rows.result_job_ids) == ["a", "b"]


async def test_a_row_postgres_refuses_is_dead_lettered_alone():
    metrics, pool = LedgerMetrics(), FakePool(refuse="bad")
    h = handler(pool, metrics)
    msgs = [result_msg("a", 1), result_msg("bad", 2), result_msg("c", 3)]
    pending, _ = h.decode(msgs)
    written = await h.write(pending)
    assert written.outcomes == [(msgs[0], DONE), (msgs[1], DeadLetter(REFUSED)), (msgs[2], DONE)]
    assert sorted(pool.committed) == ["a", "c"] and written.committed == 2
    assert errors(metrics, "permanent") == 1


async def test_postgres_away_is_raised_for_the_loop_to_hold_the_batch():
    pool = FakePool()
    pool.down = True
    h = handler(pool)
    pending, _ = h.decode([result_msg("a")])
    with pytest.raises(ConnectionRefusedError):
        await h.write(pending)


# -- the batch loop -------------------------------------------------------------------------


class OnceSource:
    """Hands out one batch, then waits out each fetch like a server with nothing new."""

    def __init__(self, msgs: list[StubMsg]) -> None:
        self.msgs = msgs

    async def fetch(self, batch: int, timeout: float):
        if self.msgs:
            taken, self.msgs = self.msgs, []
            return taken
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), timeout)
        raise NatsTimeoutError

    async def unsubscribe(self) -> None:
        pass


class Commits:
    def __init__(self) -> None:
        self.notices: list[tuple[str, list]] = []

    async def __call__(self, consumer: str, rows: list) -> None:
        self.notices.append((consumer, rows))


def batch_loop(msgs: list[StubMsg], pool: FakePool, js: FakeJetStream, commits: Commits) -> BatchConsumer:
    metrics = LedgerMetrics()
    return BatchConsumer(
        sub=OnceSource(msgs),
        handler=handler(pool, metrics),
        settler=Settler(js, SUBJECTS, name="ledger-results"),
        batch_size=10,
        fetch_timeout_s=0.01,
        max_backoff_s=0.01,
        metrics=metrics,
        on_commit=commits,
    )


async def test_the_loop_holds_the_batch_while_postgres_is_away_then_acks_after_commit():
    pool, js, commits = FakePool(), FakeJetStream(), Commits()
    pool.down = True
    good, junk = result_msg("a", 1), StubMsg(b"junk", stream=SUBJECTS.results_stream, seq=2)
    loop = batch_loop([good, junk], pool, js, commits)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(good.held.wait(), WAIT_S)  # in_progress: held, not redelivered
        assert good.settled == [] and pool.committed == []
        pool.down = False
        await asyncio.wait_for(good.done.wait(), WAIT_S)
    finally:
        await loop.stop(grace_s=1.0)
        await task
    assert good.settled == [("ack",)] and pool.committed == ["a"]
    assert junk.settled == [("term",)] and len(js.on(SUBJECTS.deadletter(SUBJECTS.results_stream))) == 1
    assert [consumer for consumer, _ in commits.notices] == ["results"]  # told after the acks


async def test_stopping_while_postgres_is_away_hands_the_batch_back():
    pool, js, commits = FakePool(), FakeJetStream(), Commits()
    pool.down = True
    msg = result_msg("a")
    loop = batch_loop([msg], pool, js, commits)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(msg.held.wait(), WAIT_S)
    await loop.stop(grace_s=WAIT_S)
    await task
    assert msg.settled == [("nak", 0.0)] and pool.committed == [] and commits.notices == []


class TricklingSource:
    """Messages arrive one at a time (``arrive``); a fetch returns what is there, or waits for
    the first to come, as ``fleet_shared.pull.PullSource`` does. Counts the fetches: each is a
    pull request on a real server."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StubMsg] = asyncio.Queue()
        self.fetches = 0
        self.first_fetched = asyncio.Event()

    def arrive(self, msg: StubMsg) -> None:
        self.queue.put_nowait(msg)

    async def fetch(self, batch: int, timeout: float):
        self.fetches += 1
        try:
            msgs = [await asyncio.wait_for(self.queue.get(), timeout)]
        except TimeoutError:
            raise NatsTimeoutError from None
        while len(msgs) < batch and not self.queue.empty():
            msgs.append(self.queue.get_nowait())
        self.first_fetched.set()
        return msgs

    async def unsubscribe(self) -> None:
        pass


async def test_a_batch_collects_on_the_server_during_the_linger_and_is_fetched_once():
    pool, js, commits, source = FakePool(), FakeJetStream(), Commits(), TricklingSource()
    metrics = LedgerMetrics()
    loop = BatchConsumer(
        sub=source,
        handler=handler(pool, metrics),
        settler=Settler(js, SUBJECTS, name="ledger-results"),
        batch_size=50,
        fetch_timeout_s=0.05,
        max_backoff_s=0.01,
        linger_s=0.3,
        metrics=metrics,
        on_commit=commits,
    )
    msgs = [result_msg(f"job{i}", seq=i + 1) for i in range(10)]
    task = asyncio.create_task(loop.run())
    try:
        source.arrive(msgs[0])
        await asyncio.wait_for(source.first_fetched.wait(), WAIT_S)
        lingering = source.fetches
        for msg in msgs[1:]:  # the rest trickle in while the first one lingers
            for _ in range(3):
                await asyncio.sleep(0)  # let the consumer run between arrivals
            source.arrive(msg)
        await asyncio.wait_for(msgs[-1].done.wait(), WAIT_S)
        fetched_meanwhile = source.fetches - lingering
    finally:
        await loop.stop(grace_s=1.0)
        await task
    assert pool.committed == [f"job{i}" for i in range(10)] and pool.transactions == 1
    assert all(msg.settled == [("ack",)] for msg in msgs)
    # what collected, in one fetch (and perhaps the next batch's first, already under way):
    # not one fetch per message
    assert fetched_meanwhile <= 2
