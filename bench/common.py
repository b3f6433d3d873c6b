"""Shared workload definitions, timing helpers and the results table.

The workloads (identical for every framework):

* **step run of N steps**: the model answers N times with one call of the ``lookup`` tool each,
  then once with the final text ``"done"``. So N tool calls and N + 1 model turns. A *step* is
  one model turn plus one tool call; the final answer turn is counted in the run time but not
  as a step.
* **concurrent runs**: ``CONCURRENT_RUNS`` runs of ``CONCURRENT_TURNS`` model turns each
  (``CONCURRENT_TURNS - 1`` tool calls, then the final answer) run with ``asyncio.gather``;
  every model turn awaits ``MODEL_DELAY_S``. Ideal wall time: turns x delay.
* **parallel tools**: one model turn that calls ``PARALLEL_TOOLS`` different tools, each of
  which awaits ``TOOL_DELAY_S``, then a final answer turn. Ideal wall time: one tool delay.

Every fake model works out which turn it is from the length of the conversation it is sent
(O(1), stateless, so one agent can serve many concurrent runs).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

STEP_SIZES = (1, 10, 100, 1000)
CONCURRENT_RUNS = 1000
CONCURRENT_TURNS = 5
MODEL_DELAY_S = 0.05
PARALLEL_TOOLS = 5
TOOL_DELAY_S = 0.1
FINAL_TEXT = "done"

RunFn = Callable[[], Awaitable[None]]


# --------------------------------------------------------------------------- the tools


async def lookup(i: int) -> str:
    """Look up item i."""
    return f"item {i}"


def lookup_def(i: int) -> str:
    """Look up item i (the same tool as a plain ``def`` function, as most users write it)."""
    return f"item {i}"


def make_sleeper(index: int, delay: float) -> Callable[[int], Awaitable[str]]:
    """An async tool ``wait_<index>`` that awaits ``delay`` seconds."""

    async def sleeper(i: int) -> str:
        await asyncio.sleep(delay)
        return f"waited {i}"

    sleeper.__name__ = sleeper.__qualname__ = f"wait_{index}"
    sleeper.__doc__ = f"Wait {delay} s (tool {index})."
    return sleeper


def sleeper_names(n: int) -> list[str]:
    return [f"wait_{k}" for k in range(n)]


def turn_of(history_len: int, prefix: int = 1) -> int:
    """Turn number for a conversation of ``prefix`` opening messages followed by
    (assistant, tool result) pairs."""
    return (history_len - prefix) // 2


class Framework(Protocol):
    """What each benchmarked framework provides: async context managers that yield a
    zero-argument coroutine function doing one complete run (and checking its result)."""

    name: str

    def step_run(self, steps: int, delay: float = 0.0) -> AbstractAsyncContextManager[RunFn]: ...

    def parallel_run(self, tools: int, tool_delay: float) -> AbstractAsyncContextManager[RunFn]:
        ...


def check(condition: bool, what: str) -> None:
    """Raise (not assert: benchmarks may run with -O) if a run's result is wrong."""
    if not condition:
        raise RuntimeError(f"benchmark run produced a wrong result: {what}")


# ---------------------------------------------------------------------- subprocesses


def run_child(args: Sequence[str], timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m bench.run_all --child ...`` and return the JSON it prints last."""
    cmd = [sys.executable, "-m", "bench.run_all", "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child {' '.join(args)} failed: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def import_time(module: str, *, repeats: int = 5) -> float:
    """Best wall time of ``import module`` in a fresh interpreter, in seconds."""
    code = ("import time; t = time.perf_counter(); import " + module +
            "; print(time.perf_counter() - t)")
    best = math.inf
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=120)
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best


def _importtime(code: str) -> list[tuple[str, float]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                         capture_output=True, text=True, check=True, timeout=120)
    rows: list[tuple[str, float]] = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) == 3:
            rows.append((parts[2].strip(), int(parts[1]) / 1e6))
    return rows


def importtime_top(module: str, top: int = 8) -> list[tuple[str, float]]:
    """The slowest imports (cumulative seconds) under ``python -X importtime -c 'import M'``,
    leaving out what the interpreter imports at start-up anyway (``site``, ``.pth`` files)."""
    startup = {name for name, _ in _importtime("pass")}
    rows = [r for r in _importtime(f"import {module}") if r[0] not in startup]
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:top]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]
        out = [self.title, "  ".join(h.ljust(w) for h, w in zip(self.headers, widths,
                                                                  strict=True))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        return "\n".join(out) + "\n"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}"


# ------------------------------------------------------------------------ doc sections


def write_doc_section(path: Any, markers: tuple[str, str], intro: str,
                      lines: Sequence[str]) -> None:
    """Replace what lies between ``markers`` in the Markdown file ``path`` with ``intro``
    (how the figures were measured) and ``lines`` (the table); a file without the start
    marker is an error (the section must be placed by hand first)."""
    from pathlib import Path

    doc = Path(path)
    text = doc.read_text()
    start, end = markers
    if start not in text:
        raise SystemExit(f"{doc} has no {start} marker")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{start}\n{intro}\n\n" + "\n".join(lines) + f"\n{end}{tail}")
