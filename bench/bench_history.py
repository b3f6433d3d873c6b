"""The overhead of the default history policy per model step (keel.context.History).

The path users take: a ``keel.Agent`` with every default on, a plain ``def`` tool, an
in-memory store, a scripted model that calls the tool every turn and then answers. Each
configuration runs the same conversation in the same process; the figure is wall time per
model step, the best of ``--rounds`` rounds with the configurations taking turns (this
machine is shared; the best round is the least disturbed one):

* **off**: the defaults with ``History.off()`` (the conversation sent as it is);
* **default, 128k window**: the default ``History()`` on a model whose window is 128k tokens
  (``openai:gpt-4o-mini``'s facts): every request counted exactly (o200k), nothing left out;
* **default, 8k window**: the default ``History()`` on a model with an 8k window: past a few
  dozen turns every request is compacted (older turns left out);
* **summarising, 8k window**: ``History(Importance(), Summarize(), TokenBudget())`` on the
  8k model, the summary written by the same scripted model.

Each runs a short and a long conversation (``--short`` and ``--long`` tool turns): a cost flat
in run length shows as equal per-step figures.

    python -m bench.bench_history [--short 20] [--long 400] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable, Sequence

import keel
from keel.context import History, Importance, Summarize, TokenBudget, TokenCalibration
from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
)
from keel.models import Model, ModelInfo, register_model_info
from keel.runtime import Middleware, ModelNext, ModelRequestInput

register_model_info(ModelInfo(provider="test", model="bench-8k", context_window=8192,
                              tokenizer="cl100k_base"))
register_model_info(ModelInfo(provider="test", model="bench-128k", context_window=128_000,
                              tokenizer="o200k_base"))

CONFIGS: dict[str, tuple[str, Callable[[], History]]] = {
    "off": ("test:bench-128k", History.off),
    "default, 128k window": ("test:bench-128k",
                             lambda: History(calibration=TokenCalibration())),
    "default, 8k window": ("test:bench-8k", lambda: History(calibration=TokenCalibration())),
    "summarising, 8k window": ("test:bench-8k", lambda: History(
        Importance(), Summarize(), TokenBudget(), calibration=TokenCalibration())),
}


def lookup(n: int) -> str:
    """A record."""
    return f"record {n}: " + "status shipped, carrier DHL, address on file; " * 8


class Records(Model):
    """A scripted model whose own cost does not grow with the conversation (a real
    provider's does: it reads every token), so the figures are keel's: it calls ``lookup``
    for the next record until ``turns``, answers summary requests, then answers."""

    def __init__(self, turns: int, name: str) -> None:
        self.turns = turns
        self.name = name

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        if messages[0].text.startswith("You compress"):
            return ModelResponse(parts=(TextPart(text="Earlier records: all shipped."),))
        n = 0
        for part in messages[-1].tool_results:
            head = part.content.partition("record ")[2]
            n = int(head.partition(":")[0]) if head else 0
        if n >= self.turns:
            return ModelResponse(parts=(TextPart(text="All records checked."),),
                                 usage=Usage(requests=1, input_tokens=100))
        return ModelResponse(parts=(ToolCallPart(call_id=f"c{n + 1}", tool_name="lookup",
                                                 arguments=f'{{"n": {n + 1}}}'),),
                             usage=Usage(requests=1, input_tokens=100))


class Probe(Middleware):
    """Time spent inside it, summed (one outside History, one inside: the difference is
    History's own time)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.requests = 0

    async def wrap_model_request(self, inp: ModelRequestInput,
                                 next: ModelNext) -> ModelResponse:
        t0 = time.perf_counter()
        try:
            return await next(inp)
        finally:
            self.seconds += time.perf_counter() - t0
            self.requests += 1


async def one_run(config: str, turns: int) -> tuple[float, float]:
    """Seconds per model step of one run, and History's own seconds per request."""
    model_id, history = CONFIGS[config]
    outer, inner = Probe(), Probe()
    stack = [*keel.defaults()[:-1], outer, history(), inner]  # the defaults, probed
    agent = keel.Agent("bench", model=Records(turns, model_id),
                       tools=[keel.tool(lookup, risk="read")], default_middleware=False,
                       budget=keel.Budget(max_steps=10 * turns + 100),
                       instructions="You check records one by one.", middleware=stack)
    gc.collect()
    t0 = time.perf_counter()
    result = await agent.run("Check the records.", store=keel.MemoryStore())
    elapsed = time.perf_counter() - t0
    assert result.output == "All records checked.", result.output
    own = (outer.seconds - inner.seconds) / max(1, outer.requests)
    return elapsed / (turns + 1), own


async def measure(short: int, long: int, rounds: int) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {c: {} for c in CONFIGS}
    for config in CONFIGS:  # warm up: tokenizer tables, imports, first-call caches
        await one_run(config, short)
    for _ in range(rounds):
        for length_name, turns in (("short", short), ("long", long)):
            for config in CONFIGS:
                figures = await one_run(config, turns)
                for key, value in zip((length_name, length_name + "_own"), figures,
                                      strict=True):
                    prev = best[config].get(key)
                    best[config][key] = value if prev is None else min(prev, value)
    return best


def report(best: dict[str, dict[str, float]], short: int, long: int) -> str:
    off = best["off"]
    lines = [f"{'configuration':24} {'per step, ' + str(short):>15} {'per step, ' + str(long):>15}"
             f" {'vs off':>9} {'History own, ' + str(short):>18} {'own, ' + str(long):>10}",
             "-" * 96]
    for config, f in best.items():
        over = "" if config == "off" else f"{(f['long'] - off['long']) * 1e6:+7.0f} us"
        lines.append(f"{config:24} {f['short'] * 1e6:12.0f} us {f['long'] * 1e6:12.0f} us "
                     f"{over:>9} {f['short_own'] * 1e6:15.0f} us {f['long_own'] * 1e6:7.0f} us")
    return "\n".join(lines)


def main() -> None:
    logging.getLogger("keel.guard").setLevel(logging.ERROR)  # the tool's risk warning
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    best = asyncio.run(measure(args.short, args.long, args.rounds))
    print(report(best, args.short, args.long))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"short": args.short, "long": args.long, "per_step_s": best}, f,
                      indent=2)


if __name__ == "__main__":
    main()
