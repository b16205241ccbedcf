"""Custom routing rules and experiments: pure data, parsed from TOML and validated once.

The rule file (stored as text in the NATS KV bucket ``<STEM>_CONFIG``, key ``rules``;
``modelrouter rules set FILE`` writes it, every router follows it) looks like::

    [[rule]]
    name = "sql-to-claude"
    match = { task_types = ["code_generation"], complexity_min = 5, prompt_regex = "(?i)\\bselect\\b" }
    prefer = ["claude_sonnet", "gemini_pro"]

    [[rule]]
    name = "team-ml-cheap"
    match = { teams = ["ml"] }
    forbid = ["openai_gpt4"]
    max_cost_usd = 0.01

    [[experiment]]
    name = "code-ab"
    match = { task_types = ["code_generation"] }
    shadow = "gemini_pro"          # also send a copy to this model; its answer is only recorded
    [[experiment.variant]]
    name = "control"               # no action: the rules and the seed's tree decide
    weight = 50
    [[experiment.variant]]
    name = "claude"
    weight = 50
    prefer = ["claude_sonnet"]

How the router applies them (``fleet_router.rules``) is documented there and in
docs/rules-experiments.md. Parsing is strict: an unknown key, a wrong type, a regex that
does not compile, an unknown model or a duplicate name rejects the whole file with the line
and the reason (``RulesError``); whoever loads it keeps the rules it had.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct, field

from fleet_shared.schema import TaskType

#: The KV key the rule file lives at, in ``Subjects.config_bucket``.
RULES_KEY = "rules"
#: Longest prompt regex accepted, and the prompt prefix it is matched against (characters):
#: both bound the time one match can take.
MAX_REGEX_CHARS = 500
REGEX_SCAN_CHARS = 8_192

Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetadataValue = str | int | float | bool


class RulesError(ValueError):
    """A rule file that cannot be used: ``line`` (1-based, 0 unknown) and the reason."""

    def __init__(self, reason: str, *, line: int = 0) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


@lru_cache(maxsize=256)
def compiled(pattern: str) -> re.Pattern[str]:
    """The compiled prompt regex (validated when the rule is decoded, so this never raises there)."""
    return re.compile(pattern)


class Match(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which jobs a rule or experiment applies to: every condition given must hold."""

    task_types: list[TaskType] = []
    complexity_min: Annotated[int, Meta(ge=1, le=10)] = 1
    complexity_max: Annotated[int, Meta(ge=1, le=10)] = 10
    #: the prompt's estimated input tokens (``fleet_shared.tokens.estimate_input_tokens``)
    min_prompt_tokens: Annotated[int, Meta(ge=0)] = 0
    max_prompt_tokens: Annotated[int, Meta(ge=0)] | None = None
    #: the job's ``metadata.key_name`` (the gateway's API key name) is one of these
    key_names: list[str] = []
    #: the job's ``metadata.team`` is one of these
    teams: list[str] = []
    #: each of these job metadata fields equals the value given
    metadata: dict[str, MetadataValue] = {}
    #: searched (``re.search``) in the first REGEX_SCAN_CHARS characters of the job's text
    prompt_regex: Annotated[str, Meta(max_length=MAX_REGEX_CHARS)] | None = None

    def __post_init__(self) -> None:
        if self.complexity_min > self.complexity_max:
            raise ValueError(f"complexity_min {self.complexity_min} > complexity_max {self.complexity_max}")
        if self.max_prompt_tokens is not None and self.min_prompt_tokens > self.max_prompt_tokens:
            raise ValueError("min_prompt_tokens > max_prompt_tokens")
        if self.prompt_regex is not None:
            try:
                compiled(self.prompt_regex)
            except re.error as exc:
                raise ValueError(f"prompt_regex {self.prompt_regex!r} does not compile: {exc}") from None


class Action(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a rule (or an experiment's variant) does to the candidates of a matching job."""

    #: try these models first, in order, before the seed's tree
    prefer: list[str] = []
    #: this model, when usable (else ``prefer``, then the tree)
    force: str | None = None
    #: never these models (filters every candidate, the job's own force_model included)
    forbid: list[str] = []
    #: only models whose estimated cost for this job is at most this (USD)
    max_cost_usd: Annotated[float, Meta(ge=0)] | None = None
    #: only models serving at least this many tokens of context
    min_context_window: Annotated[int, Meta(gt=0)] | None = None

    def models(self) -> list[str]:
        return [*self.prefer, *([self.force] if self.force else []), *self.forbid]

    @property
    def routes(self) -> bool:
        """Whether this action chooses models (force / prefer), not only filters them."""
        return bool(self.force or self.prefer)


class Rule(Action, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    match: Match = Match()
    #: the recommendation this rule was made from (``modelrouter rules apply-recommendation``)
    from_recommendation: str | None = None


class Variant(Action, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One arm of an experiment: its action (none: the control) and its share of the jobs."""

    name: Name
    weight: Annotated[float, Meta(gt=0)] = 1.0


class Experiment(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    match: Match = Match()
    variants: Annotated[list[Variant], Meta(min_length=1)] = field(name="variant")
    #: also send a copy of each matching job to this model; its answer is recorded, never returned
    shadow: str | None = None
    #: the share (0..1) of matching jobs that get a shadow copy
    shadow_fraction: Annotated[float, Meta(ge=0, le=1)] = 1.0

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names in {names}")


class RuleSet(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole rule file. Rules are evaluated in file order; the first matching experiment applies."""

    rules: list[Rule] = field(default_factory=list, name="rule")
    experiments: list[Experiment] = field(default_factory=list, name="experiment")

    @property
    def empty(self) -> bool:
        return not self.rules and not self.experiments


EMPTY = RuleSet()


def parse_rules(text: str, *, known_models: frozenset[str] | set[str] | None = None) -> RuleSet:
    """The rule file ``text`` as a validated RuleSet.

    Parameters:
        known_models: model ids rules may name (None: not checked).

    Raises:
        RulesError: a TOML syntax error (its line), or a rule that does not validate (the
            line of its ``[[rule]]`` / ``[[experiment]]`` header, its index and name, and
            msgspec's path, e.g. ``$.rule[1].match.complexity_min``).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", 0) or _line_from_message(str(exc))
        if not line and "end of document" in str(exc):
            line = max(1, len(text.splitlines()))
        raise RulesError(f"TOML syntax error: {exc}", line=line) from None
    try:
        rules = msgspec.convert(data, RuleSet)
    except msgspec.ValidationError as exc:
        raise _located(text, data, str(exc)) from None
    _check_names(text, rules, known_models)
    return rules


def _check_names(text: str, rules: RuleSet, known: frozenset[str] | set[str] | None) -> None:
    named_items: list[tuple[str, Sequence[Rule | Experiment]]] = [
        ("rule", rules.rules),
        ("experiment", rules.experiments),
    ]
    for kind, items in named_items:
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"{kind}[{i}] {item.name!r}"
            if item.name in seen:
                raise RulesError(f"{where}: duplicate {kind} name", line=_header_line(text, kind, i))
            seen.add(item.name)
            if known is None:
                continue
            named = item.models() if isinstance(item, Rule) else _experiment_models(item)
            unknown = [m for m in named if m not in known]
            if unknown:
                raise RulesError(
                    f"{where}: unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                    line=_header_line(text, kind, i),
                )


def _experiment_models(exp: Experiment) -> list[str]:
    return [*(m for v in exp.variants for m in v.models()), *([exp.shadow] if exp.shadow else [])]


_PATH = re.compile(r"\$\.(rule|experiment)\[(\d+)\]")


def _located(text: str, data: dict[str, Any], message: str) -> RulesError:
    """msgspec's error, with the line, index and name of the rule it is in."""
    found = _PATH.search(message)
    if not found:
        return RulesError(message)
    kind, index = found.group(1), int(found.group(2))
    items = data.get(kind)
    name = items[index].get("name") if isinstance(items, list) and index < len(items) else None
    label = f"{kind}[{index}]" + (f" {name!r}" if isinstance(name, str) else "")
    return RulesError(f"{label}: {message}", line=_header_line(text, kind, index))


def _header_line(text: str, kind: str, index: int) -> int:
    """The line of the ``index``-th ``[[kind]]`` header (0: not found, e.g. inline arrays)."""
    header = re.compile(rf"^\s*\[\[\s*{kind}\s*\]\]")
    count = -1
    for n, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            count += 1
            if count == index:
                return n
    return 0


def _line_from_message(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else 0
