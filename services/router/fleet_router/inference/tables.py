"""The lexicon compiled once, at import, into lookups a request is matched against.

A ``Terms`` holds single tokens (a dict: one set intersection finds every hit) and phrases
indexed by their rarest-looking token (the longest that is not a stop word): a phrase is
looked for only when that token occurs, so "in python" costs nothing unless "python" does.
Each term carries its non-zero weights by dimension (a task type, or a complexity delta).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet_router.inference import lexicon
from fleet_shared.schema import TaskType

#: The non-zero weights of a term: ((dimension, weight), ...).
Sparse = tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Terms:
    words: dict[str, Sparse]
    #: key token -> ((" the phrase ", weights), ...)
    phrases: dict[str, tuple[tuple[str, Sparse], ...]]

    def hits(self, tokens: set[str], norm: str) -> list[tuple[str, Sparse]]:
        """Every term found: ``tokens`` is the request's token set, ``norm`` its tokens
        joined by single spaces with a space at each end."""
        words = self.words
        found = [(w, words[w]) for w in words.keys() & tokens]
        phrases = self.phrases
        for key in phrases.keys() & tokens:
            for phrase, weights in phrases[key]:
                if phrase in norm:
                    found.append((phrase[1:-1], weights))
        return found


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


#: Words too common to index a phrase by.
STOP_WORDS = lexicon.word_set(
    "a an the this that these those is are was were be of to in on at by for with from and or not no it its"
    " my our your what how which who why when where do does did can i me you we as than then so if"
)


def key_token(phrase: str) -> str:
    """The token a phrase is indexed by: its longest non-stop word (else its longest)."""
    tokens = phrase.split()
    content = [t for t in tokens if t not in STOP_WORDS] or tokens
    return max(content, key=len)


def compile_terms(tables: Sequence[Mapping[str, float]]) -> Terms:
    """One ``Terms`` whose dimension i holds table i's weight (absent where table i lacks the term)."""
    merged: dict[str, dict[int, float]] = {}
    for i, table in enumerate(tables):
        for term, weight in table.items():
            merged.setdefault(term, {})[i] = weight
    words: dict[str, Sparse] = {}
    phrases: dict[str, list[tuple[str, Sparse]]] = {}
    for term, by_dim in merged.items():
        sparse = tuple(sorted(by_dim.items()))
        if " " in term:
            phrases.setdefault(key_token(term), []).append((f" {term} ", sparse))
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
