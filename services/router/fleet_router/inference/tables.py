"""The lexicon compiled once, at import, into lookups a request is matched against.

A ``Terms`` holds single tokens (a dict: one set intersection finds every hit) and phrases
indexed by their rarest-looking token (a second intersection with the same token set finds
the phrases that may occur; only those are looked for in the text, a C substring search
each). Each term carries its non-zero weights by dimension (a task type, or a complexity
delta).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fleet_router.inference import lexicon
from fleet_shared.schema import TaskType

#: The non-zero weights of a term: ((dimension, weight), ...).
Sparse = tuple[tuple[int, float], ...]


#: Words too common to index a phrase by (most requests have them): a phrase is indexed by
#: its longest other token, so few phrases are looked for in a request. Only speed depends
#: on this list; a phrase of these words alone is indexed by its longest one.
COMMON_WORDS = lexicon.word_set(
    "a an the is are was were be been of to in on at by for from with and or but not no if then than that"
    " this these those it its as so do does did i you we he she they me my our your what which who whom"
    " how why when where there here can could would should will may might must all any each some more most"
    " many much one two into about over under out up down off just also very make write give tell find get"
    " use"
)


@dataclass(frozen=True, slots=True)
class Terms:
    words: dict[str, Sparse]
    #: index token -> ((" the  phrase ", "the phrase"), ...): the phrase ``joined`` and as is
    phrases: dict[str, tuple[tuple[str, str], ...]]
    #: every term, word or phrase -> its weights
    weights: dict[str, Sparse]

    def hits(self, tokens: Iterable[str], norm: str) -> tuple[set[str], list[str]]:
        """(the words found, the phrases found) in ``tokens``, whose ``joined`` text is
        ``norm``. Two set intersections (in C) find the words and the phrases that may
        occur; only those phrases are looked for in ``norm``."""
        phrases = self.phrases
        found = []
        for key in sorted(phrases.keys() & tokens):  # the same order in every process
            for padded, phrase in phrases[key]:
                if padded in norm:
                    found.append(phrase)
        return self.words.keys() & tokens, found

    def dimension(self, index: int) -> dict[str, float]:
        """Term -> its weight in dimension ``index``, for the terms that have one."""
        return {term: w for term, weights in self.weights.items() for i, w in weights if i == index}


def joined(tokens: Iterable[str]) -> str:
    """``tokens`` as one text for substring lookups: " a  b  c " (two spaces between
    tokens, so that two occurrences of " b " next to each other are both counted)."""
    return f" {'  '.join(tokens)} "


def index_token(phrase: str) -> str:
    """The token a phrase is indexed by: its longest uncommon one (the first of equals)."""
    tokens = phrase.split()
    return max([t for t in tokens if t not in COMMON_WORDS] or tokens, key=len)


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
    weights = {term: tuple(sorted(by_dim.items())) for term, by_dim in merged.items()}
    phrases: dict[str, list[tuple[str, str]]] = {}
    for term in weights:
        if " " in term:
            phrases.setdefault(index_token(term), []).append((joined(term.split()), term))
    words = {term: w for term, w in weights.items() if " " not in term}
    return Terms(words, {k: tuple(v) for k, v in phrases.items()}, weights)


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
