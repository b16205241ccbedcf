"""Reading the Prometheus text exposition back in tests (a strict, small parser)."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    """Every sample line as (name, labels, value); comments skipped; a malformed line fails."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise AssertionError(f"not a sample line: {line!r}")
        name, raw_labels, value = match.groups()
        labels = dict(_LABEL.findall(raw_labels or ""))
        samples.append((name, labels, float(value)))
    return samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0.0 when none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))
