"""Hostile input, found by hypothesis: wrong types, missing prompts, unknown task types,
complexities out of range, invalid UTF-8, JSON nested thousands deep, prompts over the size
limit, payloads near NATS's max payload, unknown ``force_model`` values, raw garbage.

Two tiers: the intake functions on thousands of examples (no I/O), then a few hundred
payloads through one running fleet, each checked against the intake's verdict: a rejected
payload gets a failed Result with the same code and message, an accepted one is served;
no service crashes and ordinary jobs alongside still succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_router.intake import Rejection, decode_job, job_id_for
from fleet_shared.registry import load_registry
from fleet_shared.schema import Dispatch, Result, TaskType, encode, result_decoder
from tests.chaos.load import DOCUMENTED_CODES
from tests.fleet_harness import running_fleet

MODELS = set(load_registry().models)
MAX_PROMPT_BYTES = 4096
REJECTION_CODES = {"invalid_json", "invalid_job", "unknown_model", "too_large"}

# -- strategies ---------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int) -> dict:
    value: object = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


job_fields = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=200) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "assistant", "robot", 5]),
                    "content": st.text(max_size=50) | st.integers(),
                }
            ),
            max_size=3,
        ),
        "task_type": st.sampled_from([t.value for t in TaskType]) | st.text(max_size=12) | st.integers(),
        "complexity": st.integers(-5, 20) | st.floats(allow_nan=False) | st.text(max_size=3),
        "max_tokens": st.integers(-10, 2_000_000) | st.text(max_size=3),
        "temperature": st.floats(-1, 3, allow_nan=False) | st.text(max_size=3),
        "system": st.text(max_size=30) | st.integers(),
        "context": st.fixed_dictionaries(
            {}, optional={"force_model": st.sampled_from(sorted(MODELS)) | st.text(max_size=10) | st.integers()}
        ),
        "metadata": json_values | st.integers(0, 80).map(nested),
        "stream": st.booleans() | st.text(max_size=3),
    },
)

oversized = st.integers(MAX_PROMPT_BYTES - 64, MAX_PROMPT_BYTES + 64).map(
    lambda n: json.dumps({"prompt": "x" * n}).encode()
)
deep = st.one_of(
    st.integers(50, 3000).map(lambda d: b'{"prompt": "deep", "metadata": ' + b"[" * d + b"]" * d + b"}"),
    # around our limit, and around msgspec's (~1000): deep enough to decode, too deep to re-encode
    (st.sampled_from([63, 64, 65, 996, 997, 998, 999, 1000]) | st.integers(60, 1100)).map(
        lambda d: b'{"prompt": "deep", "context": ' + b'{"k": ' * d + b"1" + b"}" * d + b"}"
    ),
)
bad_utf8 = st.binary(min_size=1, max_size=8).map(lambda b: b'{"prompt": "' + b"\xff" + b + b'"}')
hostile = st.one_of(
    st.binary(max_size=300),
    job_fields.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    oversized,
    deep,
    bad_utf8,
)


def verdict(data: bytes) -> str | None:
    """The code a payload must be rejected with, None when it is a valid job."""
    try:
        decode_job(data, max_bytes=MAX_PROMPT_BYTES, known_models=MODELS)
    except Rejection as rej:
        assert rej.code in REJECTION_CODES and rej.message
        return rej.code
    return None


# -- tier 1: the intake, no I/O -----------------------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_intake_accepts_or_rejects_clearly_and_never_raises(data):
    code = verdict(data)
    job_id = job_id_for(data, None, "fuzz:1:0")
    assert job_id and len(job_id) <= 128
    if code is None:  # what is accepted can be routed on: it re-encodes into a Dispatch
        job = decode_job(data, max_bytes=MAX_PROMPT_BYTES, known_models=MODELS)
        dispatch = Dispatch(
            job_id=job_id,
            job=job,
            task_type=TaskType.COMPLETION,
            complexity=5,
            model="m",
            provider="openai",
            provider_model="m",
            reasoning="r",
        )
        assert msgspec.json.decode(encode(dispatch), type=Dispatch) == dispatch


@pytest.mark.parametrize("depth,code", [(63, None), (64, None), (65, "invalid_json"), (997, "invalid_json")])
def test_nesting_is_limited_below_what_every_process_can_decode(depth, code):
    # msgspec's own limit depends on the caller's stack depth, so a job the router could
    # decode might not decode inside a worker: the intake's explicit limit keeps it out.
    data = b'{"prompt": "deep", "metadata": ' + b'{"k": ' * depth + b"1" + b"}" * depth + b"}"
    try:
        decode_job(data, max_bytes=len(data), known_models=MODELS)
    except Rejection as rej:
        assert (rej.code, "nested too deeply" in rej.message) == (code, True)
    else:
        assert code is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.binary(max_size=30))
def test_any_header_id_gives_a_valid_job_id(msg_id, data):
    job_id = job_id_for(data, msg_id or None, "fuzz:2:0")
    assert 0 < len(job_id) <= 128 and all(c.isalnum() or c in "_-" for c in job_id)


# -- tier 2: through a running fleet ------------------------------------------------------


def draw_payloads(n: int) -> list[bytes]:
    """``n`` hostile payloads from hypothesis (shrinking is for tier 1; here volume counts)."""
    drawn: list[bytes] = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(hostile)
    def draw(data):
        drawn.append(data)

    draw()
    return drawn


def near_max_payload(max_payload: int) -> list[tuple[bytes, str, str]]:
    """(payload, via, expected code) just under NATS's limit. On <p>.request the router's
    own headers would push the stored copy over it: refused, not a dropped connection."""
    body = lambda margin: json.dumps({"prompt": "y" * (max_payload - margin)}).encode()  # noqa: E731
    return [
        (body(60), "request", "not_accepted"),
        (body(60), "submit", "too_large"),
        (body(3000), "request", "too_large"),
    ]


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_hostile_payloads_through_the_fleet(make_settings, database_url, caplog):
    caplog.set_level(logging.WARNING)
    settings_ = make_settings(database_url=database_url, max_prompt_bytes=MAX_PROMPT_BYTES, ack_wait_s=5.0)
    drawn = draw_payloads(250)
    async with running_fleet(settings_) as (fleet, watch):
        cases, seen = [], set()
        planned = [(data, "request" if i % 3 == 0 else "submit", verdict(data)) for i, data in enumerate(drawn)]
        for i, (data, via, code) in enumerate(planned + near_max_payload(fleet.nc.max_payload)):
            msg_id = f"fuzz-{i}"
            job_id = job_id_for(data, msg_id, "")
            if job_id not in seen:  # two payloads naming the same id are one job
                seen.add(job_id)
                cases.append((job_id, msg_id, data, via, code))
        normal = [f"normal-{i}" for i in range(20)]
        replies = await asyncio.gather(
            *(_send(fleet, job_id, msg_id, data, via) for job_id, msg_id, data, via, _ in cases),
            *(fleet.request({"id": j, "prompt": "an ordinary job", "complexity": 1}) for j in normal),
        )
        for (job_id, _, data, _, code), reply in zip(cases, replies[: len(cases)], strict=True):
            _check(job_id, data, code, reply if reply is not None else await fleet.result(job_id))
        assert all(r.success for r in replies[len(cases) :])
        assert (await fleet.request({"prompt": "still serving?", "complexity": 1})).success
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"a service failed on hostile input: {errors[:3]}"
    assert sum(1 for c in cases if c[4]) >= len(cases) // 2  # most payloads were hostile indeed


async def _send(fleet, job_id: str, msg_id: str, data: bytes, via: str) -> Result | None:
    headers = {"Nats-Msg-Id": msg_id}
    if via == "request":
        msg = await fleet.nc.request(fleet.subjects.request, data, timeout=30, headers=headers)
        return result_decoder.decode(msg.data)
    await fleet.js.publish(fleet.subjects.submit, data, headers=headers)
    return None


def _check(job_id: str, data: bytes, code: str | None, result: Result) -> None:
    """A rejected payload failed with the intake's code and message; any other was served."""
    assert result.job_id == job_id
    if code is None:
        assert result.success or (result.error and result.error.code in DOCUMENTED_CODES), (data[:120], result)
        return
    assert not result.success and result.error.code == code, (data[:120], result.error)
    if code in REJECTION_CODES:
        with pytest.raises(Rejection) as rejected:
            decode_job(data, max_bytes=MAX_PROMPT_BYTES, known_models=MODELS)
        assert result.error.message == rejected.value.message
