"""What keel's default guards cost per agent step, measured against the same agent with the
guards off, in the same process (interleaved rounds, medians).

A step is one model turn and one tool call. Workloads:

* **short**: a ~100-character user message, a ~200-character tool output per step (a look-up),
  a short final answer;
* **10 KB**: the same with a 10 KB JSON tool output per step;
* **write tool**: the short workload with a ``write`` tool, so taint tracking looks up every
  argument value in the conversation (each call's number, ``1000 + k``, is one the model
  wrote: an allowed call, after a look-up in every step).

``guards off`` is ``keel.Agent`` with retry and the circuit breaker but none of the guards;
``guards on`` is ``keel.Agent`` as it comes. Each guard is also measured alone (the others
off) on the short workload, to show where the cost goes.

    python -m bench.bench_guards [--steps 50] [--rounds 15] [--update-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keel
from bench.bench_keel import BenchModel
from bench.common import write_doc_section
from keel import Middleware
from keel.guard import default_guards

USER = ("Hi, my order 4411 has not arrived yet and the tracking page has not changed since "
        "Monday. Can you check?")[:100]
SHORT = json.dumps({"order": 4411, "status": "in transit", "carrier": "DHL",
                    "last_event": "left the sorting centre in Leipzig", "eta": "2026-12-09",
                    "items": [{"sku": "KB-201", "name": "keyboard", "qty": 1}]})[:200]
LONG = json.dumps([{"id": i, "name": f"customer {i}", "city": "Leipzig", "status": "active",
                    "note": "prefers e-mail, ordered twice this year"} for i in range(80)])
LONG = LONG[:10_240]
MARKERS = ("<!-- guards:start -->", "<!-- guards:end -->")


def _agent_class(keep: Callable[[Middleware], bool]) -> type[keel.Agent[str]]:
    class Variant(keel.Agent[str]):
        def make_defaults(self) -> Sequence[Middleware]:
            return [m for m in super().make_defaults() if keep(m)]

    return Variant


def _is_guard(m: Middleware) -> bool:
    return type(m).__module__.startswith("keel.guard")


def configs() -> dict[str, type[keel.Agent[str]]]:
    out: dict[str, type[keel.Agent[str]]] = {
        "guards off": _agent_class(lambda m: not _is_guard(m)),
        "guards on": keel.Agent,
    }
    for guard in default_guards():
        name = type(guard).__name__
        out[f"only {name}"] = _agent_class(
            lambda m, n=name: not _is_guard(m) or type(m).__name__ == n)  # type: ignore[misc]
    return out


def make_agent(cls: type[keel.Agent[str]], steps: int, output: str,
               risk: str) -> keel.Agent[str]:
    async def lookup(i: int) -> str:
        """Look an order up."""
        return output

    tool = keel.tool(name="lookup", risk=risk)(lookup)  # type: ignore[call-overload]
    # 1000 + k: a number taint tracking looks up (whole numbers under 100 are not), and one
    # that no tool output holds (the output's numbers are 4411, 2026, 201 ...).
    turns: list[Any] = [[("lookup", {"i": 1000 + k})] for k in range(steps)] + ["done"]
    return cls("bench", model=BenchModel(turns), tools=[tool], budget=keel.Budget.unlimited())


async def time_run(agent: keel.Agent[str]) -> tuple[float, float]:
    """The run's wall-clock and CPU time (this process), in seconds."""
    store = keel.MemoryStore()
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    result = await agent.run(USER, store=store)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if result.output != "done":
        raise SystemExit(f"bench run failed: {result.output!r}")
    return elapsed, cpu


async def measure(steps: int, rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """µs per step (wall clock, CPU time), medians over rounds, per workload and config."""
    workloads = {"short": (SHORT, "read"), "10 KB": (LONG, "read"),
                 "write tool": (SHORT, "write")}
    cfgs = configs()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for wname, (output, risk) in workloads.items():
        chosen = cfgs if wname == "short" else {k: cfgs[k] for k in ("guards off",
                                                                      "guards on")}
        agents = {name: make_agent(cls, steps, output, risk) for name, cls in chosen.items()}
        walls: dict[str, list[float]] = {name: [] for name in agents}
        cpus: dict[str, list[float]] = {name: [] for name in agents}
        for agent in agents.values():  # warm up
            await time_run(agent)
        for _ in range(rounds):
            for name, agent in agents.items():
                wall, cpu = await time_run(agent)
                walls[name].append(wall / steps * 1e6)
                cpus[name].append(cpu / steps * 1e6)
        out[wname] = {name: (statistics.median(walls[name]), statistics.median(cpus[name]))
                      for name in agents}
    return out


def table(results: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    lines = ["| workload | configuration | µs per step | over guards off | CPU µs per step "
             "| CPU over guards off |", "|---|---|---:|---:|---:|---:|"]
    for wname, by_cfg in results.items():
        base, base_cpu = by_cfg["guards off"]
        for name, (us, cpu) in by_cfg.items():
            extra = "" if name == "guards off" else f"+{us - base:.1f} µs ({us / base:.2f}×)"
            extra_cpu = "" if name == "guards off" else f"+{cpu - base_cpu:.1f} µs"
            lines.append(f"| {wname} | {name} | {us:.1f} | {extra} | {cpu:.1f} | {extra_cpu} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--update-doc", type=Path)
    args = parser.parse_args()
    if not 1 <= args.steps <= 1000:
        parser.error("--steps: 1 to 1000 (the look-up numbers 1000 + k stay clear of the "
                     "tool output's)")
    results = asyncio.run(measure(args.steps, args.rounds))
    lines = table(results)
    print("\n".join(lines))
    if args.update_doc is not None:
        intro = (f"Measured by `python -m bench.bench_guards --steps {args.steps} "
                f"--rounds {args.rounds}` (Python {sys.version.split()[0]}); µs per agent "
                "step, medians of interleaved rounds, in-memory store; wall clock, and the CPU "
                "time of this process (steadier when other work shares the machine).")
        write_doc_section(args.update_doc, MARKERS, intro, lines)
        print(f"wrote the guards section of {args.update_doc}")


if __name__ == "__main__":
    main()
