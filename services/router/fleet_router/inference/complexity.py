"""A request's complexity 1..10, with the contributions that moved it most.

``BASE_COMPLEXITY`` moved by the request's length, its hard and easy terms (each side
capped, so a long document full of jargon is not a 10 for that alone), the code attached,
its parts and sentences, and an asked-for length ("a 3,000-word story"). Rounded half up,
clamped to 1..10. The terms' deltas come summed from ``scoring`` (one packed sum with the
type weights); this module adds the shape's and names the strongest.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from operator import itemgetter

from fleet_router.inference import features as fx
from fleet_router.inference.tables import DOWN, REQUEST_TERMS, UP, joined
from fleet_shared.schema import TaskType

BASE_COMPLEXITY = 3.4
#: Complexity offsets by task type: finishing given text is easier than writing it.
TYPE_OFFSET = {TaskType.COMPLETION: -0.3, TaskType.ANALYSIS: 0.3}
MAX_UP = 5.0
MAX_DOWN = -3.0
#: Characters of prose in which commas and semicolons count as parts of the request.
PARTS_CHARS = 400
#: Tokens in which connectives ("and", "with", "that" ...) count as parts of the request.
PARTS_TOKENS = 80
#: Characters of prose in which list items count as parts of the request.
BULLET_CHARS = 1200
SHAPE_CHARS = fx.SHAPE_CHARS
#: Contributions named in the reasoning.
NAMED = 3

#: A contribution: (delta, label with one {} for the detail, detail); detail None: the label
#: is the whole text (a request's term, made at import).
Delta = tuple[float, str, str | int | None]
#: Terms found in the system prompt or an earlier turn: (the words, the phrases, their
#: signal label, their scale).
Group = tuple[set[str], list[str], str, float]
_FIRST = itemgetter(0)

#: Steps of the complexity deltas: ``deltas[i]`` for the first ``limits[i] >= value`` (the
#: last delta past every limit).
_LENGTH_LIMITS, _LENGTH_DELTAS = (6, 12, 30, 80, 200), (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_CODE_LIMITS, _CODE_DELTAS = (3, 6, 12, 25), (0.0, 0.3, 0.7, 1.2, 1.8)
_PARTS_LIMITS, _PARTS_DELTAS = (1, 3, 5, 7, 10), (-0.3, 0.0, 0.5, 1.0, 1.5, 2.0)
_SENTENCES_LIMITS, _SENTENCES_DELTAS = (1, 3, 6, 10), (0.0, 0.25, 0.5, 1.0, 1.5)
_ASKED_LIMITS, _ASKED_DELTAS = (0, 150, 399, 999, 1999), (0.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def assess(
    f: fx.Features,
    words: set[str],
    phrases: list[str],
    fields: tuple[int, ...],
    task: TaskType,
    up: float,
    down: float,
    context: list[Group],
) -> tuple[int, list[str]]:
    """The complexity 1..10 of a ``task`` request, and the signals that moved it most."""
    parts = _shape_deltas(f, words, task)
    raw = BASE_COMPLEXITY + (min(up, MAX_UP) + max(down, MAX_DOWN)) + sum(map(_FIRST, parts))
    value = max(1, min(10, int(raw + 0.5)))
    # each term's own delta (their capped sum counts); entries of the request's terms made
    # at import, looked up only when its summed fields say it has some
    if fields[18]:
        terms_found(_UP_ENTRIES, words, phrases, parts)
    if fields[19]:
        terms_found(_DOWN_ENTRIES, words, phrases, parts)
    if context:
        _context_deltas(context, parts)
    magnitudes = list(map(abs, map(_FIRST, parts)))
    strongest = sorted(range(len(parts)), key=magnitudes.__getitem__, reverse=True)[:NAMED]
    named = []
    for i in strongest:
        if magnitudes[i]:
            named.append(_delta_text(*parts[i]))
    return value, named


def terms_found(entries: Mapping[str, Delta], words: set[str], phrases: list[str], parts: list[Delta]) -> None:
    """The request's terms among ``entries`` (words in sorted order, then phrases), into
    ``parts`` (also how ``scoring`` names a task type's terms)."""
    hits = entries.keys() & words
    if hits:
        for term in sorted(hits) if len(hits) > 1 else hits:
            parts.append(entries[term])
    for term in phrases:
        entry = entries.get(term)
        if entry is not None:
            parts.append(entry)


def _context_deltas(context: list[Group], parts: list[Delta]) -> None:
    """The context's complexity terms, at their lower weights, into ``parts``."""
    for found, phrases, label, scale in context:
        delta_label = label + " ({})"
        for weights in _UP_WEIGHTS, _DOWN_WEIGHTS:
            for term in sorted(weights.keys() & found):
                parts.append((weights[term] * scale, delta_label, term))
            for term in phrases:
                if term in weights:
                    parts.append((weights[term] * scale, delta_label, term))


def _delta_text(delta: float, label: str, detail: str | int | None) -> str:
    """A contribution as the reasoning names it: ``label`` ends in " ({})" for the signed
    delta, or is the whole text already (``detail`` None: a request's term, made at import)."""
    if detail is None:
        return label
    return label.format(detail, _SIGNED.get(delta) or f"{delta:+.1f}")


def _shape_deltas(f: fx.Features, words: set[str], task: TaskType) -> list[Delta]:
    """The request's shape's contributions to its complexity, and its task type's offset."""
    prose = f.prose
    head = prose[:PARTS_CHARS]
    size = f.prose_words
    shape: list[Delta] = [(_LENGTH_DELTAS[bisect_left(_LENGTH_LIMITS, size)], "{}-word request ({})", size)]
    if f.code_lines:
        shape.append((_CODE_DELTAS[bisect_left(_CODE_LIMITS, f.code_lines)], "{} lines of code ({})", f.code_lines))
    commas = head.count(",")
    parts = commas + head.count(";")
    connectives = fx.CONNECTIVES.intersection(words)
    if connectives:
        norm = f.norm  # every token is among the first PARTS_TOKENS: each connective counted in C
        for connective in connectives:
            parts += norm.count(_PADDED[connective])
    # "1, 1, 2, 3, 5": a list of numbers is not a list of requirements
    if commas and fx.numbers_in(prose[:SHAPE_CHARS]) > 2:
        parts -= len(fx.NUMBER_COMMA_RE.findall(head))
    if "\n" in prose:
        parts += len(fx.BULLET_RE.findall(prose, 0, BULLET_CHARS))
    shape.append((_PARTS_DELTAS[bisect_left(_PARTS_LIMITS, parts)], "{} listed parts ({})", parts))
    if ". " in head or "? " in head or "! " in head or ".\n" in head:
        sentences = head.count(". ") + head.count("? ") + head.count("! ") + head.count(".\n")
        if sentences > 1:
            shape.append(
                (_SENTENCES_DELTAS[bisect_left(_SENTENCES_LIMITS, sentences)], "{} sentences ({})", sentences + 1)
            )
    if f.math and size <= 8:
        shape.append((-1.0, "short arithmetic{} ({})", ""))
    if "word" in head or "line" in head:
        asked = fx.requested_length(head)
        shape.append((_ASKED_DELTAS[bisect_left(_ASKED_LIMITS, asked)], "asks for ~{} words ({})", asked))
    if f.history_words > 100:
        shape.append((0.5, "{} words of conversation ({})", f.history_words))
    offset = TYPE_OFFSET.get(task)
    if offset:
        shape.append((offset, "{} ({})", task.value))
    return shape


# -- the lexicon's complexity terms, as the lookups above use them ------------------------

_UP_WEIGHTS, _DOWN_WEIGHTS = REQUEST_TERMS.dimension(UP), REQUEST_TERMS.dimension(DOWN)
#: A request's own complexity terms as contributions, made once.
_UP_ENTRIES: dict[str, Delta] = {term: (w, f"'{term}' ({w:+.1f})", None) for term, w in _UP_WEIGHTS.items()}
_DOWN_ENTRIES: dict[str, Delta] = {term: (w, f"'{term}' ({w:+.1f})", None) for term, w in _DOWN_WEIGHTS.items()}
#: Connectives as ``tables.joined`` pads them, to be counted in a request's ``norm``.
_PADDED = {word: joined([word]) for word in fx.CONNECTIVES}
#: The signed texts of the shape's deltas, made once (formatting a float costs more than
#: looking it up).
_SIGNED = {
    d: f"{d:+.1f}"
    for d in (
        *_LENGTH_DELTAS,
        *_CODE_DELTAS,
        *_PARTS_DELTAS,
        *_SENTENCES_DELTAS,
        *_ASKED_DELTAS,
        -1.0,
        0.5,
        *TYPE_OFFSET.values(),
    )
}
