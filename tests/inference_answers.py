"""The inference's answers on a fixed set of jobs, recorded so a rewrite for speed can be
checked to change none of them (``tests/test_inference.py::test_answers_unchanged``).

The jobs: every evaluation prompt unlabelled, and variants of each (cut in thirds,
upper-cased, with a system prompt, as the last turn of a conversation), the benchmark's
0.25-20 kB prompts, and odd inputs. Re-record (only when an answer is meant to change):

    .venv/bin/python -m tests.inference_answers

``INFERENCE_MODULE=<package>`` records another implementation's answers (the record was
made from the code before the speed pass, as a package of its own). Each job is answered
in three processes with different hash seeds and recording stops if they differ: which
of equally weighted signals is named must not depend on a process's set order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from fleet_shared.schema import ChatMessage, Job

RECORD = Path(__file__).parent / "data" / "inference_answers.txt.gz"  # one answer a line, after a digest of the jobs
_SEEDS = ("1", "2", "3")


def jobs() -> list[Job]:
    """The recorded jobs, always in the same order."""
    from fleet_bench import inference_eval
    from fleet_bench.inference_bench import prompts_of_size

    examples = [e for split in inference_eval.SPLITS for e in inference_eval.load(split)]
    out: list[Job] = []
    for e in examples:
        job = e.job
        out.append(Job(prompt=job.prompt, messages=job.messages, system=job.system))
        text = job.objective()
        third = max(1, len(text) // 3)
        out += [Job(prompt=text[:third]), Job(prompt=text[third:]), Job(prompt=text[: 2 * third])]
        out.append(Job(prompt=text.upper()))
        out.append(Job(prompt=text, system="You are a helpful assistant. Answer carefully and concisely."))
        out.append(
            Job(
                messages=[
                    ChatMessage(role="system", content="You are an expert."),
                    ChatMessage(role="user", content="Hi, I have a question for you."),
                    ChatMessage(role="assistant", content="Sure, go ahead."),
                    ChatMessage(role="user", content=text),
                ]
            )
        )
    for kb, count in ((0.25, 40), (1, 30), (2, 30), (4, 20), (8, 20), (20, 10)):
        out += prompts_of_size(kb, count, seed=11)
    odd = [" ", "\n\n\n", "?", "```", "```python\n```", "é" * 50, "数学の問題を解いて", "\ud800 broken", "a" * 30000]
    out += [Job(prompt=p) for p in odd]
    return out


def answer(job: Job) -> str:
    """One line: task type, complexity, their sources, and the named signals."""
    got = _infer()(job)
    signals = " | ".join(got.task_type_signals) + " || " + " | ".join(got.complexity_signals)
    return f"{got.task_type.value} {got.complexity} {got.task_type_source} {got.complexity_source}\t{signals}"


def _infer():  # the implementation answering: this repository's unless INFERENCE_MODULE says
    import importlib

    return importlib.import_module(os.environ.get("INFERENCE_MODULE", "fleet_router.inference")).infer


def answers() -> list[str]:
    return [answer(job) for job in jobs()]


def digest(jobs: list[Job]) -> str:
    """A digest of the jobs, in order: the record's first line, so it is checked against the same jobs."""
    text = "\n".join(job.__repr__() for job in jobs)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def recorded() -> tuple[str, list[str]]:
    """(the digest of the jobs the answers were recorded for, the answers)."""
    first, *lines = gzip.decompress(RECORD.read_bytes()).decode("utf-8").splitlines()
    return first, lines


def _record() -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", "from tests.inference_answers import answers; print('\\n'.join(answers()))"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        for seed in _SEEDS
    ]
    lines = [digest(jobs())]
    for seen in zip(*runs, strict=True):
        if len(set(seen)) != 1:
            raise SystemExit(f"the answer depends on the hash seed: {seen}")
        lines.append(seen[0])
    # gzip: the answers repeat themselves (~30 kB instead of ~400); zdiff shows what changed
    RECORD.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    print(f"{len(lines) - 1} answers recorded in {RECORD}")


if __name__ == "__main__":
    _record()
