"""What inference reads from a job: the request, the code attached to it, its shape.

Only a bounded part of the text is ever scanned: ``HEAD_CHARS`` from the start of the
request and ``TAIL_CHARS`` from its end (where instructions sit), ``CONTEXT_CHARS`` of the
system prompt and of the earlier turns, and of the request's prose the first
``HEAD_TOKENS`` and last ``TAIL_TOKENS`` words. An 8 kB prompt costs about what a 2 kB one
does. Every regular expression is compiled once, here, and runs only on a line or a small
window found by a substring or set test first, or, when each of its alternatives starts
with a literal (``INLINE_CODE_RE``), over the capped text: Python's regex engine scans at
~3-10 ns a character, ``str.find`` and ``in`` at a fraction of that. Byte tables
(``bytes.translate``) do the per-character work of tokens and numbers in C.
"""

from __future__ import annotations

import re
import unicodedata

from msgspec import Struct

from fleet_router.inference.lexicon import word_set
from fleet_router.inference.tables import joined
from fleet_shared.schema import Job

#: Characters of the request read from its start and from its end.
HEAD_CHARS = 700
TAIL_CHARS = 200
#: Characters of the system prompt, and of the earlier turns, read.
CONTEXT_CHARS = 600
#: Lines of the request classified as code or prose (the head's and the tail's).
MAX_LINES = 24
#: Words of the request's prose weighed: its first and its last.
HEAD_TOKENS = 60
TAIL_TOKENS = 20
#: Characters of prose the shape tests (arithmetic, choices, numbers) read.
SHAPE_CHARS = 500

#: ASCII punctuation that separates tokens (``+`` and ``#`` stay: ``c++``, ``c#``).
SEPARATORS = "!\"$%&'()*,-./:;<=>?@[\\]^_`{|}~"
#: The same as a 256-byte table that also lower-cases A-Z: ``bytes.translate`` is one C
#: loop over the text (~1 ns a character), where ``str.translate`` with a dict looks each
#: distinct character up in the dict again on every call (~3 us for a 200-character
#: request). ASCII text is encoded, translated and decoded (each a copy), then split.
_LOWER_SEPARATED = bytes(32 if chr(b) in SEPARATORS else b + 32 if 65 <= b <= 90 else b for b in range(256))
#: Letters NFKD does not decompose, spelled out.
_LIGATURES = (("\u00df", "ss"), ("\u0153", "oe"), ("\u00e6", "ae"), ("\u00f8", "o"))
#: Punctuation outside ASCII that separates words: quotes, guillemets, dashes, ellipsis,
#: bullets, inverted marks, CJK and full-width punctuation.
_WIDE_PUNCTUATION = tuple(
    "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2013\u2014\u2026\u00b7\u2022\u00a1\u00bf"
    "\u3001\u3002\uff0c\uff1a\uff1b\uff01\uff1f\uff08\uff09\u300c\u300d"
)
FENCE_RE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
#: A character that code lines have and most prose lines do not.
CODE_CHAR_RE = re.compile(r"[=(){}\[\];<>#@$&|+]")
#: First words of code lines that may have no such character ("import os", "SELECT a FROM t").
CODE_STARTS = word_set(
    "import from return select insert update delete begin end fetch open close echo package use else try"
    " SELECT INSERT UPDATE DELETE BEGIN END FETCH OPEN CLOSE DECLARE WHILE"
)
#: A line that reads as code: a statement start, an assignment, a call, a brace line.
CODE_LINE_RE = re.compile(
    r"\s*(?:(?:def|class|import|from|return|for|while|if|elif|else|try|except|with|function|var|let|const"
    r"|public|private|protected|static|func|fn|package|struct|impl|use|async|await|echo|foreach)\b(?!.*[.?]$)"
    r"|(?i:select|insert|update|delete|declare|begin|end|open|fetch|close|create table|alter table)\b"
    r"|#include|<\?php|\?>|\$\(|@\w|//|/\*|\*/|[{}()\[\]]\s*[;,)]?\s*$|<\w+[^>]*>|\w[\w.\[\]'\"]*\s*[-+*/|&]?=[^=]"
    r"|[\w.]+\(.*\)\s*[;:{]?\s*$|>>> )"
)
#: Code in a one-line request. Every alternative starts with a literal, so the search skips
#: in C to where one of those characters is (on the evaluation set, ~2.5x faster than the
#: thirteen substring tests it replaced).
INLINE_CODE_RE = re.compile(r"==|!=|=>|\);|\+=|&&|\|\||print\(|\{ ?return|\):|; \}|\) \{")
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
#: For ``numbers_in``: a digit -> "0", "." and "," -> ".", any other byte -> " ".
_DIGIT_MARKS = bytes(48 if 48 <= b <= 57 else 46 if b in (44, 46) else 32 for b in range(256))
#: A comma inside a list of numbers ("1, 1, 2, 3"), which does not separate requirements.
NUMBER_COMMA_RE = re.compile(r", ?\d")
#: Arithmetic in prose ("2 + 2", "3/4", "5 x 3"), looked for only when an operator occurs.
ARITHMETIC_RE = re.compile(r"\d ?[+*/^\u00d7\u00f7] ?\(?\d")
SUBSCRIPT_RE = re.compile(r"\b[a-z]_[a-z0-9]\b")
#: Multiple-choice options: "A) ...", "(B) ...", "C. ...".
CHOICE_RE = re.compile(r"([A-D])[).]\s")
#: A reference to code that exists: "this function", "our Python 2 codebase", "the code below".
CODE_NOUNS = word_set(
    "code codebase function functions class classes snippet script module method loop query component program"
    " implementation layer parser suite tests procedure handler endpoint regex sql"
)
#: Words that point at something given: "this function", "our codebase", "the following code".
POINTERS = word_set("this these my our existing following above")
#: Quantified premises of a syllogism: "all cats are", "no bloops are".
QUANTIFIERS = ("all", "no", "every")
COPULAS = word_set("are is")
BULLET_RE = re.compile(r"\n\s*(?:[-*•]|\d{1,2}[.)])\s")
#: A requested length: "a 3,000-word story", "about 100 words", "200 lines".
LENGTH_ASK_RE = re.compile(r"(\d[\d,]*) ?-? ?(?:words?|lines)\b")
LENGTH_UNITS = ("word", "line")
#: A dialogue waiting for its next line: "...\nAgent:" at the very end (not a one-letter
#: answer slot: "Q: ...\nA:" asks the question before it).
SPEAKER_END_RE = re.compile(r"\n\s*[A-Z][\w .'-]{1,24}:\s*$")
#: Function words a sentence fragment ends on ("The capital of France is").
OPEN_ENDINGS = word_set(
    "the a an is are was were of to and or but that which who because as with for on in at by from my your our"
    " their his her its be been so than then when while if like into about over under how"
)
#: Words skipped before the imperative ("please could you ... write").
LEAD_FILLERS = word_set(
    "please can could would will you i we need want to help me us hey hi ok okay so now just kindly also and then"
    " quick quickly let lets go ahead"
)
LEAD_WORDS = 2
#: Words that join the parts of a request ("a class with X, Y and Z that ...").
CONNECTIVES = word_set("and with that which then while using including plus also but without where whose so")


class Features(Struct, gc=False):
    """The request as inference sees it (text views capped; counts exact where cheap).
    A Struct: built in C from its fields, which matters at one per unlabelled job."""

    tokens: list[str]  # of the request's prose (its first and last ones), in order
    lead: list[str]  # "^word" for each leading word (the imperative)
    norm: str  # " tok  tok  tok ": the tokens ``tables.joined``, for phrase lookups
    prose: str  # the request without its code (capped)
    prose_words: int  # words of prose in the whole request (estimated past the cap)
    code_lines: int  # lines of code attached (fenced or not; the request and earlier turns)
    code_only: bool  # the request is code and nothing else (a function to complete)
    math: bool  # arithmetic, an equation or math symbols in the prose
    system_tokens: list[str]
    history_tokens: list[str]
    history_words: int


def request_views(job: Job) -> tuple[str, str, str]:
    """(the request: last user message, the earlier turns, the system prompt)."""
    if not job.messages:
        return job.prompt or "", "", job.system or ""
    turns = [m for m in job.messages if m.role != "system"]
    at = max((i for i, m in enumerate(turns) if m.role == "user"), default=len(turns) - 1)
    ask = turns[at].content if turns else ""
    history = "\n".join(m.content for m in (turns[:at] + turns[at + 1 :])[-4:])
    return ask, history, job.system_prompt() or ""


def capped(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def split_code(text: str) -> tuple[str, int]:
    """(the prose of ``text``, its number of code lines): fenced blocks, else line by line."""
    if "```" in text:
        code_lines = sum(block.count("\n") + 1 for block in FENCE_RE.findall(text) if block.strip())
        return FENCE_RE.sub("\n", text), code_lines
    if "\n" not in text:
        return text, _inline_code(text)
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 6] + lines[-6:]
    prose: list[str] = []
    code_lines = 0
    for line in lines:
        if not line.strip():
            continue
        if line[0] in " \t" or _code_line(line):
            code_lines += 1
        else:
            prose.append(line)
    if code_lines < 2:  # one code-like line among prose is prose ("Total: x = 3")
        return text, _inline_code(text)
    return "\n".join(prose), code_lines


def _code_line(line: str) -> bool:
    if not CODE_CHAR_RE.search(line) and line.split(" ", 1)[0] not in CODE_STARTS:
        return False
    return CODE_LINE_RE.match(line) is not None


def _inline_code(text: str) -> int:
    """1 when a one-line request carries code ("if x == True: return ...", "print(...)")."""
    t = text
    # every alternative of the pattern has one of these characters: most requests have none,
    # and seven memchr calls cost less than one regex scan
    if ("=" in t or "(" in t or ")" in t or ";" in t or "&" in t or "|" in t or "{" in t) and INLINE_CODE_RE.search(t):
        return 1
    return 1 if "`" in t and t.count("`") >= 2 else 0


def tokens_of(text: str) -> list[str]:
    """The lower-cased words of ``text``, split at whitespace and ``SEPARATORS``."""
    if not text.isascii():
        text = _fold(text.lower())
        if not text.isascii():  # mostly another script: no lexicon for it, words are only counted
            return text.split()
    return text.encode("ascii").translate(_LOWER_SEPARATED).decode("ascii").split()


def _fold(low: str) -> str:
    """``low`` in ASCII when it is mostly Latin: wide punctuation becomes spaces and accented
    letters their base letter ("poème" -> "poeme", matching the unaccented lexicon); text
    mostly in another script is returned as is."""
    for mark in _WIDE_PUNCTUATION:
        if mark in low:
            low = low.replace(mark, " ")
    for letter, spelled in _LIGATURES:
        if letter in low:
            low = low.replace(letter, spelled)
    folded = unicodedata.normalize("NFKD", low).encode("ascii", "ignore").decode("ascii")
    return folded if len(folded) * 2 >= len(low) else low


def lead_of(tokens: list[str]) -> list[str]:
    """The request's first words after fillers ("please could you ..."), marked ``^word``."""
    at = 0
    for tok in tokens[:8]:
        if tok not in LEAD_FILLERS:
            break
        at += 1
    else:
        at = 0
    lead = tokens[at : at + LEAD_WORDS]
    if len(lead) == 2:  # LEAD_WORDS, without a list comprehension's frame
        return ["^" + lead[0], "^" + lead[1]]
    return ["^" + t for t in lead]


# The tests below are chains of ``in`` on purpose: a one-character needle is a memchr,
# cheaper than a regex's scan even with a character-set prefix (measured on the evaluation
# set), and ``any(m in text for m in marks)`` pays a generator.


def has_math(head: str) -> bool:
    """Arithmetic, an equation, a power, a subscript or a math symbol in ``head`` (prose)."""
    h = head
    if "=" in h or "^" in h or "√" in h or "∫" in h or "≤" in h or "≥" in h or "π" in h or "∑" in h:
        return True
    operator = "+" in h or "*" in h or "/" in h or "\u00d7" in h or "\u00f7" in h
    if operator and ARITHMETIC_RE.search(h):
        return True
    return "_" in h and SUBSCRIPT_RE.search(h) is not None


def _has_digit(h: str) -> bool:
    return (
        "0" in h
        or "1" in h
        or "2" in h
        or "3" in h
        or "4" in h
        or "5" in h
        or "6" in h
        or "7" in h
        or ("8" in h or "9" in h)
    )


def numbers_in(head: str) -> int:
    """How many numbers (``NUMBER_RE`` matches: "7", "10,000", "3.14") ``head`` has.

    ASCII text is counted with C byte operations, not a regex scan (~10 ns a character):
    digits become "00" and "." / "," become ".", anything else a space; then each number
    is a run of digits, less one for each single "." joining two runs ("00.00")."""
    if not _has_digit(head):
        return 0
    if not head.isascii():
        return len(NUMBER_RE.findall(head))
    marks = b" " + head.encode("ascii").translate(_DIGIT_MARKS).replace(b"0", b"00")
    return marks.count(b" 0") + marks.count(b".0") - marks.count(b"0.0")


def code_reference(tokens: list[str]) -> str | None:
    """The words pointing at code the request gives ("this function", "the code below"), if any."""
    for noun in sorted(CODE_NOUNS.intersection(tokens)):  # the same one in every process
        at = tokens.index(noun)
        before = tokens[max(0, at - 4) : at]
        if not POINTERS.isdisjoint(before):
            start = next(i for i, t in enumerate(before) if t in POINTERS)
            return " ".join(before[start:] + [noun])
        if "the" in before[-3:] and tokens[at + 1 : at + 2] in (["below"], ["above"]):
            return f"the {noun} {tokens[at + 1]}"
    return None


def quantified(tokens: list[str]) -> bool:
    """Whether the request states a quantified premise: "all cats are ...", "no bloops are"."""
    for q in QUANTIFIERS:
        if q in tokens:
            at = tokens.index(q)
            if tokens[at + 2 : at + 3] and tokens[at + 2] in COPULAS:
                return True
    return False


def extract(job: Job) -> Features:
    """The features of ``job`` (pure; reads at most the capped views)."""
    if job.messages:
        ask, history, system = request_views(job)
    else:  # a prompt alone (most jobs): no call
        ask, history, system = job.prompt or "", "", job.system or ""
    view = ask if len(ask) <= HEAD_CHARS + TAIL_CHARS else capped(ask)
    if "\n" in view or "```" in view:
        prose, code_lines = split_code(view)
    else:
        prose, code_lines = view, _inline_code(view)
    prose = prose.strip()
    tokens = tokens_of(prose)
    prose_words = len(tokens)
    if prose_words > HEAD_TOKENS + TAIL_TOKENS:
        tokens = tokens[:HEAD_TOKENS] + tokens[-TAIL_TOKENS:]
    if len(ask) > len(view):  # the middle was not read: estimate its words from its share of prose
        prose_words = prose_words * len(ask) // max(1, len(view))
    history_tokens: list[str] = []
    history_code = history_words = 0
    if history:
        history_view = capped(history, CONTEXT_CHARS // 2, CONTEXT_CHARS // 2)
        history_prose, history_code = split_code(history_view)
        history_tokens = tokens_of(history_prose)
        history_words = len(history_tokens) * len(history) // max(1, len(history_view))
    return Features(
        tokens,
        lead_of(tokens),
        joined(tokens),
        prose,
        prose_words,
        code_lines + history_code,
        code_lines >= 2 and len(tokens) <= 3 and not history_code,
        not code_lines and has_math(prose[:SHAPE_CHARS]),
        tokens_of(system[:CONTEXT_CHARS]) if system else [],
        history_tokens,
        history_words,
    )


def ends_open(prose: str, tokens: list[str]) -> bool:
    """Whether the request stops mid-sentence: a fragment to be continued."""
    if not prose or prose[-1] in ".?!:\"')]}>`":
        return False
    if prose[-1] in ",-\u2013\u2014" or prose.endswith("..."):
        return True
    return bool(tokens) and tokens[-1] in OPEN_ENDINGS


def choices(head: str) -> int:
    """How many distinct multiple-choice options (A-D) ``head`` lists."""
    if "B)" not in head and "B." not in head:
        return 0
    return len(set(CHOICE_RE.findall(head)))


def requested_length(prose: str) -> int:
    """The largest length the request asks for, in words (0: none); lines count as 8 words."""
    best = 0
    for unit in LENGTH_UNITS:
        at = prose.find(unit)
        while at > 0:
            m = LENGTH_ASK_RE.search(prose, max(0, at - 12), at + 6)
            if m:
                n = int(m.group(1).replace(",", "") or 0)
                best = max(best, n * 8 if unit == "line" else n)
            at = prose.find(unit, at + 1)
    return best
