"""Weighted evidence -> a task type and a complexity, with the signals that decided them.

Task type: every matched term adds its weight for each type it speaks for (a type's terms
add up to at most ``TERM_CAP``: a long request naming many topics of one type does not
outweigh the one word that says what to do); the leading imperative, code attached, and
the request's shape (a sentence left open, blanks, arithmetic, multiple choice ...) add
more. The type with the most evidence wins; below ``MIN_EVIDENCE`` the default stands.

Complexity: ``BASE_COMPLEXITY`` moved by the request's length, its hard and easy terms
(each side capped, so a long document full of jargon is not a 10 for that alone), the code
attached, its parts and sentences, and an asked-for length ("a 3,000-word story").
Rounded half up, clamped to 1..10.

This runs for every unlabelled job, so it is written for speed: one table lookup per
request, regexes only behind cheap substring tests, and signals kept as tuples that are
formatted only for the few named in the reasoning.
"""

from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter

from fleet_router.inference import features as fx
from fleet_router.inference.lexicon import TYPES
from fleet_router.inference.tables import CODE_TERMS, DOWN, LEAD, REQUEST_TERMS, UP, Sparse, pairs_of
from fleet_shared.schema import TaskType

#: Below this much evidence for the best type, the default task type is used.
MIN_EVIDENCE = 1.5
#: Terms in the system prompt and in earlier turns count for less than the request's own.
SYSTEM_WEIGHT = 0.5
HISTORY_WEIGHT = 0.3
#: The most a task type's terms add up to (the leading words and the shape come on top).
TERM_CAP = 12.0
#: Terms weighing at most this are topics ("python", "data", "story" ...), not what to do;
#: a type's topics add up to at most ``TOPIC_CAP``, so naming many technologies in a
#: comparison does not make it a coding request.
TOPIC_WEIGHT = 2.0
TOPIC_CAP = 5.0
BASE_COMPLEXITY = 3.4
#: Complexity offsets by task type: finishing given text is easier than writing it.
TYPE_OFFSET = {TaskType.COMPLETION: -0.3, TaskType.ANALYSIS: 0.3}
MAX_UP = 5.0
MAX_DOWN = -3.0
SHAPE_CHARS = fx.SHAPE_CHARS
#: Characters of prose in which commas and semicolons count as parts of the request.
PARTS_CHARS = 400
#: Tokens in which connectives ("and", "with", "that" ...) count as parts of the request.
PARTS_TOKENS = 80
#: Characters of prose in which list items count as parts of the request.
BULLET_CHARS = 1200
#: Signals named in the reasoning, per decision.
NAMED = 3

CG, CR, RS, AN, CO, CW = range(len(TYPES))
_WH = frozenset({"who", "what", "when", "where", "which", "how"})

#: A signal: (type index, weight, label with one {} for the detail, detail).
Signal = tuple[int, float, str, str | int]
#: A complexity contribution: (delta, label with one {} for the detail, detail).
Delta = tuple[float, str, str | int]
_WEIGHT = itemgetter(1)


class Evidence:
    """Scores per type, the complexity terms' deltas, and what contributed (for naming).

    Term hits are kept as the lookup returned them and read again only to name the few
    signals of the winner: the per-hit work is a few additions.
    """

    __slots__ = ("down", "hit_groups", "scores", "signals", "up")

    def __init__(self) -> None:
        self.scores = [0.0, 0.0, 0.0, 0.0, 0.5, 0.0]  # a prior: with no other sign, a completion
        self.signals: list[Signal] = []
        self.hit_groups: list[tuple[list[tuple[str, Sparse]], str, float]] = []
        self.up = self.down = 0.0

    def add(self, index: int, weight: float, label: str, detail: str | int = "") -> None:
        self.scores[index] += weight
        self.signals.append((index, weight, label, detail))

    def add_request(
        self, tokens: set[str], norm: str, pairs: set[tuple[str, str]], label: str = "'{}'", scale: float = 1.0
    ) -> None:
        """The request's terms: type weights (each type's sum capped at ``TERM_CAP``, its
        topics' at ``TOPIC_CAP``: many topic words of one type do not outweigh the one word
        that says what to do), the weights of its leading words, and the complexity deltas."""
        hits = REQUEST_TERMS.hits(tokens, norm, pairs)
        if not hits:
            return
        acc = [0.0] * _SLOT_COUNT
        slots = _REQUEST_SLOTS
        for found, _ in hits:
            for j, w in slots[found]:
                acc[j] += w
        scores = self.scores
        for i in range(6):
            term = acc[i] if acc[i] < TERM_CAP else TERM_CAP
            topic = acc[i + 6] if acc[i + 6] < TOPIC_CAP else TOPIC_CAP
            scores[i] += scale * (term + topic + acc[i + 12])
        self.up += acc[_UP_SLOT] * scale
        self.down += acc[_DOWN_SLOT] * scale
        self.hit_groups.append((hits, label, scale))

    def add_code_terms(self, tokens: set[str], norm: str, pairs: set[tuple[str, str]]) -> None:
        for term, weights in CODE_TERMS.hits(tokens, norm, pairs):
            for i, w in weights:
                self.add(i, w, "'{}' about code", term)

    def best(self) -> tuple[int, float]:
        scores = self.scores
        i = max(range(len(scores)), key=scores.__getitem__)
        return i, scores[i]

    def named(self, index: int) -> list[str]:
        """The strongest signals for type ``index``, formatted."""
        ranked = [s for s in self.signals if s[0] == index]
        lead = LEAD + index
        for hits, label, scale in self.hit_groups:
            for term, weights in hits:
                for i, w in weights:
                    if i == index:
                        ranked.append((i, w * scale, label, term))
                    elif i == lead:
                        ranked.append((i, w * scale, "starts with '{}'", term[1:]))
        ranked.sort(key=_WEIGHT, reverse=True)
        return [label.format(detail) for _, w, label, detail in ranked[:NAMED] if w > 0]

    def term_deltas(self) -> list[Delta]:
        """Each complexity term's own delta (their capped sum is what counts)."""
        out: list[Delta] = []
        for hits, label, scale in self.hit_groups:
            for term, weights in hits:
                for i, w in weights:
                    if i in (UP, DOWN):
                        out.append((w * scale, label, term))
        return out


#: ``add_request``'s accumulator: 0..5 a type's action terms, 6..11 its topics, 12..17 its
#: leading words, then the complexity terms up and down. Each term's weights are mapped to
#: these slots once, at import, so the per-hit work is one addition per weight.
_SLOT_COUNT = 20
_UP_SLOT, _DOWN_SLOT = 18, 19


def _slots(weights: Sparse) -> tuple[tuple[int, float], ...]:
    out = []
    for i, w in weights:
        if i < UP:
            out.append((i if w > TOPIC_WEIGHT else i + 6, w))
        elif i >= LEAD:
            out.append((i - LEAD + 12, w))
        else:
            out.append((_UP_SLOT if i == UP else _DOWN_SLOT, w))
    return tuple(out)


_REQUEST_SLOTS: dict[str, tuple[tuple[int, float], ...]] = {
    **{term: _slots(w) for term, w in REQUEST_TERMS.words.items()},
    **{phrase[1:-1]: _slots(w) for group in REQUEST_TERMS.phrases.values() for phrase, w, _ in group},
}


def gather(f: fx.Features) -> Evidence:
    """All the evidence in ``f``: the request's terms and leading words, terms about code,
    the system prompt and earlier turns (weighing less), and the request's shape."""
    ev = Evidence()
    pairs = pairs_of(f.tokens)
    ev.add_request(f.token_set, f.norm, pairs)
    if f.code_lines:
        ev.add_code_terms(f.token_set, f.norm, pairs)
    for tokens, label, scale in (
        (f.system_tokens, "system prompt '{}'", SYSTEM_WEIGHT),
        (f.history_tokens, "earlier turn '{}'", HISTORY_WEIGHT),
    ):
        if tokens:
            ev.add_request(set(tokens), _joined(tokens), pairs_of(tokens), label, scale)
    _shape(f, ev)
    return ev


def _joined(tokens: list[str]) -> str:
    return " " + " ".join(tokens) + " "


def _shape(f: fx.Features, ev: Evidence) -> None:
    prose = f.prose
    tokens = f.token_set
    reference = fx.code_reference(f.tokens, tokens)
    if reference:
        ev.add(CR, 3.0, "refers to existing code ('{}')", reference)
        ev.add(AN, 1.0, "refers to existing code ('{}')", reference)
    if fx.quantified(f.tokens, tokens):
        ev.add(RS, 3.0, "quantified premises (all ... are)")
    if f.code_only:
        ev.add(CG, 5.0, "code to complete")
    elif f.code_lines:
        ev.add(CR, 1.5, "{} lines of code attached", f.code_lines)
        ev.add(AN, 0.5, "{} lines of code attached", f.code_lines)
    if fx.ends_open(prose, f.tokens):
        ev.add(CO, 3.0, "ends mid-sentence")
    if ":" in prose[-40:] and fx.SPEAKER_END_RE.search(prose[-80:]):
        ev.add(CO, 3.0, "dialogue awaiting its next line")
    if "__" in prose:
        ev.add(CO, 4.0, "blanks to fill")
    if fx.choices(prose[:SHAPE_CHARS]) >= 3:
        ev.add(RS, 2.0, "multiple choice")
    if f.math:
        ev.add(RS, 2.5, "arithmetic or an equation")
    if prose.endswith("?"):
        _question(f, ev, prose)
    if f.prose_words > 150:
        ev.add(AN, 1.0, "long text ({} words)", f.prose_words)


def _question(f: fx.Features, ev: Evidence, prose: str) -> None:
    numbers = 0 if f.code_lines else f.numbers
    if numbers >= 2:
        ev.add(RS, 1.5, "{} numbers and a question", numbers)
    elif numbers == 1 and f.prose_words <= 12:
        ev.add(RS, 1.0, "a number and a question")
    elif numbers == 0 and f.prose_words <= 9 and f.tokens and f.tokens[0] in _WH:
        ev.add(CO, 3.0, "short factual question")


def task_type(ev: Evidence) -> tuple[TaskType | None, list[str]]:
    """The best-supported task type and its signals; None when the evidence is too thin."""
    index, score = ev.best()
    if score < MIN_EVIDENCE:
        return None, []
    return TYPES[index], ev.named(index)


# -- complexity -----------------------------------------------------------------------


def _step(value: int, limits: tuple[int, ...], deltas: tuple[float, ...]) -> float:
    """``deltas[i]`` for the first ``limits[i] >= value`` (the last delta past every limit)."""
    return deltas[bisect_left(limits, value)]


_LENGTH = ((6, 12, 30, 80, 200), (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5))
_CODE = ((3, 6, 12, 25), (0.0, 0.3, 0.7, 1.2, 1.8))
_PARTS = ((1, 3, 5, 7, 10), (-0.3, 0.0, 0.5, 1.0, 1.5, 2.0))
_SENTENCES = ((1, 3, 6, 10), (0.0, 0.25, 0.5, 1.0, 1.5))
_ASKED = ((0, 150, 399, 999, 1999), (0.0, -1.0, 0.0, 1.0, 2.0, 3.0))


def _shape_deltas(f: fx.Features) -> list[Delta]:
    prose = f.prose
    head = prose[:PARTS_CHARS]
    shape: list[Delta] = [(_step(f.prose_words, *_LENGTH), "{}-word request", f.prose_words)]
    if f.code_lines:
        shape.append((_step(f.code_lines, *_CODE), "{} lines of code", f.code_lines))
    parts = head.count(",") + head.count(";") + sum(map(fx.CONNECTIVES.__contains__, f.tokens[:PARTS_TOKENS]))
    if f.numbers > 2:  # "1, 1, 2, 3, 5": a list of numbers is not a list of requirements
        parts -= len(fx.NUMBER_COMMA_RE.findall(head))
    if "\n" in prose:
        parts += len(fx.BULLET_RE.findall(prose, 0, BULLET_CHARS))
    shape.append((_step(parts, *_PARTS), "{} listed parts", parts))
    sentences = head.count(". ") + head.count("? ") + head.count("! ") + head.count(".\n")
    if sentences > 1:
        shape.append((_step(sentences, *_SENTENCES), "{} sentences", sentences + 1))
    if f.math and f.prose_words <= 8:
        shape.append((-1.0, "short arithmetic", ""))
    if "word" in head or "line" in head:
        asked = fx.requested_length(head)
        shape.append((_step(asked, *_ASKED), "asks for ~{} words", asked))
    if f.history_words > 100:
        shape.append((0.5, "{} words of conversation", f.history_words))
    return shape


def complexity_score(f: fx.Features, ev: Evidence, task: TaskType) -> tuple[float, list[Delta]]:
    """The unrounded complexity score, and every contribution to it."""
    shape = _shape_deltas(f)
    offset = TYPE_OFFSET.get(task)
    if offset:
        shape.append((offset, "{}", task.value))
    terms = min(ev.up, MAX_UP) + max(ev.down, MAX_DOWN)
    return BASE_COMPLEXITY + terms + sum(d for d, _, _ in shape), shape + ev.term_deltas()


def complexity(f: fx.Features, ev: Evidence, task: TaskType) -> tuple[int, list[str]]:
    """The complexity 1..10 of a ``task`` request, and the signals that moved it most."""
    raw, parts = complexity_score(f, ev, task)
    value = max(1, min(10, int(raw + 0.5)))
    parts.sort(key=_magnitude, reverse=True)
    return value, [f"{label.format(detail)} ({delta:+.1f})" for delta, label, detail in parts[:NAMED] if delta]


def _magnitude(part: Delta) -> float:
    return abs(part[0])
