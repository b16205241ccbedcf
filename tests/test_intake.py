"""Decoding raw job bytes: every rejection is a clear code and message."""

import pytest

from fleet_router.intake import Rejection, decode_job, job_id_for
from fleet_shared.subjects import is_valid_job_id

MODELS = {"local_mlx", "openai"}


def reject(data: bytes, **kw) -> Rejection:
    with pytest.raises(Rejection) as info:
        decode_job(data, max_bytes=kw.get("max_bytes", 10_000), known_models=MODELS)
    return info.value


@pytest.mark.parametrize(
    "data,code,needle",
    [
        (b"not json", "invalid_json", "not valid JSON"),
        (b"\xff\xfe\x00", "invalid_json", "not valid JSON"),
        (b"[1,2]", "invalid_job", "Expected `object`"),
        (b"{}", "invalid_job", "prompt"),
        (b'{"prompt": 5}', "invalid_job", "$.prompt"),
        (b'{"prompt": "x", "complexity": 0}', "invalid_job", "$.complexity"),
        (b'{"prompt": "x", "complexity": 11}', "invalid_job", "$.complexity"),
        (b'{"prompt": "x", "task_type": "poetry"}', "invalid_job", "$.task_type"),
        (b'{"prompt": "x", "id": "has.dot"}', "invalid_job", "$.id"),
        (b'{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}', "invalid_job", "not both"),
        (b'{"messages": [{"role": "robot", "content": "y"}]}', "invalid_job", "$.messages[0].role"),
        (b'{"prompt": "x", "context": {"force_model": "nope"}}', "unknown_model", "nope"),
        (b'{"prompt": "x", "context": {"force_model": 3}}', "invalid_job", "force_model"),
        (b"[" * 100_000, "invalid_job", "Expected `object`"),
        (
            b'{"prompt": "x", "context": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
            "invalid_json",
            "nested too deeply",
        ),
    ],
)
def test_rejections(data, code, needle):
    rej = reject(data, max_bytes=1_000_000)
    assert rej.code == code
    assert needle in rej.message


def test_too_large():
    rej = reject(b'{"prompt": "' + b"x" * 200 + b'"}', max_bytes=100)
    assert rej.code == "too_large" and "limit is 100" in rej.message


def test_valid_job_with_messages_and_known_forced_model():
    job = decode_job(
        b'{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],'
        b' "context": {"force_model": "openai"}, "metadata": {"k": [1, 2]}}',
        max_bytes=10_000,
        known_models=MODELS,
    )
    assert job.force_model == "openai"
    assert job.system_prompt() == "be brief"
    assert [m.content for m in job.chat()] == ["hi"]
    assert job.metadata == {"k": [1, 2]}


def test_job_id_prefers_payload_then_header_then_stream_position():
    assert job_id_for(b'{"id": "abc", "prompt": "x"}', "hdr", "s:1") == "abc"
    assert job_id_for(b"garbage", "hdr-1", "s:1") == "hdr-1"
    hashed = job_id_for(b"garbage", "not a token!", "s:1")
    assert hashed.isalnum() and hashed == job_id_for(b"", "not a token!", "s:2")
    assert job_id_for(b"garbage", None, "s:1") == job_id_for(b"garbage", None, "s:1")
    assert job_id_for(b"garbage", None, "s:1") != job_id_for(b"garbage", None, "s:2")


def test_fresh_job_ids_are_valid_and_distinct():
    from fleet_router.intake import fresh_job_id

    ids = [fresh_job_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(is_valid_job_id(i) and len(i) == 32 for i in ids)
