"""What keel's Metrics middleware costs per agent step, against the same agent without it,
in the same process (interleaved rounds in alternating order, medians of CPU time).

A step is one model turn and one tool call (a ~200-character look-up), as in
``bench/bench_guards.py``. Configurations:

* **metrics off**: ``keel.Agent`` with its defaults but without :class:`keel.observe.Metrics`;
* **metrics on**: ``keel.Agent`` as it comes (Metrics on, nothing scraping);
* **metrics on, tenant**: with a ``tenant_of`` (one more label on runs, tokens and cost);
* **metrics on, multiprocess** is not measured here: prometheus_client then writes each
  value to a memory-mapped file (set ``PROMETHEUS_MULTIPROC_DIR`` before running this
  script to measure it).

Also: the bare middleware hooks with no agent around them (µs per model + tool hook pair).

    python -m bench.bench_metrics [--steps 50] [--rounds 15] [--update-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keel
from bench.bench_guards import SHORT, USER
from bench.bench_keel import BenchModel
from bench.common import write_doc_section
from keel import Middleware
from keel.observe import Metrics

MARKERS = ("<!-- metrics:start -->", "<!-- metrics:end -->")


def _agent_class(change: Callable[[list[Middleware]], list[Middleware]]
                 ) -> type[keel.Agent[str]]:
    class Variant(keel.Agent[str]):
        def make_defaults(self) -> Sequence[Middleware]:
            return change(list(super().make_defaults()))

    return Variant


def _tenant(stack: list[Middleware]) -> list[Middleware]:
    return [Metrics(tenant_of=lambda start: "acme") if isinstance(m, Metrics) else m
            for m in stack]


def configs() -> dict[str, type[keel.Agent[str]]]:
    return {
        "metrics off": _agent_class(lambda s: [m for m in s if not isinstance(m, Metrics)]),
        "metrics on": keel.Agent,
        "metrics on, tenant": _agent_class(_tenant),
    }


def make_agent(cls: type[keel.Agent[str]], steps: int) -> keel.Agent[str]:
    async def lookup(i: int) -> str:
        """Look an order up."""
        return SHORT

    tool = keel.tool(name="lookup", risk="read")(lookup)
    turns: list[Any] = [[("lookup", {"i": k})] for k in range(steps)] + ["done"]
    return cls("bench", model=BenchModel(turns), tools=[tool], budget=keel.Budget.unlimited())


async def time_run(agent: keel.Agent[str]) -> float:
    store = keel.MemoryStore()
    gc.collect()
    t0 = time.process_time()  # CPU time: other processes on a shared machine do not count
    result = await agent.run(USER, store=store)
    elapsed = time.process_time() - t0
    if result.output != "done":
        raise SystemExit(f"bench run failed: {result.output!r}")
    return elapsed


async def measure(steps: int, rounds: int) -> dict[str, float]:
    """µs per step, median over rounds, per configuration."""
    agents = {name: make_agent(cls, steps) for name, cls in configs().items()}
    samples: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():  # warm up
        await time_run(agent)
    order = list(agents.items())
    for _ in range(rounds):
        for name, agent in order:
            samples[name].append(await time_run(agent) / steps * 1e6)
        order.reverse()  # no configuration always runs first
    return {name: statistics.median(v) for name, v in samples.items()}


async def hooks_alone(n: int = 20_000) -> float:
    """µs for one model hook and one tool hook of a bare Metrics (no agent, no journal)."""
    from keel.core import ModelResponse, ModelSettings, TextPart, ToolContext, Usage
    from keel.runtime import ModelRequestInput, ToolCallInput
    from keel.tools import ToolResult

    metrics = Metrics()
    agent = make_agent(keel.Agent, 1)
    response = ModelResponse(parts=(TextPart(text="x"),),
                             usage=Usage(requests=1, input_tokens=10, output_tokens=5,
                                         cost_usd=0.001))
    result = ToolResult.of("ok")
    tool = agent.toolset.get("lookup")
    assert tool is not None
    minp = ModelRequestInput(run_id="r", step_key="k", agent="bench", model=agent.model,
                             messages=(), tools=(), settings=ModelSettings())
    tinp = ToolCallInput(run_id="r", step_key="k", agent="bench", tool=tool, arguments="{}",
                         ctx=ToolContext(run_id="r", step_key="k", agent="bench",
                                         idempotency_key="r/k", scopes=frozenset()))

    async def model_next(inp: ModelRequestInput) -> ModelResponse:
        return response

    async def tool_next(inp: ToolCallInput) -> ToolResult:
        return result

    async def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await model_next(minp)
            await tool_next(tinp)
        return time.perf_counter() - t0

    async def wrapped() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await metrics.wrap_model_request(minp, model_next)
            await metrics.wrap_tool_call(tinp, tool_next)
        return time.perf_counter() - t0

    extra = [(await wrapped()) - (await bare()) for _ in range(5)]
    return statistics.median(extra) / n * 1e6


def table(results: dict[str, float], hooks: float) -> list[str]:
    base = results["metrics off"]
    lines = ["| configuration | µs per step | over metrics off |", "|---|---:|---:|"]
    for name, us in results.items():
        extra = "" if name == "metrics off" else f"+{us - base:.1f} µs ({us / base:.2f}×)"
        lines.append(f"| {name} | {us:.1f} | {extra} |")
    lines.append(f"| the Metrics hooks alone (model + tool) | {hooks:.1f} | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--update-doc", type=Path)
    args = parser.parse_args()
    results = asyncio.run(measure(args.steps, args.rounds))
    hooks = asyncio.run(hooks_alone())
    lines = table(results, hooks)
    print("\n".join(lines))
    if args.update_doc is not None:
        intro = (f"Measured by `python -m bench.bench_metrics --steps {args.steps} "
                f"--rounds {args.rounds}` (Python {sys.version.split()[0]}); µs per agent "
                "step (CPU time), medians of interleaved rounds, in-memory store.")
        write_doc_section(args.update_doc, MARKERS, intro, lines)
        print(f"wrote the metrics section of {args.update_doc}")


if __name__ == "__main__":
    main()
