"""The router's task-type and complexity inference: its latency by prompt size, the policy's
decisions/s with and without it in the same run, and its accuracy on the labelled set.

``python -m fleet_bench.inference_bench [--duration-s S] [--out PATH]`` runs this case on
its own (pure CPU: no NATS, no PostgreSQL) and prints its table; ``make bench`` runs it as
the ``inference`` case, in a process of its own like the policy case.

Decisions/s are measured on the same jobs both ways, alternating short windows so drift
on a shared machine hits both alike: every prompt of the evaluation set without its labels
(inference on, versus off: the configured defaults, as the seed did), and the policy case's
job mix (one job of five unlabelled).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from fleet_bench import inference_eval
from fleet_bench.stats import percentile
from fleet_router.inference import infer
from fleet_router.policy import IntelligentModelRouter, LiveState
from fleet_shared.schema import Attempt, Job

#: Prompt sizes (kB) the latency is reported for.
KB_BANDS = (0.25, 1, 2, 4, 8)


def prompts_of_size(kb: float, count: int, seed: int = 7) -> list[Job]:
    """``count`` unlabelled jobs of ``kb`` kB each: prompts of the evaluation set joined
    (in a seeded random order) and cut to size, so each reads like real requests."""
    texts = [e.job.objective() for split in inference_eval.SPLITS for e in inference_eval.load(split)]
    rng = random.Random(seed)
    size = int(kb * 1024)
    jobs = []
    for _ in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            text = rng.choice(texts)
            parts.append(text)
            length += len(text) + 1
        jobs.append(Job(prompt="\n".join(parts)[:size]))
    return jobs


def latency(jobs: Sequence[Job], *, rounds: int) -> dict[str, float]:
    """p50/p99 (ms) of ``infer`` on each job, ``rounds`` times (one warm-up round first)."""
    for job in jobs:
        infer(job)
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(rounds):
        for job in jobs:
            t = clock()
            infer(job)
            samples.append(clock() - t)
    ms = [s * 1000 for s in samples]
    return {"p50": round(percentile(ms, 50) or 0.0, 4), "p99": round(percentile(ms, 99) or 0.0, 4)}


def _state() -> LiveState:
    """A live state with stats for two models, as a running router has (the policy case's)."""
    from fleet_router.state import LiveStateTracker

    tracker = LiveStateTracker()
    for i in range(40):
        tracker.observe(Attempt(model="local_mlx", provider="lmstudio", success=i % 10 != 0, latency_ms=5))
        tracker.observe(Attempt(model="claude", provider="anthropic", success=True, latency_ms=900, cost_usd=0.001))
    return tracker.snapshot()


def _rate(route: Callable[..., Any], jobs: Sequence[Job], state: LiveState, window_s: float) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + window_s
    while True:
        for job in jobs:
            route(job, state=state)
        n += len(jobs)
        if time.perf_counter() >= deadline:
            return n, time.perf_counter() - t0


def _policies() -> tuple[IntelligentModelRouter, IntelligentModelRouter]:
    """(inference on, inference off) over the same registry."""
    on = IntelligentModelRouter()
    rules = msgspec.structs.replace(on.registry.rules, infer_missing=False)
    return on, IntelligentModelRouter(msgspec.structs.replace(on.registry, rules=rules))


def _with_intake(policy: IntelligentModelRouter) -> Callable[..., Any]:
    """``route`` preceded by what the router service does to each message first: decode and
    validate the job (``jobs`` are then the raw payloads)."""
    from fleet_router.intake import decode_job

    known = set(policy.registry.models)

    def route(data: bytes, *, state: LiveState) -> Any:
        return policy.route(decode_job(data, max_bytes=512 * 1024, known_models=known), state=state)

    return route


def decisions_per_s(jobs: Sequence[Any], duration_s: float, *, intake: bool = False) -> dict[str, float]:
    """Decisions/s of the policy on ``jobs`` with inference on and off, windows alternated
    (with ``intake``, ``jobs`` are JSON payloads decoded before each decision)."""
    on, off = _policies()
    routes = {"with": on.route, "without": off.route}
    if intake:
        routes = {"with": _with_intake(on), "without": _with_intake(off)}
    state = _state()
    counts = {"with": [0, 0.0], "without": [0, 0.0]}
    windows = max(2, int(duration_s / 0.25))
    for i in range(windows):
        for name in ("with", "without") if i % 2 == 0 else ("without", "with"):
            n, elapsed = _rate(routes[name], jobs, state, duration_s / windows / 2)
            counts[name][0] += n
            counts[name][1] += elapsed
    with_s = counts["with"][0] / counts["with"][1]
    without_s = counts["without"][0] / counts["without"][1]
    return {"with_per_s": round(with_s, 1), "without_per_s": round(without_s, 1), "ratio": round(with_s / without_s, 3)}


def accuracy() -> dict[str, Any]:
    """The evaluation figures of both splits (misses left out: see inference_eval for dev's)."""
    out = {}
    for split in inference_eval.SPLITS:
        result = inference_eval.evaluate(inference_eval.load(split))
        result.pop("misses")
        out[split] = result
    return out


def run(duration_s: float = 3.0, *, latency_jobs: int = 40, latency_rounds: int = 10) -> dict[str, Any]:
    """Every figure of the case: flat keys for the report, details under ``inference``."""
    from fleet_bench.micro import _POLICY_JOBS

    gc.collect()
    bands = {f"{kb:g}kB": latency(prompts_of_size(kb, latency_jobs), rounds=latency_rounds) for kb in KB_BANDS}
    unlabelled = [Job(prompt=e.job.prompt, messages=e.job.messages, system=e.job.system) for e in _eval_examples()]
    eval_rates = decisions_per_s(unlabelled, duration_s)
    intake_rates = decisions_per_s([msgspec.json.encode(j) for j in unlabelled], duration_s / 2, intake=True)
    mix_rates = decisions_per_s(_POLICY_JOBS, duration_s / 2)
    acc = accuracy()
    dev, held = acc["dev"], acc["heldout"]
    return {
        "inference_ms_p50_8kb": bands["8kB"]["p50"],
        "inference_ms_p99_8kb": bands["8kB"]["p99"],
        "router_decisions_with_inference_per_s": eval_rates["with_per_s"],
        "router_decisions_without_inference_per_s": eval_rates["without_per_s"],
        "router_decisions_inference_ratio": eval_rates["ratio"],
        "router_decisions_inference_ratio_with_intake": intake_rates["ratio"],
        "router_decisions_inference_ratio_policy_mix": mix_rates["ratio"],
        "inference_type_macro_heldout": held["type_macro_accuracy"],
        "inference_easy_le3_heldout": held["band_accuracy"]["easy"],
        "inference_hard_ge7_heldout": held["band_accuracy"]["hard"],
        "inference_type_macro_dev": dev["type_macro_accuracy"],
        "inference_easy_le3_dev": dev["band_accuracy"]["easy"],
        "inference_hard_ge7_dev": dev["band_accuracy"]["hard"],
        "inference": {
            "latency_ms_by_size": bands,
            "decisions_eval_prompts": eval_rates,
            "decisions_eval_prompts_with_intake": intake_rates,
            "decisions_policy_mix": mix_rates,
            "accuracy": acc,
        },
    }


def _eval_examples() -> list[inference_eval.Example]:
    return [e for split in inference_eval.SPLITS for e in inference_eval.load(split)]


def table(figures: dict[str, Any]) -> str:
    """The case's figures as text: latency by size, decisions/s, accuracy and confusion tables."""
    details = figures["inference"]
    lines = [
        "inference latency (ms):  "
        + "  ".join(
            f"{size} p50 {v['p50']:.3f} / p99 {v['p99']:.3f}" for size, v in details["latency_ms_by_size"].items()
        )
    ]
    for name, rates in (
        ("eval prompts, unlabelled", details["decisions_eval_prompts"]),
        ("eval prompts, unlabelled, decoded first", details["decisions_eval_prompts_with_intake"]),
        ("policy case's job mix", details["decisions_policy_mix"]),
    ):
        lines.append(
            f"router decisions/s, {name}: with inference {rates['with_per_s']:,.0f}, without {rates['without_per_s']:,.0f}"
            f" ({rates['ratio']:.0%})"
        )
    for split, result in details["accuracy"].items():
        lines.append(inference_eval.summary(split, result))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_bench.inference_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds of decisions measured per job set")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--latency-jobs", type=int, default=40, help="prompts per size band")
    parser.add_argument("--latency-rounds", type=int, default=10, help="times each prompt is inferred")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    parser.add_argument("--split", choices=("both", "dev"), default="both", help="dev: leave the held-out split out")
    args = parser.parse_args(argv)
    figures = run(args.duration_s, latency_jobs=args.latency_jobs, latency_rounds=args.latency_rounds)
    if args.split == "dev":  # while tuning, the held-out figures stay unseen
        figures = {k: v for k, v in figures.items() if "heldout" not in k}
        figures["inference"]["accuracy"].pop("heldout")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(figures, fh, indent=2)
    print(json.dumps(figures) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
