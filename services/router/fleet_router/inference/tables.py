"""The lexicon compiled once, at import, into lookups a request is matched against.

A ``Terms`` holds single tokens (a dict: one set intersection finds every hit) and phrases
indexed by their first two tokens (a second set intersection, with the request's adjacent
token pairs, finds every two-token phrase; a longer one is then looked for in the text).
Each term carries its non-zero weights by dimension (a task type, or a complexity delta).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from fleet_router.inference import lexicon
from fleet_shared.schema import TaskType

#: The non-zero weights of a term: ((dimension, weight), ...).
Sparse = tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Terms:
    words: dict[str, Sparse]
    #: (first token, second token) -> ((" the phrase ", weights, longer than two tokens), ...)
    phrases: dict[tuple[str, str], tuple[tuple[str, Sparse, bool], ...]]

    def hits(self, tokens: set[str], norm: str, pairs: set[tuple[str, str]]) -> list[tuple[str, Sparse]]:
        """Every term found: ``tokens`` is the request's token set, ``norm`` its tokens
        joined by single spaces with a space at each end, ``pairs`` its adjacent tokens.
        Two set intersections (in C) find the words and the phrases' first two tokens; only
        a longer phrase is then looked for in ``norm``."""
        words = self.words
        found = [(w, words[w]) for w in words.keys() & tokens]
        phrases = self.phrases
        for pair in phrases.keys() & pairs:
            for phrase, weights, longer in phrases[pair]:
                if not longer or phrase in norm:
                    found.append((phrase[1:-1], weights))
        return found


def pairs_of(tokens: list[str]) -> set[tuple[str, str]]:
    """The adjacent tokens of ``tokens``: what a two-token phrase is matched against."""
    return set(pairwise(tokens))


def inflections(term: str) -> list[str]:
    """``term`` and, when it ends in ``*``, its usual inflections (of its last word)."""
    if not term.endswith("*"):
        return [term]
    base = term[:-1]
    stem = base[:-1] if base.endswith("e") else base
    forms = [base, base + "s", base + "es", base + "ed", base + "d", base + "ing", stem + "ing", stem + "ed"]
    if base.endswith("y"):
        forms += [base[:-1] + "ies", base[:-1] + "ied"]
    if len(base) > 2 and base[-1] not in "aeiouwxy" and base[-2] in "aeiou":
        forms += [base + base[-1] + "ing", base + base[-1] + "ed"]  # split -> splitting
    return list(dict.fromkeys(forms))


def parse(table: lexicon.Table) -> dict[str, float]:
    """Term -> weight for one table; a term listed twice is a mistake in the lexicon.

    Raises:
        ValueError: a term is listed twice, or is empty.
    """
    explicit: dict[str, float] = {}
    twice = []
    for weight, spec in table.items():
        for raw in spec.split("|"):
            term = " ".join(raw.split())
            if not term:
                raise ValueError(f"empty term in {spec!r}")
            if term in explicit:
                twice.append(term)
            explicit[term] = weight
    if twice:
        raise ValueError(f"terms listed twice: {', '.join(twice)}")
    out: dict[str, float] = {}
    for term, weight in explicit.items():
        for form in inflections(term):
            if form == term or form not in explicit:  # an explicit entry wins over an inflection
                out.setdefault(form, weight)
    return out


def compile_terms(tables: Sequence[Mapping[str, float]]) -> Terms:
    """One ``Terms`` whose dimension i holds table i's weight (absent where table i lacks the term)."""
    merged: dict[str, dict[int, float]] = {}
    for i, table in enumerate(tables):
        for term, weight in table.items():
            merged.setdefault(term, {})[i] = weight
    words: dict[str, Sparse] = {}
    phrases: dict[tuple[str, str], list[tuple[str, Sparse, bool]]] = {}
    for term, by_dim in merged.items():
        sparse = tuple(sorted(by_dim.items()))
        if " " in term:
            first, second, *rest = term.split()
            phrases.setdefault((first, second), []).append((f" {term} ", sparse, bool(rest)))
        else:
            words[term] = sparse
    return Terms(words, {k: tuple(v) for k, v in phrases.items()})


def _per_type(tables: Mapping[TaskType, lexicon.Table]) -> list[dict[str, float]]:
    return [parse(tables.get(t, {})) for t in lexicon.TYPES]


def _leading(tables: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{"^" + term: w for term, w in table.items()} for table in tables]


#: Dimensions of ``REQUEST_TERMS``: 0..5 a task type's weight (saturating), ``UP`` and
#: ``DOWN`` the complexity deltas, ``LEAD`` + i task type i's weight for a leading word.
UP, DOWN, LEAD = len(lexicon.TYPES), len(lexicon.TYPES) + 1, len(lexicon.TYPES) + 2
#: Every term looked up in a request, in one table (one set intersection per request).
REQUEST_TERMS = compile_terms(
    [
        *_per_type(lexicon.TYPE_TERMS),
        parse(lexicon.HARD_TERMS),
        {t: -w for t, w in parse(lexicon.EASY_TERMS).items()},
        *_leading(_per_type(lexicon.LEAD_TERMS)),
    ]
)
#: Terms that count only when code is attached (same dimensions as the task types).
CODE_TERMS = compile_terms(_per_type(lexicon.CODE_TERMS))
