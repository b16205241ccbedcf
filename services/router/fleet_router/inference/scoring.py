"""Weighted evidence -> a task type and a complexity, with the signals that decided them.

Task type: every matched term adds its weight for each type it speaks for (a type's terms
add up to at most ``TERM_CAP``: a long request naming many topics of one type does not
outweigh the one word that says what to do); the leading imperative, code attached, and
the request's shape (a sentence left open, blanks, arithmetic, multiple choice ...) add
more. The type with the most evidence wins; below ``MIN_EVIDENCE`` the default stands.

Complexity: see ``complexity``; its terms' deltas are summed here, with the type weights.

This runs for every unlabelled job, so it is written for speed (see docs/routing-inference.md):
the terms found are summed by one C-level ``sum`` over integers that pack every weight of
a term (see ``_packed``), regexes run only behind substring tests or on a literal prefix,
and signals are kept as tuples (a request's own terms' made at import), named by set
intersections with the winner's terms, in sorted order (the same in every process), and
formatted only for the few named in the reasoning.
"""

from __future__ import annotations

from operator import itemgetter
from struct import Struct

from fleet_router.inference import features as fx
from fleet_router.inference.complexity import NAMED, Group, terms_found
from fleet_router.inference.complexity import assess as complexity_of
from fleet_router.inference.lexicon import TYPES
from fleet_router.inference.tables import CODE_TERMS, LEAD, REQUEST_TERMS, UP, Sparse, joined
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
SHAPE_CHARS = fx.SHAPE_CHARS

CG, CR, RS, AN, CO, CW = range(len(TYPES))
_WH = frozenset({"who", "what", "when", "where", "which", "how"})
_QUANTIFIERS = frozenset(fx.QUANTIFIERS)
#: Last characters of a request that close its sentence (see ``features.ends_open``).
_CLOSED = frozenset(".?!:\"')]}>`")

#: A signal: (type index, weight, label with one {} for the detail, detail).
Signal = tuple[int, float, str, str | int]
_FIRST = itemgetter(0)
_SYSTEM, _HISTORY = "system prompt '{}'", "earlier turn '{}'"


def assess(
    f: fx.Features, task: TaskType | None, default_task: TaskType, *, complexity: bool = True
) -> tuple[TaskType, bool, list[str], int, list[str]]:
    """(the task type, whether it was inferred, its signals, the complexity, its signals) of
    a request whose ``task`` is None when not given; the complexity (0, no signals) only
    when ``complexity``. One function over local variables, few calls and few allocations:
    it runs for every unlabelled job, and in CPython a call or an attribute costs more than
    arithmetic. Evidence is added to the scores in a fixed order (the request's terms, code
    terms, the context's terms, the shape): some weights are not exact binary fractions.
    """
    scores = [0.0, 0.0, 0.0, 0.0, 0.5, 0.0]  # a prior: with no other sign, a completion
    signals: list[Signal] = []
    tokens = f.tokens
    words = _INDEX.keys() & tokens
    for word in f.lead:
        if word in _INDEX:
            words.add(word)
    phrases = _phrases(words, f.norm)
    fields = _weigh(words, phrases, 1.0, scores)
    up, down = fields[18] * 0.5, -fields[19] * 0.5
    if f.code_lines:
        _code_terms(f, scores, signals)
    context: list[Group] = []
    if f.system_tokens or f.history_tokens:  # the context: its terms weigh less
        up, down = _weigh_context(f, scores, context, up, down)
    _shape(f, words, scores, signals)
    inferred = task is None
    type_signals: list[str] = []
    if task is None:
        best = max(scores)
        if best >= MIN_EVIDENCE:
            index = scores.index(best)
            task = TYPES[index]
            type_signals = _named(index, signals, words, phrases, fields, context)
        else:
            task, inferred = default_task, False
    if not complexity:
        return task, inferred, type_signals, 0, []
    value, complexity_signals = complexity_of(f, words, phrases, fields, task, up, down, context)
    return task, inferred, type_signals, value, complexity_signals


def _weigh_context(
    f: fx.Features, scores: list[float], context: list[Group], up: float, down: float
) -> tuple[float, float]:
    """Weigh the system prompt's and the earlier turns' terms (at their lower weights) into
    ``scores``, keep them in ``context`` for naming; return the complexity deltas with theirs."""
    for tokens, label, scale in (f.system_tokens, _SYSTEM, SYSTEM_WEIGHT), (f.history_tokens, _HISTORY, HISTORY_WEIGHT):
        if tokens:
            words = _INDEX.keys() & tokens
            phrases = _phrases(words, joined(tokens))
            fields = _weigh(words, phrases, scale, scores)
            h = 0.5 * scale
            up += fields[18] * h
            down += -fields[19] * h
            context.append((words, phrases, label, scale))
    return up, down


def _shape(f: fx.Features, words: set[str], scores: list[float], signals: list[Signal]) -> None:
    """The request's shape as type evidence: code it refers to or carries, premises, a
    sentence left open, blanks, choices, arithmetic, a short question, a long text
    (``words``: the request's indexed words, which hold every word looked for here)."""
    prose = f.prose
    tokens = f.tokens
    start = len(signals)
    if f.code_lines or not fx.CODE_NOUNS.isdisjoint(words):
        _code_shape(f, words, signals)
    if not _QUANTIFIERS.isdisjoint(words) and fx.quantified(tokens):
        signals.append(_QUANTIFIED)
    last = prose[-1:]
    if last and last not in _CLOSED and fx.ends_open(prose, tokens):
        signals.append(_ENDS_OPEN)
    if ":" in prose[-40:] and fx.SPEAKER_END_RE.search(prose[-80:]):
        signals.append(_DIALOGUE)
    if "__" in prose:
        signals.append(_BLANKS)
    if ("B)" in prose or "B." in prose) and fx.choices(prose[:SHAPE_CHARS]) >= 3:
        signals.append(_CHOICES)
    if f.math:
        signals.append(_MATH)
    if last == "?":
        question = _question(f, prose)
        if question:
            signals.append(question)
    if f.prose_words > 150:
        signals.append((AN, 1.0, "long text ({} words)", f.prose_words))
    for i in range(start, len(signals)):
        signal = signals[i]
        scores[signal[0]] += signal[1]


_QUANTIFIED: Signal = (RS, 3.0, "quantified premises (all ... are)", "")
_ENDS_OPEN: Signal = (CO, 3.0, "ends mid-sentence", "")
_DIALOGUE: Signal = (CO, 3.0, "dialogue awaiting its next line", "")
_BLANKS: Signal = (CO, 4.0, "blanks to fill", "")
_CHOICES: Signal = (RS, 2.0, "multiple choice", "")
_MATH: Signal = (RS, 2.5, "arithmetic or an equation", "")


def _phrases(words: set[str], norm: str) -> list[str]:
    """The phrases found in ``norm`` among those indexed by one of ``words``, in a fixed
    order (``_PHRASE_ORDER``: equally weighted signals are named the same way whatever a
    process's hash seed; sorting the few found costs less than sorting the index words)."""
    keys = _PHRASES.keys() & words
    if not keys:
        return []
    found = []
    for key in keys:
        for padded, phrase in _PHRASES[key]:
            if padded in norm:
                found.append(phrase)
    if len(found) > 1:
        found.sort(key=_PHRASE_ORDER.__getitem__)
    return found


def _weigh(words: set[str], phrases: list[str], scale: float, scores: list[float]) -> tuple[int, ...]:
    """Add the terms' type weights to ``scores`` (each type's sum capped at ``TERM_CAP``,
    its topics' at ``TOPIC_CAP``: many topic words of one type do not outweigh the one word
    that says what to do; its leading words on top); return the summed fields (in half
    points: 18 the complexity terms up, 19 down)."""
    packed = _INDEX.__getitem__
    total = sum(map(packed, words))
    if phrases:
        total += sum(map(packed, phrases))
    if not total:
        return _NO_FIELDS
    u = _FIELDS.unpack(total.to_bytes(_FIELDS.size, "little"))
    h = 0.5 * scale  # the fields count half points
    if not (total + _BELOW_CAPS) & _CAP_BITS:  # no cap reached (most requests): plain sums
        scores[0] += (u[0] + u[6] - u[20] + u[12]) * h
        scores[1] += (u[1] + u[7] - u[21] + u[13]) * h
        scores[2] += (u[2] + u[8] - u[22] + u[14]) * h
        scores[3] += (u[3] + u[9] - u[23] + u[15]) * h
        scores[4] += (u[4] + u[10] - u[24] + u[16]) * h
        scores[5] += (u[5] + u[11] - u[25] + u[17]) * h
        return u
    # unrolled, plain arithmetic: in CPython 3.11 cheaper than a loop or C maps of operators
    t, c = _TERM_CAP, _TOPIC_CAP
    a, b = u[0], u[6] - u[20]
    scores[0] += ((a if a < t else t) + (b if b < c else c) + u[12]) * h
    a, b = u[1], u[7] - u[21]
    scores[1] += ((a if a < t else t) + (b if b < c else c) + u[13]) * h
    a, b = u[2], u[8] - u[22]
    scores[2] += ((a if a < t else t) + (b if b < c else c) + u[14]) * h
    a, b = u[3], u[9] - u[23]
    scores[3] += ((a if a < t else t) + (b if b < c else c) + u[15]) * h
    a, b = u[4], u[10] - u[24]
    scores[4] += ((a if a < t else t) + (b if b < c else c) + u[16]) * h
    a, b = u[5], u[11] - u[25]
    scores[5] += ((a if a < t else t) + (b if b < c else c) + u[17]) * h
    return u


def _code_terms(f: fx.Features, scores: list[float], signals: list[Signal]) -> None:
    words, phrases = CODE_TERMS.hits(f.tokens, f.norm)
    for term in (*sorted(words), *phrases):
        for i, w in CODE_TERMS.weights[term]:
            scores[i] += w
            signals.append((i, w, "'{}' about code", term))


def _named(
    index: int,
    signals: list[Signal],
    words: set[str],
    phrases: list[str],
    fields: tuple[int, ...],
    context: list[Group],
) -> list[str]:
    """The strongest signals for type ``index``, formatted (a request's own terms' entries
    are made at import; the request's summed ``fields`` say whether it has any for the type)."""
    ranked: list[tuple[float, str, str | int | None]] = []
    for i, w, label, detail in signals:
        if i == index:
            ranked.append((w, label, detail))
    own = _TYPE_ENTRIES[index]
    if fields[index] or fields[index + 6]:  # terms weighing more than nothing for the type
        terms_found(own, words, phrases, ranked)
    if fields[index + 12]:
        leads = _LEAD_ENTRIES[index]
        for term in sorted(leads.keys() & words):
            ranked.append(leads[term])
    if context:
        _context_named(index, context, ranked)
    if len(ranked) > 1:
        ranked.sort(key=_FIRST, reverse=True)
    return [label if detail is None else label.format(detail) for w, label, detail in ranked[:NAMED] if w > 0]


def _context_named(index: int, context: list[Group], ranked: list[tuple[float, str, str | int | None]]) -> None:
    """The context's terms for type ``index``, at their lower weights, into ``ranked``."""
    weights, leading = _TYPE_WEIGHTS[index], _LEAD_WEIGHTS[index]
    for found, phrases, label, scale in context:
        for term in sorted(weights.keys() & found):
            ranked.append((weights[term] * scale, label, term))
        for term in phrases:
            if term in weights:
                ranked.append((weights[term] * scale, label, term))
        for term in sorted(leading.keys() & found):
            ranked.append((leading[term] * scale, "starts with '{}'", term[1:]))


def _code_shape(f: fx.Features, words: set[str], signals: list[Signal]) -> None:
    """Code the request refers to ("this function") or carries."""
    if not fx.CODE_NOUNS.isdisjoint(words):
        reference = fx.code_reference(f.tokens)
        if reference:
            signals += [(CR, 3.0, _REFERS, reference), (AN, 1.0, _REFERS, reference)]
    if f.code_only:
        signals.append((CG, 5.0, "code to complete", ""))
    elif f.code_lines:
        signals += [(CR, 1.5, _ATTACHED, f.code_lines), (AN, 0.5, _ATTACHED, f.code_lines)]


_REFERS = "refers to existing code ('{}')"
_ATTACHED = "{} lines of code attached"


def _question(f: fx.Features, prose: str) -> Signal | None:
    numbers = 0 if f.code_lines else fx.numbers_in(prose[:SHAPE_CHARS])
    if numbers >= 2:
        return (RS, 1.5, "{} numbers and a question", numbers)
    if numbers == 1 and f.prose_words <= 12:
        return (RS, 1.0, "a number and a question", "")
    if numbers == 0 and f.prose_words <= 9 and f.tokens and f.tokens[0] in _WH:
        return (CO, 3.0, "short factual question", "")
    return None


# -- the lexicon, compiled for the lookups above ------------------------------------------

# A term's weights are packed at import into one integer of 16-bit fields, in half points
# (every weight is a multiple of 0.5): the terms found are summed by one C-level ``sum``
# and one ``unpack``, not a Python loop over each weight of each term. Fields: 0..5 a
# type's action terms, 6..11 its topics, 12..17 its leading words, 18 the complexity terms
# up, 19 down, 20..25 a type's negative topic weights (19.. as magnitudes). A field's sum
# stays far below 2**16: a term weighs at most 16 half points, a text has at most a few
# hundred terms.
_FIELDS = Struct("<26H")
_TERM_CAP = int(TERM_CAP * 2)
_TOPIC_CAP = int(TOPIC_CAP * 2)
#: Added to a packed sum, these set bit 15 of field i exactly when field i reaches its cap
#: (0..5 ``TERM_CAP``, 6..11 ``TOPIC_CAP``; no carry: every field stays below 2**15): one
#: test says whether ``_weigh`` needs the capped sums.
_BELOW_CAPS = sum((2**15 - (_TERM_CAP if i < 6 else _TOPIC_CAP)) << (16 * i) for i in range(12))
_CAP_BITS = sum(2**15 << (16 * i) for i in range(12))


def _packed(weights: Sparse) -> int:
    out = 0
    for i, w in weights:
        halves = int(w * 2)
        if halves != w * 2:
            raise ValueError(f"lexicon weight {w} is not a multiple of 0.5")
        if i < UP:
            field = i if w > TOPIC_WEIGHT else i + 6 if w > 0 else i + 20
        elif i >= LEAD:
            field = i - LEAD + 12
        else:
            field = 18 if i == UP else 19
        if (halves < 0) != (field >= 19):  # fields 19.. keep magnitudes of negative weights
            raise ValueError(f"lexicon weight {w} has the wrong sign for dimension {i}")
        out += abs(halves) << (16 * field)
    return out


#: Phrases by their index token (``tables.Terms.phrases``).
_PHRASES = REQUEST_TERMS.phrases
#: Each phrase's rank: by its index token, then as listed under it.
_PHRASE_ORDER = {phrase: i for i, (_, phrase) in enumerate(p for key in sorted(_PHRASES) for p in _PHRASES[key])}
#: Every word and phrase of the lexicon -> its packed weights; and each phrase's index
#: token (0 when not a term itself), so one intersection with a request's tokens finds
#: both its words and the index tokens of the phrases it may contain.
#: Words the shape tests look for (code nouns, quantifiers, connectives), weighing nothing:
#: one intersection with a request's tokens answers every membership question about it.
_SHAPE_WORDS = fx.CODE_NOUNS | _QUANTIFIERS | fx.CONNECTIVES
_INDEX = {
    **dict.fromkeys(_SHAPE_WORDS, 0),
    **dict.fromkeys(_PHRASES, 0),
    **{term: _packed(w) for term, w in REQUEST_TERMS.weights.items()},
}
_TYPE_WEIGHTS = [REQUEST_TERMS.dimension(i) for i in range(len(TYPES))]
_LEAD_WEIGHTS = [REQUEST_TERMS.dimension(LEAD + i) for i in range(len(TYPES))]
#: A request's own terms as the reasoning ranks and names them, made once: per type, its
#: terms and its leading words as type signals; the complexity terms as deltas.
_TYPE_ENTRIES = [{term: (w, f"'{term}'", None) for term, w in weights.items()} for weights in _TYPE_WEIGHTS]
_LEAD_ENTRIES = [{term: (w, f"starts with '{term[1:]}'", None) for term, w in lead.items()} for lead in _LEAD_WEIGHTS]
_NO_FIELDS = (0,) * 26  # no term found: every field empty
