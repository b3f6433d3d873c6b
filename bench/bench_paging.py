"""Tool output paging (keel.context.Paging): its cost per tool step, and what it saves.

Each row runs a ``keel.Agent`` with every default on (MemoryStore, a FunctionModel that calls
one tool per turn) and reports the wall time per tool step (model turn + tool call +
journal), the best of ``--rounds`` rounds, configurations taking turns within a round (the
machine is shared; the best round is the least disturbed one):

* **small result**: a 3-record JSON result, paging on (the default) against
  ``Paging.off()``: the cost of the layer on the common path, where nothing is paged;
* **large result**: a 500-record result (~60,000 characters), paging on (a handle and a
  summary) against off (the result cut at the 20,000-character output limit);
* **drill-down**: ``result_page`` steps on that handle (the pages read from the journal,
  the tool not called again).

The hooks alone (**layer**: ``Paging``'s ``wrap_tool_call`` / ``wrap_model_request``
around a ``next`` that returns at once, best of the rounds of 2,000 calls) give the layer's
own cost without the noise of a whole step: on a small result, on a request with a
200-message conversation, and making the handle of the large result.

Token figures (o200k_base): what the model is sent for the large result (the summary
against the cut text) and the three drill-down tool specs, added to a request only once a
handle exists.

    python -m bench.bench_paging [--steps 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import keel
from keel import MemoryStore, tool
from keel.context import Paging, get_tokenizer, tool_spec_tokens
from keel.core import Message, ModelSettings, ToolSpec
from keel.testing import FunctionModel, call


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "sku": f"sku-{i:05d}", "state": ("ok", "late")[i % 2], "qty": i % 9,
             "note": "lorem ipsum dolor sit amet " * 3} for i in range(n)]


SMALL, LARGE = rows(3), rows(500)


@tool(risk="read", blocking=False)
def small() -> list[dict[str, Any]]:
    """A small result."""
    return SMALL


@tool(risk="read", blocking=False)
def large() -> list[dict[str, Any]]:
    """A large result."""
    return LARGE


def _handle(messages: list[Message]) -> str:
    for m in messages:
        for p in m.parts:
            found = re.search(r'"keel_handle": "(h[0-9a-f]+)"', getattr(p, "content", ""))
            if found:
                return found.group(1)
    raise SystemExit("no handle: paging did not happen")


def agent(name: str, steps: int, paging: Paging, *, drill: bool = False) -> keel.Agent[Any]:
    """An agent that calls ``name`` ``steps`` times (or once, then ``result_page`` steps)."""

    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn >= steps:
            return "done"
        if drill and turn > 0:
            return call("result_page", {"handle": _handle(messages), "page": turn % 20 + 1})
        return call(name, {})

    return keel.Agent("bench", model=FunctionModel(fn), tools=[small, large],
                      middleware=[paging])


async def per_step(a: keel.Agent[Any], steps: int) -> float:
    t0 = time.perf_counter()
    result = await a.run("go", store=MemoryStore())
    assert result.output == "done"
    return (time.perf_counter() - t0) / steps


async def measure(steps: int, rounds: int) -> dict[str, float]:
    configs = {
        "small result, paging on (default)": agent("small", steps, Paging()),
        "small result, Paging.off()": agent("small", steps, Paging.off()),
        "large result, paging on: handle + summary": agent("large", steps, Paging()),
        "large result, Paging.off(): cut at 20,000 chars": agent("large", steps, Paging.off()),
        "drill-down: result_page on the handle": agent("large", steps, Paging(), drill=True),
    }
    for a in configs.values():  # warm up (imports, caches)
        await per_step(a, steps)
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(rounds):
        for label, a in configs.items():
            best[label] = min(best[label], await per_step(a, steps))
    return best


async def hooks(rounds: int, n: int = 2_000) -> dict[str, float]:
    """Seconds per call of the paging hooks alone, around a ``next`` that returns at once."""
    paging = Paging()
    ctx = keel.ToolContext(run_id="r", step_key="a/turn:0/tool:small#0", agent="a",
                           idempotency_key="r/k")
    small_result = await small.call({}, ctx)
    large_result = await large.call({}, ctx)
    conversation = [Message.user("hello " * 20) if i % 2 else Message.assistant("ok " * 20)
                    for i in range(200)]

    def tool_input(t: Any, step: int) -> keel.ToolCallInput:
        return keel.ToolCallInput(run_id="r", step_key=f"a/turn:{step}/tool:{t.name}#0",
                                  agent="a", tool=t, arguments="{}", ctx=ctx)

    async def small_next(inp: keel.ToolCallInput) -> keel.ToolResult:
        return small_result

    async def large_next(inp: keel.ToolCallInput) -> keel.ToolResult:
        return large_result

    small_inp, large_inp = tool_input(small, 0), tool_input(large, 0)
    model = FunctionModel(lambda m, t, s: "ok")
    requests = [keel.ModelRequestInput(run_id="r", step_key=f"a/turn:{i}/model", agent="a",
                                       model=model, messages=conversation, tools=[],
                                       settings=ModelSettings()) for i in range(n)]
    response = keel.ModelResponse(parts=())

    async def model_next(inp: keel.ModelRequestInput) -> keel.ModelResponse:
        return response

    cases: dict[str, Any] = {
        "wrap_tool_call, small result (nothing to page)":
            lambda i: paging.wrap_tool_call(small_inp, small_next),
        "wrap_model_request, 200-message conversation without a handle (scanned once)":
            lambda i: paging.wrap_model_request(requests[i], model_next),
        "wrap_tool_call, large result: making the handle and summary":
            lambda i: paging.wrap_tool_call(large_inp, large_next),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for label, make in cases.items():
            count = n if "large" not in label else n // 50
            t0 = time.perf_counter()
            for i in range(count):
                await make(i)
            best[label] = min(best[label], (time.perf_counter() - t0) / count)
    return best


async def tokens() -> dict[str, int]:
    enc = get_tokenizer("o200k_base")
    seen: dict[str, str] = {}
    for label, paging in (("summary", Paging()), ("cut", Paging.off())):
        result = await agent("large", 1, paging).run("go", store=MemoryStore())
        seen[label] = next(p.content for m in result.messages if m.role == "tool"
                           for p in m.parts)  # type: ignore[union-attr]
    specs = sum(tool_spec_tokens(t.spec, enc) for t in Paging().provide_tools())
    return {"large result as a handle's summary": enc.count(seen["summary"]),
            "large result cut at the output limit": enc.count(seen["cut"]),
            "the three drill-down tool specs": specs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = asyncio.run(measure(args.steps, args.rounds))
    print("| configuration | per tool step (µs) |\n|---|---:|")
    for label, seconds in times.items():
        print(f"| {label} | {seconds * 1e6:,.0f} |")
    print("\n| the paging hooks alone | per call (µs) |\n|---|---:|")
    for label, seconds in asyncio.run(hooks(args.rounds)).items():
        print(f"| {label} | {seconds * 1e6:,.1f} |")
    print("\n| what the model is sent | tokens (o200k_base) |\n|---|---:|")
    for label, n in asyncio.run(tokens()).items():
        print(f"| {label} | {n:,} |")


if __name__ == "__main__":
    main()
