"""Accuracy of the router's task-type and complexity inference on the labelled set.

The set (``data/inference/{dev,heldout}.jsonl``, described in ``data/inference/README.md``)
has one prompt per line with its task type and complexity band: ``easy`` (the complexity
should be <= 3), ``hard`` (>= 7) or ``medium`` (4..6). Rules were tuned looking at the dev
split only; the held-out split is the honest figure.

``python -m fleet_bench.inference_eval [dev|heldout]`` prints the figures (and, for dev,
the misses).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_router.inference import infer
from fleet_router.inference.lexicon import TYPES
from fleet_shared.schema import ChatMessage, Job

DATA = Path(__file__).parent / "data" / "inference"
SPLITS = ("dev", "heldout")
BANDS = ("easy", "medium", "hard")
#: The issue's targets: macro accuracy of the task type; share of easy prompts inferred
#: <= 3 and of hard prompts inferred >= 7.
TARGET_TYPE_MACRO = 0.90
TARGET_BAND = 0.85


@dataclass(frozen=True)
class Example:
    id: str
    job: Job
    task_type: str
    band: str
    source: str


def load(split: str) -> list[Example]:
    """The labelled examples of one split.

    Raises:
        ValueError: an unknown split, or a row without a prompt or messages.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rows = []
    with open(DATA / f"{split}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(_example(json.loads(line)))
    return rows


def _example(row: dict[str, Any]) -> Example:
    messages = [ChatMessage(m["role"], m["content"]) for m in row.get("messages", [])]
    job = Job(prompt=row.get("prompt"), messages=messages or None, system=row.get("system"))
    return Example(row["id"], job, row["task_type"], row["band"], row.get("source", "own"))


def band_of(complexity: int) -> str:
    return "easy" if complexity <= 3 else "hard" if complexity >= 7 else "medium"


def evaluate(examples: list[Example]) -> dict[str, Any]:
    """Per-type accuracy, macro accuracy, the confusion table (truth -> predicted -> count),
    the band accuracy per band, and the misses."""
    confusion: dict[str, Counter[str]] = {t.value: Counter() for t in TYPES}
    bands: dict[str, Counter[str]] = {b: Counter() for b in BANDS}
    misses = []
    for ex in examples:
        got = infer(ex.job)
        confusion[ex.task_type][got.task_type.value] += 1
        got_band = band_of(got.complexity)
        bands[ex.band][got_band] += 1
        if got.task_type.value != ex.task_type or got_band != ex.band:
            misses.append(
                {
                    "id": ex.id,
                    "want": f"{ex.task_type}/{ex.band}",
                    "got": f"{got.task_type.value}/{got.complexity}",
                    "signals": [*got.task_type_signals, *got.complexity_signals],
                }
            )
    per_type = {t: (c[t] / total if (total := sum(c.values())) else None) for t, c in confusion.items()}
    scored = [v for v in per_type.values() if v is not None]
    band_accuracy = {b: (c[b] / total if (total := sum(c.values())) else None) for b, c in bands.items()}
    return {
        "examples": len(examples),
        "type_accuracy": {t: _round(v) for t, v in per_type.items()},
        "type_macro_accuracy": _round(sum(scored) / len(scored)) if scored else None,
        "type_micro_accuracy": _round(sum(c[t] for t, c in confusion.items()) / max(1, len(examples))),
        "confusion": {t: dict(c) for t, c in confusion.items()},
        "band_accuracy": {b: _round(v) for b, v in band_accuracy.items()},
        "band_counts": {b: dict(c) for b, c in bands.items()},
        "misses": misses,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    """The confusion table as text: one row per true type, one column per inferred type."""
    short = {t.value: t.value.replace("code_", "c_")[:10] for t in TYPES}
    cols = [t.value for t in TYPES]
    width = max(len(s) for s in short.values()) + 1
    lines = ["truth \\ inferred".ljust(18) + "".join(short[c].rjust(width) for c in cols)]
    for truth in cols:
        row = confusion.get(truth, {})
        lines.append(short[truth].ljust(18) + "".join(str(row.get(c, 0)).rjust(width) for c in cols))
    return "\n".join(lines)


def summary(split: str, result: dict[str, Any]) -> str:
    acc = result["type_accuracy"]
    bands = result["band_accuracy"]
    return "\n".join(
        [
            f"{split}: {result['examples']} prompts; task type macro accuracy {result['type_macro_accuracy']:.1%}"
            f" (micro {result['type_micro_accuracy']:.1%}); easy <= 3: {bands['easy']:.1%},"
            f" hard >= 7: {bands['hard']:.1%}, medium 4..6: {bands['medium']:.1%}",
            "  per type: " + ", ".join(f"{t} {v:.0%}" for t, v in acc.items() if v is not None),
            confusion_table(result["confusion"]),
        ]
    )


def main(argv: list[str]) -> int:
    split = argv[0] if argv else "dev"
    result = evaluate(load(split))
    print(summary(split, result))
    if split == "dev":  # the held-out misses stay unseen while tuning
        for miss in result["misses"]:
            print(f"  {miss['id']}: want {miss['want']}, got {miss['got']}  {miss['signals']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
