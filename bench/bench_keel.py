"""keel and the plain-Python floor.

The floor is the least any framework can do for the same workload: a ``while`` loop that
awaits a trivial fake model function, appends its answer to a list, awaits the same async
tool function (:func:`bench.common.lookup`) with the answer's arguments and appends the
result, until the answer has no tool call. No validation, no journal, no budgets.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import keel
from bench.common import (
    FINAL_TEXT,
    RunFn,
    check,
    lookup,
    lookup_def,
    make_sleeper,
    sleeper_names,
    turn_of,
)
from keel.core import Message, ModelResponse, ModelSettings, TextPart, ToolCallPart, ToolSpec
from keel.models import ScriptedModel, call

# --------------------------------------------------------------------------------- floor


@dataclass(frozen=True, slots=True)
class FakeTurn:
    """A fake model answer: tool calls (name, arguments) or, when there are none, text."""

    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str = ""


async def fake_model(script: Sequence[FakeTurn], history: list[Any], delay: float) -> FakeTurn:
    if delay:
        await asyncio.sleep(delay)
    return script[turn_of(len(history))]


class Floor:
    """The plain loop."""

    name = "plain loop (floor)"

    @asynccontextmanager
    async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
        script = [FakeTurn(calls=(("lookup", {"i": k}),)) for k in range(steps)]
        script.append(FakeTurn(calls=(), text=FINAL_TEXT))

        async def run() -> None:
            history: list[Any] = [("user", "go")]
            while True:
                answer = await fake_model(script, history, delay)
                history.append(("assistant", answer))
                if not answer.calls:
                    break
                _, args = answer.calls[0]
                history.append(("tool", await lookup(**args)))
            check(answer.text == FINAL_TEXT and len(history) == 2 * steps + 2, "floor steps")

        yield run

    @asynccontextmanager
    async def parallel_run(self, tools: int, tool_delay: float) -> AsyncIterator[RunFn]:
        fns = {name: make_sleeper(k, tool_delay) for k, name in enumerate(sleeper_names(tools))}
        script = [FakeTurn(calls=tuple((name, {"i": k}) for k, name in enumerate(fns))),
                  FakeTurn(calls=(), text=FINAL_TEXT)]

        async def run() -> None:
            history: list[Any] = [("user", "go")]
            while True:
                answer = await fake_model(script, history, 0.0)
                history.append(("assistant", answer))
                if not answer.calls:
                    break
                outs = await asyncio.gather(*(fns[n](**a) for n, a in answer.calls))
                history.append(("tool", outs))
            check(answer.text == FINAL_TEXT and len(history[2][1]) == tools, "floor parallel")

        yield run


# ---------------------------------------------------------------------------------- keel


class BenchModel(keel.Model):
    """A zero-cost keel model: answers are built once; the turn is read off the length of
    the conversation (user message, then assistant/tool pairs)."""

    def __init__(self, turns: Sequence[Sequence[tuple[str, dict[str, Any]]] | str], *,
                 delay: float = 0.0) -> None:
        self.name = "bench:fake"
        self.delay = delay
        self.responses: list[ModelResponse] = []
        usage = keel.Usage(requests=1, input_tokens=10, output_tokens=5)
        for n, turn in enumerate(turns):
            if isinstance(turn, str):
                parts: tuple[Any, ...] = (TextPart(text=turn),)
            else:
                parts = tuple(ToolCallPart(call_id=f"call_{n}_{k}", tool_name=name,
                                           arguments=json.dumps(args))
                              for k, (name, args) in enumerate(turn))
            self.responses.append(ModelResponse(
                parts=parts, usage=usage, model=self.name,
                finish_reason="stop" if isinstance(turn, str) else "tool_calls"))

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.responses[turn_of(len(messages))]


def scripted_model(steps: int, delay: float) -> ScriptedModel:
    """keel's own ScriptedModel for the same script (without request recording if this
    version of keel can switch it off)."""
    script: list[Any] = [call("lookup", {"i": k}) for k in range(steps)] + [FINAL_TEXT]
    params = inspect.signature(ScriptedModel).parameters
    if "record_requests" in params:
        return ScriptedModel(script, delay=delay, record_requests=False)
    return ScriptedModel(script, delay=delay)


#: How the benchmarked ``lookup`` tool is written: ``async def``, a plain ``def`` (run in a
#: worker thread), or a plain ``def`` declared ``blocking=False`` (called on the event loop).
TOOL_KINDS = {"async": "async def tool", "def": "def tool", "inline": "def tool, blocking=False"}
_JOURNALS = {"memory": "in-memory journal", "sqlite": "SQLite journal",
             "default": "no store=: default SQLite store"}


class Keel:
    """keel with a given journal (``memory``, ``sqlite``, or ``default``: no ``store=``, so
    the default SQLite store, pointed at a temporary file through ``KEEL_STORE``), model
    (``bench`` or ``scripted``) and tool kind (see :data:`TOOL_KINDS`);
    ``default_middleware=False`` drops the defaults (Retry, CircuitBreaker)."""

    def __init__(self, journal: str = "memory", model: str = "bench", *,
                 default_middleware: bool = True, tool: str = "async") -> None:
        self.journal = journal
        self.model = model
        self.default_middleware = default_middleware
        suffix = "" if model == "bench" else ", ScriptedModel"
        self.name = f"keel ({_JOURNALS[journal]}, {TOOL_KINDS[tool]}{suffix})"
        if not default_middleware:
            self.name = f"keel, no default middleware ({TOOL_KINDS[tool]})"
        self.tool_kind = tool
        self.tool = (keel.tool(lookup) if tool == "async"
                     else keel.tool(name="lookup", blocking=tool != "inline")(lookup_def))

    @asynccontextmanager
    async def _store(self) -> AsyncIterator[keel.RunStore | None]:
        if self.journal == "memory":
            yield keel.MemoryStore()
            return
        with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
            # four slashes: an absolute path (``sqlite:///x.db`` is relative to the cwd)
            url = "sqlite:///" + os.path.join(tmp, "runs.db")
            if self.journal == "default":
                before = os.environ.get("KEEL_STORE")
                os.environ["KEEL_STORE"] = url
                try:
                    yield None  # agent.run(...) without store=
                finally:
                    _restore("KEEL_STORE", before)
                    _close_kept()
                return
            store = keel.open_store(url)
            try:
                yield store
            finally:
                await store.close()

    def _model(self, steps: int, delay: float) -> keel.Model:
        if self.model == "scripted":
            return scripted_model(steps, delay)
        turns: list[Any] = [[("lookup", {"i": k})] for k in range(steps)] + [FINAL_TEXT]
        return BenchModel(turns, delay=delay)

    @asynccontextmanager
    async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
        agent: keel.Agent[str] = keel.Agent("bench", model=self._model(steps, delay),
                                            tools=[self.tool], budget=keel.Budget.unlimited(),
                                            default_middleware=self.default_middleware)
        async with self._store() as store:

            async def run() -> None:
                result = await agent.run("go", store=store)
                check(result.output == FINAL_TEXT and result.steps == 2 * steps + 1,
                      f"keel steps: {result.output!r}, {result.steps}")

            yield run

    @asynccontextmanager
    async def parallel_run(self, tools: int, tool_delay: float) -> AsyncIterator[RunFn]:
        names = sleeper_names(tools)
        keel_tools = [keel.tool(make_sleeper(k, tool_delay)) for k in range(tools)]
        model = BenchModel([[(n, {"i": k}) for k, n in enumerate(names)], FINAL_TEXT])
        agent: keel.Agent[str] = keel.Agent("bench", model=model, tools=keel_tools,
                                            budget=keel.Budget.unlimited(),
                                            default_middleware=self.default_middleware)
        async with self._store() as store:

            async def run() -> None:
                result = await agent.run("go", store=store)
                check(result.output == FINAL_TEXT and result.steps == tools + 2,
                      f"keel parallel: {result.output!r}, {result.steps}")

            yield run


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _close_kept() -> None:
    """Close the default stores keel keeps open (the temporary file goes next)."""
    try:
        from keel.runtime._kept_stores import close_kept
    except ImportError:  # a keel that opens and closes the default store around each run
        return
    close_kept()


def keel_frameworks() -> dict[str, Any]:
    """The keel-side frameworks by key (the floor first). ``keel-default`` is the path most
    users take: a plain ``def`` tool, no ``store=``, every default on."""
    return {"floor": Floor(), "keel": Keel("memory"), "keel-def": Keel("memory", tool="def"),
            "keel-inline": Keel("memory", tool="inline"), "keel-sqlite": Keel("sqlite"),
            "keel-default": Keel("default", tool="def"),
            "keel-scripted": Keel("memory", "scripted")}


# ----------------------------------------------- tool kinds, store=, default middleware


def main() -> None:
    """``python -m bench.bench_keel [--quick]``: per-step cost of keel's variants in this
    process, interleaved (steps benchmark only): the async tool against a plain ``def`` tool
    (worker thread) and one declared ``blocking=False``, ``store=`` a MemoryStore / an SQLite
    store against no ``store=`` (the default SQLite store), and the default middleware
    (Retry, CircuitBreaker) against ``default_middleware=False``. The ratios are to the
    async-tool, in-memory run of the same size, measured alongside."""
    import sys

    from bench.timing import SuiteConfig, run_suites

    fws: dict[str, Any] = {
        "floor": Floor(), "keel": Keel("memory"), "keel-def": Keel("memory", tool="def"),
        "keel-inline": Keel("memory", tool="inline"),
        "keel-nodefault": Keel("memory", default_middleware=False),
        "keel-sqlite": Keel("sqlite"), "keel-sqlite-def": Keel("sqlite", tool="def"),
        "keel-default": Keel("default", tool="def")}
    quick = "--quick" in sys.argv[1:]
    cfg = (SuiteConfig(sizes=(1, 10), repeats=2, warmup_s=0.1, benches=("steps",)) if quick
           else SuiteConfig(sizes=(1, 10, 100, 1000), repeats=9, benches=("steps",)))
    out = asyncio.run(run_suites(fws, cfg))
    print("µs per step (wall, median of interleaved batches); in brackets: × the async-tool,"
          " in-memory run of the same size")
    print(f"{'':58}" + "".join(f"{n:>16}" for n in cfg.sizes))
    for key, fw in fws.items():
        cells = []
        for n in cfg.sizes:
            mine, base = out[key]["steps"][n].wall, out["keel"]["steps"][n].wall
            cells.append(f"{mine / n * 1e6:>8.1f} ({mine / base:4.2f}×)")
        print(f"{fw.name:58}" + "".join(f"{c:>16}" for c in cells))
    for key in ("keel", "keel-def", "keel-inline"):
        over = [(out[key]["steps"][n].wall - out["floor"]["steps"][n].wall) / n * 1e6
                for n in cfg.sizes]
        print(f"overhead over the floor, {fws[key].name}, µs per step: "
              + ", ".join(f"{n} steps {v:.1f}" for n, v in zip(cfg.sizes, over, strict=True)))


if __name__ == "__main__":
    main()
