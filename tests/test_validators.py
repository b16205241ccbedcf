"""The quality checks as pure functions (fleet_workers.validators, fleet_workers.schema_check):
each with answers it must accept and answers it must reject."""

from __future__ import annotations

import pytest

from fleet_shared.config import Settings
from fleet_shared.labels import QUALITY_ERRORS, error_class
from fleet_shared.schema import Job, ResponseFormat, TaskType
from fleet_workers.schema_check import schema_errors
from fleet_workers.validators import (
    check_code,
    check_empty,
    check_json,
    check_refusal,
    check_schema,
    check_truncated,
    first_failure,
)

JSON_JOB = Job(prompt="give me JSON", response_format=ResponseFormat(type="json_object"))
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "pet": {"$ref": "#/$defs/pet"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "$defs": {"pet": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["kind"]}]}},
}
SCHEMA_JOB = Job(prompt="a person", response_format=ResponseFormat(type="json_schema", json_schema=PERSON))


@pytest.mark.parametrize("answer", ["", "   ", "\n\t "])
def test_empty_answers_fail(answer):
    assert check_empty(answer) == "the answer is empty"


def test_a_one_character_answer_is_not_empty():
    assert check_empty("4") is None


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with that request.",
        "Sorry, I can\u2019t help with this.",
        "I am unable to provide that information.",
        "As an AI language model, I cannot provide medical advice.",
        "I won't write that.",
        "Unfortunately, I cannot comply with this request.",
    ],
)
def test_refusals_fail(answer):
    assert "refused" in (check_refusal(answer) or "")


@pytest.mark.parametrize(
    "answer",
    [
        "You cannot divide by zero, so the function raises ZeroDivisionError.",
        "The function cannot fail: it returns early when the list is empty.",
        "I'm sorry for the confusion earlier: the answer is 4.",
        "I can't stress this enough: always close your files. Use `with open(...)`.",
        # a caveat, then the help: long answers are never refusals
        "I cannot provide legal advice, but here is how the statute is usually read. " + "Details. " * 60,
    ],
)
def test_answers_that_merely_say_cannot_pass(answer):
    assert check_refusal(answer) is None


def test_json_is_checked_only_when_asked():
    assert check_json("not json", Job(prompt="hi")) is None
    assert check_json('{"a": 1}', JSON_JOB) is None
    assert "not JSON" in (check_json('{"a": 1', JSON_JOB) or "")
    assert "JSON object" in (check_json("[1, 2]", JSON_JOB) or "")
    assert "not JSON" in (check_json('```json\n{"a": 1}\n```', JSON_JOB) or "")  # fenced is not JSON


def test_schema_accepts_a_valid_answer():
    assert check_schema('{"name": "Ada", "age": 36, "tags": ["a"], "pet": null}', SCHEMA_JOB) is None
    assert check_schema('{"name": "Ada", "age": 36.0, "pet": {"kind": "cat"}}', SCHEMA_JOB) is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ('{"name": "Ada"}', "missing required property 'age'"),
        ('{"name": "Ada", "age": "36"}', "$.age: expected integer, got string"),
        ('{"name": "Ada", "age": true}', "$.age: expected integer, got boolean"),
        ('{"name": "Ada", "age": -1}', "$.age: -1 is less than 0"),
        ('{"name": "", "age": 1}', "$.name: shorter than 1"),
        ('{"name": "Ada", "age": 1, "tags": ["c"]}', "$.tags[0]: 'c' is not one of"),
        ('{"name": "Ada", "age": 1, "tags": ["a", "b", "a"]}', "more than 2 items"),
        ('{"name": "Ada", "age": 1, "x": 1}', "unexpected property 'x'"),
        ('{"name": "Ada", "age": 1, "pet": {}}', "$.pet: matches 0 of the anyOf"),
        ("[]", "expected object, got array"),
    ],
)
def test_schema_rejects_an_invalid_answer(answer, reason):
    assert reason in (check_schema(answer, SCHEMA_JOB) or "")


def test_schema_ignores_keywords_outside_its_subset_and_openai_wrappers_work():
    assert schema_errors("x", {"type": "string", "format": "email", "contentMediaType": "a/b"}) == []
    wrapped = {"name": "n", "schema": {"type": "object", "required": ["a"]}}
    assert schema_errors({}, wrapped) == []  # the wrapper itself has no constraints ...
    job = Job(prompt="p", response_format=ResponseFormat(type="json_schema", json_schema=wrapped))
    assert "missing required property 'a'" in (check_schema("{}", job) or "")  # ... check_schema unwraps it


def test_a_self_referencing_schema_terminates():
    loop = {"$ref": "#"}
    assert schema_errors(1, loop) == []


CODE = TaskType.CODE_GENERATION


def test_code_parses_in_fenced_blocks():
    good = 'Here:\n```python\ndef f(x):\n    return x * 2\n```\nand config:\n```json\n{"a": 1}\n```'
    assert check_code(good, Job(prompt="p"), CODE) is None
    bad_py = "Here:\n```python\ndef f(x)\n    return x\n```"
    assert "code block 1 is not valid Python" in (check_code(bad_py, Job(prompt="p"), CODE) or "")
    bad_json = "```py\nx = 1\n```\n```json\n{a: 1}\n```"
    assert "code block 2 is not valid JSON" in (check_code(bad_json, Job(prompt="p"), CODE) or "")


def test_code_only_answers_are_parsed_and_prose_or_other_languages_are_not():
    assert check_code("def f(x):\n    return x\n", Job(prompt="p"), CODE) is None
    assert "the answer is not valid Python" in (check_code("def f(x:\n  pass", Job(prompt="p"), CODE) or "")
    assert check_code("You could write def f(x: of course.", Job(prompt="p"), CODE) is None  # prose
    assert check_code("```rust\nfn main( {\n```", Job(prompt="p"), CODE) is None  # a language we do not parse
    assert check_code("```python\ndef f(:\n```", Job(prompt="p"), TaskType.REASONING) is None  # not a code task


def test_an_unclosed_fence_is_parsed_to_the_end():
    assert "not valid Python" in (check_code("```python\ndef f(x):\n    return (x", Job(prompt="p"), CODE) or "")


def test_truncation_fails_only_jobs_that_reject_it():
    strict = Job(prompt="p", context={"reject_truncated": True})
    assert check_truncated(True, strict) is not None
    assert check_truncated(False, strict) is None
    assert check_truncated(True, Job(prompt="p")) is None


def test_a_non_boolean_reject_truncated_is_rejected_on_decode():
    with pytest.raises(ValueError, match="reject_truncated"):
        Job(prompt="p", context={"reject_truncated": "yes"})


def test_first_failure_names_the_check_and_respects_the_enabled_set():
    error = first_failure(JSON_JOB, "  ", task_type="completion", truncated=False, called_tools=False)
    assert error is not None and error.code == "quality_empty"
    assert (
        first_failure(JSON_JOB, "{", task_type="completion", truncated=False, called_tools=False).code == "quality_json"
    )
    off = first_failure(
        JSON_JOB, "{", task_type="completion", truncated=False, called_tools=False, checks=frozenset({"empty"})
    )
    assert off is None
    # a tool call's empty text is not an empty answer
    assert first_failure(Job(prompt="p"), "", task_type="completion", truncated=False, called_tools=True) is None


def test_quality_codes_are_in_the_closed_sets_and_the_settings_validate():
    assert {
        "quality_empty",
        "quality_refusal",
        "quality_json",
        "quality_schema",
        "quality_code",
        "quality_truncated",
    } == QUALITY_ERRORS
    assert error_class("quality_refusal") == "quality"
    assert Settings.from_env({"FLEET_QUALITY_CHECKS": "empty, json"}).quality_check_set() == {"empty", "json"}
    assert Settings.from_env({}).quality_check_set() >= {"empty", "refusal", "json", "schema", "code", "truncated"}
    with pytest.raises(Exception, match="unknown quality checks"):
        Settings.from_env({"FLEET_QUALITY_CHECKS": "empty,spelling"})
