"""Orchestration overhead of each pattern, per step, against a single agent.

Each pattern runs scripted work (``ScriptedModel`` sub-agents answering at once, no-op tools):
its run does W budgeted steps (model turns and tool calls, ``RunResult.steps``). The baseline
is one ``Agent`` in the same process doing as many steps of the same kinds (model turns
calling a no-op tool, then a final answer; a pattern's workers do the same, so both mixes are
about one tool call per model turn). Overhead per step = pattern run time / W − baseline run time /
its steps: what the pattern's orchestration (its decisions journaled as steps, plans, votes,
budget shares, sub-agent set-up) adds to each step of work. Runs are timed interleaved
(baseline, then each pattern, round after round) and each figure is a median.

    python -m bench.bench_patterns [--quick] [--store memory|sqlite] [--update-doc PATH]

``--update-doc docs/benchmarks.md`` also runs the routing bench (``bench/bench_routing.py``)
and writes both into the document's patterns section (between its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keel import Agent, FlowContext, MemoryStore, RunStore, flow, open_store, tool
from keel.testing import ScriptedModel, call

#: A case builds (runnable, input) once; the bench runs it many times.
Build = Callable[[], tuple[Any, str]]


@dataclass
class Case:
    name: str
    build: Build
    note: str = ""


@dataclass
class Figure:
    name: str
    steps: int
    journal_entries: int
    run_ms: float
    per_step_us: float
    baseline_us: float
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def overhead_us(self) -> float:
        return self.per_step_us - self.baseline_us


@tool
def noop(i: int) -> str:
    """Do nothing."""
    return f"ok {i}"


def single_agent(steps: int) -> Agent[str]:
    """One agent whose run has ``steps`` steps (odd: turns calling ``noop``, then text)."""
    turns = max(0, (steps - 1) // 2)
    script: list[Any] = [call("noop", {"i": i}) for i in range(turns)] + ["done"]
    return Agent("single", model=ScriptedModel(script, record_requests=False), tools=[noop])


def one_turn(name: str, answer: str = "done") -> Agent[str]:
    """A worker doing 3 steps of work: a model turn calling ``noop``, the call, an answer."""
    return Agent(name, model=ScriptedModel([call("noop", {"i": 0}), answer],
                                           record_requests=False), tools=[noop])


def _sequential_flow() -> tuple[Any, str]:
    agents = [one_turn(f"a{i}") for i in range(4)]

    @flow("sequence", agents=agents)
    async def body(ctx: FlowContext, input: str) -> str:
        text = input
        for agent in agents:
            text = str((await ctx.run_agent(agent, text)).output)
        return text

    return body, "go"


def _parallel_flow() -> tuple[Any, str]:
    agents = [one_turn(f"p{i}") for i in range(4)]

    @flow("fanout", agents=agents)
    async def body(ctx: FlowContext, input: str) -> list[str]:
        results = await ctx.gather(*(ctx.run_agent(a, input) for a in agents))
        return [str(r.output) for r in results]

    return body, "go"


CASES: list[Case] = [
    Case("flow: 4 sub-agents in sequence", _sequential_flow),
    Case("flow: 4 sub-agents in parallel (ctx.gather)", _parallel_flow),
]


def register(case: Case) -> None:
    CASES.append(case)


async def _time(run: Callable[[], Awaitable[Any]], min_s: float) -> float:
    """Seconds per run: the run repeated until the batch lasts ``min_s``."""
    n = 0
    gc.collect()
    started = time.perf_counter()
    while True:
        await run()
        n += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return elapsed / n


async def measure(cases: list[Case], *, store: RunStore, rounds: int,
                  min_s: float) -> list[Figure]:
    built = [(case, *case.build()) for case in cases]
    probes: dict[str, tuple[int, int]] = {}
    for case, runnable, text in built:  # one run each: its steps and journal size
        result = await runnable.run(text, store=store)
        entries = await store.read_journal(result.run_id)
        probes[case.name] = (result.steps, len(entries))
    baselines = {steps: single_agent(steps) for steps, _ in probes.values()}
    base_steps = {s: (await a.run("go", store=store)).steps for s, a in baselines.items()}
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    base_samples: dict[int, list[float]] = {s: [] for s in baselines}
    for _ in range(rounds):
        for steps, agent in baselines.items():
            base_samples[steps].append(await _time(
                lambda a=agent: a.run("go", store=store), min_s) / base_steps[steps])
        for case, runnable, text in built:
            samples[case.name].append(await _time(
                lambda r=runnable, t=text: r.run(t, store=store), min_s))
    figures = []
    for case, _, _ in built:
        steps, entries = probes[case.name]
        run_s = statistics.median(samples[case.name])
        base = statistics.median(base_samples[steps])
        figures.append(Figure(case.name, steps, entries, run_s * 1e3, run_s / steps * 1e6,
                              base * 1e6, case.note, samples[case.name]))
    return figures


def render(figures: list[Figure], store: str) -> str:
    lines = [f"Orchestration overhead per step ({store} store; µs = wall clock, median)", "",
             "| pattern | steps | journal entries | run, ms | per step, µs | single agent "
             "per step, µs | overhead per step, µs | × single agent | overhead per run, ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for f in figures:
        ratio = f.per_step_us / f.baseline_us if f.baseline_us else float("nan")
        lines.append(f"| {f.name} | {f.steps} | {f.journal_entries} | {f.run_ms:.2f} | "
                     f"{f.per_step_us:.0f} | {f.baseline_us:.0f} | {f.overhead_us:+.0f} | "
                     f"{ratio:.2f} | {f.overhead_us * f.steps / 1e3:+.2f} |")
    notes = [f"- {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def _load_patterns() -> None:
    """The pattern cases (kept apart so this file runs while a pattern is missing)."""
    try:
        from bench import bench_patterns_cases
    except ImportError as exc:  # pragma: no cover - reported, not hidden
        print(f"(pattern cases not loaded: {exc})")
        return
    for case in bench_patterns_cases.cases():
        register(case)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_patterns",
                                     description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--update-doc", metavar="PATH",
                        help="write the patterns section (with routing) into this file")
    args = parser.parse_args(argv)
    _load_patterns()
    rounds, min_s = (1, 0.01) if args.quick else (7, 0.2)

    async def go() -> list[Figure]:
        if args.store == "memory":
            return await measure(CASES, store=MemoryStore(), rounds=rounds, min_s=min_s)
        with tempfile.TemporaryDirectory() as tmp:
            async with open_store(f"sqlite:///{os.path.join(tmp, 'runs.db')}") as store:
                return await measure(CASES, store=store, rounds=rounds, min_s=min_s)

    text = render(asyncio.run(go()), args.store)
    print(text)
    if args.update_doc:
        from bench.bench_durable import update_doc

        update_doc(args.update_doc, doc_section(text), markers=MARKERS)
        print(f"wrote the patterns section of {args.update_doc}")
    return text


MARKERS = ("<!-- patterns:start -->", "<!-- patterns:end -->")


def doc_section(overhead: str) -> str:
    """The patterns section of docs/benchmarks.md: overhead and routing, with the method."""
    import platform
    import sys

    from bench.bench_routing import measure as routing
    from bench.bench_routing import table
    from keel.patterns import routing_dataset

    rows = asyncio.run(routing())
    routed = table(rows, len(routing_dataset("train")), len(routing_dataset("test")))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([
        MARKERS[0], "", "## Orchestration patterns", "",
        f"From `python -m bench.bench_patterns --update-doc docs/benchmarks.md` ({when}, "
        f"Python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cores); "
        "its own run, separate from the figures above.", "",
        "### " + overhead.splitlines()[0], "",
        "Each pattern runs its example (`examples/*.py`) on the example's scripted models; "
        "the single agent does as many steps (model turns calling a no-op tool, then an "
        "answer) in the same process, timed interleaved. *Steps* are the budgeted steps "
        "(model turns and tool calls); the pattern's own decisions (plans, critiques, "
        "routes, selections, bids, handoffs) are journal entries but not steps, so their "
        "cost shows up as overhead per step. Small examples spread that cost over few "
        "steps: the overhead per run is the steadier figure.", "",
        *overhead.splitlines()[2:], "",
        "### Routing: accuracy on the held-out split and latency per query", "",
        "`python bench/bench_routing.py`: keel's labelled set (252 customer-service "
        "utterances, six intents, every 4th held out); the learned routers see only the "
        "train split. The LLM row is a keyword `FunctionModel` standing in for a model so "
        "that the bench runs offline: its accuracy and latency are the stand-in's (a real "
        "model adds a network round trip per query). Targets: embedding p95 under 10 ms; "
        "the hybrid at least as accurate as the best single router.", "",
        routed, "", MARKERS[1], ""])


if __name__ == "__main__":
    main()
