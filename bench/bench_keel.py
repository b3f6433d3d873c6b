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

#: The section of docs/benchmarks.md this benchmark writes (``--update-doc``).
MARKERS = ("<!-- tool-kinds:start -->", "<!-- tool-kinds:end -->")


def variants() -> dict[str, Any]:
    """keel's variants compared by :func:`main`, the baseline (``keel``) first after the
    floor."""
    return {"floor": Floor(), "keel": Keel("memory"), "keel-def": Keel("memory", tool="def"),
            "keel-inline": Keel("memory", tool="inline"),
            "keel-nodefault": Keel("memory", default_middleware=False),
            "keel-sqlite": Keel("sqlite"), "keel-sqlite-def": Keel("sqlite", tool="def"),
            "keel-default": Keel("default", tool="def")}


def variants_table(out: dict[str, Any], names: dict[str, str], sizes: Sequence[int],
                   cpu: bool = False) -> list[str]:
    """Markdown rows: µs per step of each variant, × the baseline's run in brackets."""
    def per_step(key: str, n: int) -> float:
        t = out[key]["steps"][n]
        return float(t.cpu if cpu else t.wall)

    lines = ["| variant | " + " | ".join(f"{n} steps" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for key, name in names.items():
        cells = [f"{per_step(key, n) / n * 1e6:,.1f} "
                 f"({per_step(key, n) / per_step('keel', n):.2f}×)" for n in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def doc_section(out: dict[str, Any], names: dict[str, str], sizes: Sequence[int]) -> str:
    import datetime as dt
    import platform
    import sys

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return "\n".join([
        MARKERS[0], "", "## Tool kinds and `store=`", "",
        f"From `python -m bench.bench_keel --update-doc docs/benchmarks.md` ({when}, Python "
        f"{sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load:.1f}); its own run, separate from the figures above. The same step runs as "
        "above, every variant timed interleaved in one process; each figure is µs per step "
        "(whole run ÷ steps, median), and in brackets the run time × the baseline's: keel "
        "with an `async def` tool and a `MemoryStore` passed as `store=`. *def tool*: the "
        "same tool written as a plain `def` (a worker thread per call); *blocking=False*: "
        "that `def` declared `@tool(blocking=False)` (called on the event loop); *no store=*: "
        "`agent.run(\"go\")` without `store=`, so the default SQLite store (kept open "
        "between runs). The ratios are what to read when the machine is shared.", "",
        "### Wall clock", "", *variants_table(out, names, sizes), "",
        "### CPU time of the process (all threads)", "",
        *variants_table(out, names, sizes, cpu=True), "", MARKERS[1], ""])


def main() -> None:
    """``python -m bench.bench_keel [--quick] [--update-doc PATH]``: per-step cost of keel's
    variants (:func:`variants`) in this process, interleaved (steps benchmark only): the async
    tool against a plain ``def`` tool (worker thread) and one declared ``blocking=False``,
    ``store=`` a MemoryStore / an SQLite store against no ``store=`` (the default SQLite
    store), and the default middleware (Retry, CircuitBreaker) against
    ``default_middleware=False``. The ratios are to the async-tool, in-memory run of the same
    size, measured alongside. ``--update-doc`` rewrites that section of the document."""
    import argparse

    from bench.timing import SuiteConfig, run_suites

    parser = argparse.ArgumentParser(prog="python -m bench.bench_keel")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--update-doc", metavar="PATH", help="rewrite this doc's section")
    args = parser.parse_args()
    fws = variants()
    cfg = (SuiteConfig(sizes=(1, 10), repeats=2, warmup_s=0.1, benches=("steps",))
           if args.quick else
           SuiteConfig(sizes=(1, 10, 100, 1000), repeats=9, benches=("steps",)))
    out = asyncio.run(run_suites(fws, cfg))
    names = {k: fw.name for k, fw in fws.items()}
    print("\n".join(variants_table(out, names, cfg.sizes)))
    for key in ("keel", "keel-def", "keel-inline"):
        over = [(out[key]["steps"][n].wall - out["floor"]["steps"][n].wall) / n * 1e6
                for n in cfg.sizes]
        print(f"overhead over the floor, {fws[key].name}, µs per step: "
              + ", ".join(f"{n} steps {v:.1f}" for n, v in zip(cfg.sizes, over, strict=True)))
    if args.update_doc:
        from bench.bench_durable import update_doc

        update_doc(args.update_doc, doc_section(out, names, cfg.sizes), markers=MARKERS)
        print(f"wrote the tool-kinds section of {args.update_doc}")


if __name__ == "__main__":
    main()
