"""The custom rule that would apply an optimisation recommendation (issue 11, item 8).

The ledger's recommendations (``fleet_ledger.analytics.get_optimization_recommendations``)
each carry an ``id`` (stable: the kind and what it is about) and ``rule``: a ``[[rule]]``
TOML snippet for ``fleet_shared.rules``. ``modelrouter rules apply-recommendation ID``
appends that snippet to the fleet's rules (the routers reload them); the ledger's auto mode
does the same for recommendations whose evidence crosses its threshold. Either way the
previous version stays in the config bucket's history (``modelrouter rules revert``).

Pure: a recommendation dict in, TOML text out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from fleet_shared.rules import RuleSet, parse_rules

#: Rules made from recommendations are named ``rec-<id>`` (id made safe for a rule name).
RULE_PREFIX = "rec-"


def recommendation_id(rec: dict[str, Any]) -> str:
    """``<kind>`` or ``<kind>:<model or task type>``: stable across reports of the same finding."""
    subject = rec.get("model") or rec.get("task_type")
    return f"{rec['kind']}:{subject}" if subject else str(rec["kind"])


def rule_name(rec_id: str) -> str:
    return RULE_PREFIX + re.sub(r"[^A-Za-z0-9_.:-]", "_", rec_id)[:90]


def rule_for(rec: dict[str, Any], *, complex_models: Sequence[str], local_models: Sequence[str]) -> str | None:
    """The ``[[rule]]`` that applies ``rec`` (None: no rule would, e.g. an unknown kind).

    * ``low_success_rate`` / ``slow_model``: forbid the model (the others take its jobs);
    * ``route_locally``: jobs up to its complexity get ``max_cost_usd = 0`` (free models only);
    * ``high_escalation``: the task type starts on the complex models;
    * ``budget``: every job prefers the local models.
    """
    rec_id = recommendation_id(rec)
    kind = rec["kind"]
    evidence = rec.get("evidence") or {}
    body: list[str]
    if kind in ("low_success_rate", "slow_model") and rec.get("model"):
        body = [f"forbid = [{_q(rec['model'])}]"]
    elif kind == "route_locally":
        body = [f"match = {{ complexity_max = {int(evidence.get('max_complexity', 3))} }}", "max_cost_usd = 0.0"]
    elif kind == "high_escalation" and rec.get("task_type") and complex_models:
        body = [f"match = {{ task_types = [{_q(rec['task_type'])}] }}", f"prefer = {_list(complex_models)}"]
    elif kind == "budget" and local_models:
        body = [f"prefer = {_list(local_models)}"]
    else:
        return None
    header = [
        f"# {rec.get('message', kind)}",
        "[[rule]]",
        f"name = {_q(rule_name(rec_id))}",
        f"from_recommendation = {_q(rec_id)}",
    ]
    return "\n".join([*header, *body]) + "\n"


def with_rule(current_text: str, snippet: str, *, known_models: frozenset[str] | set[str] | None = None) -> str:
    """``current_text`` with ``snippet`` appended, validated.

    Raises:
        RulesError: the result does not validate (e.g. the rule is already there: duplicate name).
    """
    text = current_text.rstrip("\n")
    combined = f"{text}\n\n{snippet}" if text.strip() else snippet
    parse_rules(combined, known_models=known_models)
    return combined


def applied_ids(rules: RuleSet) -> set[str]:
    """The recommendations already applied as rules."""
    return {r.from_recommendation for r in rules.rules if r.from_recommendation}


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"
