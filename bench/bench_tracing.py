"""What keel's default tracing costs per agent step, against the same agent with tracing off,
in the same process (interleaved rounds, medians).

A step is one model turn and one tool call (a ~200-character look-up), as in
``bench_guards``. Configurations, all ``keel.Agent`` with every other default on:

* **tracing off**: the default ``Tracing`` middleware removed;
* **tracing on, no SDK**: ``keel.Agent`` as it comes, no OpenTelemetry SDK configured (the
  API's no-op provider): what every user pays;
* **tracing on, SDK**: an SDK ``TracerProvider`` with a batch processor and an exporter
  that drops what it gets (the cost of making and queueing the spans, not of sending them).

    python -m bench.bench_tracing [--steps 50] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import keel
from bench.bench_guards import SHORT, make_agent, time_run
from keel import Middleware
from keel.observe import Tracing


def _without_tracing() -> type[keel.Agent[str]]:
    class Off(keel.Agent[str]):
        def make_defaults(self) -> Sequence[Middleware]:
            return [m for m in super().make_defaults() if not isinstance(m, Tracing)]

    return Off


def _with_sdk() -> type[keel.Agent[str]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))

    class Sdk(keel.Agent[str]):
        def make_defaults(self) -> Sequence[Middleware]:
            return [Tracing(tracer_provider=provider) if isinstance(m, Tracing) else m
                    for m in super().make_defaults()]

    return Sdk


async def measure(steps: int, rounds: int) -> dict[str, float]:
    """µs per step, median over rounds, for each configuration."""
    cfgs = {"tracing off": _without_tracing(), "tracing on, no SDK": keel.Agent,
            "tracing on, SDK": _with_sdk()}
    agents = {name: make_agent(cls, steps, SHORT, "read") for name, cls in cfgs.items()}
    samples: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():  # warm up
        await time_run(agent)
    for _ in range(rounds):
        for name, agent in agents.items():
            samples[name].append(await time_run(agent) / steps * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


async def measure_hooks(n: int, rounds: int) -> dict[str, float]:
    """µs per step that the no-SDK Tracing hooks add, measured at the seam: one model
    request and one tool call through a middleware stack with and without ``Tracing``
    (fast, so the other noise on the machine matters less; best of ``rounds``)."""
    from keel.core import ModelResponse, ModelSettings, TextPart, ToolContext
    from keel.runtime import MiddlewareStack, ModelRequestInput, ToolCallInput
    from keel.testing import ScriptedModel

    async def noop() -> str:
        """Nothing."""
        return "ok"

    tool = keel.tool(risk="read")(noop)
    model = ScriptedModel(["x"])
    answer = ModelResponse(parts=(TextPart(text="x"),))

    async def request(*args: Any) -> ModelResponse:
        return answer

    model.request = request  # type: ignore[method-assign]
    ctx = ToolContext(run_id="r", step_key="k", agent="a", idempotency_key="r/k")
    m_inp = ModelRequestInput(run_id="r", step_key="k", agent="a", model=model, messages=[],
                              tools=[], settings=ModelSettings())
    t_inp = ToolCallInput(run_id="r", step_key="k", agent="a", tool=tool, arguments="{}",
                          ctx=ctx)
    stacks = {"off": MiddlewareStack([Middleware()]), "on": MiddlewareStack([Tracing()])}
    best: dict[str, float] = {k: float("inf") for k in stacks}
    for _ in range(rounds):
        for name, stack in stacks.items():
            t0 = time.perf_counter()
            for _ in range(n):
                await stack.model_request(m_inp)
                await stack.tool_call(t_inp)
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    return {"seam, tracing off": best["off"], "seam, tracing on, no SDK": best["on"],
            "added per step": best["on"] - best["off"]}


def table(results: dict[str, float]) -> list[str]:
    base = results["tracing off"]
    lines = ["| configuration | µs per step | over tracing off |", "|---|---:|---:|"]
    for name, us in results.items():
        extra = "" if name == "tracing off" else f"{us - base:+.1f} µs ({us / base:.3f}×)"
        lines.append(f"| {name} | {us:.1f} | {extra} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    hooks = asyncio.run(measure_hooks(20_000, args.rounds))
    print("\n".join(table(asyncio.run(measure(args.steps, args.rounds)))))
    print()
    for name, us in hooks.items():
        print(f"{name}: {us:.2f} µs")


if __name__ == "__main__":
    main()
