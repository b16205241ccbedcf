"""py-spy attached to running fleet processes, summarised as text under ``.bench/``.

``py-spy record --format raw --function --nonblocking`` writes collapsed stacks (one line per
distinct stack: ``frame;frame;...;leaf count``). The summary lists, per process, the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive),
as a share of the non-idle samples. py-spy is optional: without it the case is skipped.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fleet_bench.infra import Proc

#: samples per second
RATE = 100
#: frames of the fleet's own code (after _frame_name shortened the path)
_OWN = re.compile(r"\((shared|services|workers|router|ledger|emulators)/")
#: frames of the event loop waiting for I/O: time the process had nothing to do
_IDLE = re.compile(r"^(\w*Selector\.)?(select|poll) \(selectors\.py")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(procs: list[Proc], out_dir: Path, duration_s: float, label: str) -> list[tuple[Proc, Path, subprocess.Popen]]:
    """Start one py-spy per process (they run in parallel for ``duration_s``)."""
    exe = py_spy()
    if exe is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    running = []
    for p in procs:
        raw = out_dir / f"{label}-{p.name}.raw"
        args = [
            exe,
            "record",
            "--pid",
            str(p.pid),
            "--duration",
            str(int(max(1, duration_s))),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            "--output",
            str(raw),
        ]
        running.append((p, raw, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return running


def finish(running: list[tuple[Proc, Path, subprocess.Popen]], duration_s: float, top: int = 25) -> dict[str, dict]:
    """Wait for the recorders, write ``<raw>.txt`` summaries, return the top frames per process."""
    out: dict[str, dict] = {}
    for proc, raw, rec in running:
        try:
            _, err = rec.communicate(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            rec.kill()
            _, err = rec.communicate()
        if not raw.exists():
            out[proc.name] = {"error": (err or b"").decode(errors="replace")[-300:]}
            continue
        summary = summarise(raw.read_text(errors="replace"), duration_s=duration_s, top=top)
        raw.with_suffix(".txt").write_text(render(proc.name, summary))
        out[proc.name] = {
            "busy_share": summary["busy_share"],
            "top_self": summary["self"][:10],
            "top_inclusive": summary["inclusive"][:10],
            "top_own": summary["own"][:10],
            "summary_file": str(raw.with_suffix(".txt")),
        }
    return out


def _frame_name(frame: str) -> str:
    # "handle (fleet_shared/loop.py:97)" -> keep it; strip site-packages paths to the package
    return re.sub(r"\(.*?(site-packages|lib/python3\.\d+)/", "(", frame.strip())


def summarise(raw_text: str, *, duration_s: float, top: int = 25) -> dict:
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    idle = 0
    for line in raw_text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        if _IDLE.match(frames[-1]):
            idle += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            incl_counts[f] += n
    busy = total - idle

    def ranked(counter: collections.Counter[str]) -> list[list]:
        return [[name, round(100.0 * n / max(1, total), 1)] for name, n in counter.most_common(top)]

    own = collections.Counter({f: n for f, n in incl_counts.items() if _OWN.search(f)})
    return {
        "own": ranked(own),
        "samples": total,
        "idle_samples": idle,
        # non-idle samples over the samples one busy thread would give: ~ the share of one core
        "busy_share": round(busy / max(1.0, RATE * duration_s), 3),
        "self": ranked(self_counts),
        "inclusive": ranked(incl_counts),
    }


def render(name: str, summary: dict) -> str:
    lines = [
        f"py-spy profile of {name}: {summary['samples']} samples at {RATE} Hz "
        f"({summary['idle_samples']} in the event loop's select), busy ~{summary['busy_share']:.0%} of a core",
        "",
        "self %   function (innermost frame)",
    ]
    lines += [f"{pct:6.1f}   {fn}" for fn, pct in summary["self"]]
    lines += ["", "incl %   the fleet's own functions (anywhere on the stack)"]
    lines += [f"{pct:6.1f}   {fn}" for fn, pct in summary["own"]]
    lines += ["", "incl %   function (anywhere on the stack)"]
    lines += [f"{pct:6.1f}   {fn}" for fn, pct in summary["inclusive"]]
    return "\n".join(lines) + "\n"
