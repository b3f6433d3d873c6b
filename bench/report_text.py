"""The prose of docs/benchmarks.md around the generated tables."""

from __future__ import annotations

from typing import Any

from bench.common import Table

HOW_TO_RUN = """\
## How to run

```bash
pip install -e '.[bench]'
python -m bench.run_all --markdown docs/benchmarks.md
```

`--only keel` benchmarks keel and the floor only (no optional frameworks needed);
`--json PATH` also saves the raw figures; `--quick` is a smoke run at tiny sizes (its figures
mean nothing). `python -m bench.profile_keel [--steps N] [--journal sqlite]` prints a cProfile
breakdown of keel's per-step cost. `pytest tests/bench` runs the keel benchmarks at tiny sizes
so they cannot rot; it asserts no speed. The durable-runs suite needs a Postgres server
(`KEEL_BENCH_POSTGRES_URL`, default `postgresql://127.0.0.1:5432/test`; it works in a schema of
its own and drops it); `python -m bench.bench_durable [--quick] [--update-doc PATH]` runs it
alone and rewrites only its section of the document.
"""

METHOD = """\
## Workloads and method

**A step** is one model turn plus one tool call. An *N-step run*: the model answers N times
with one call of the `lookup(i: int) -> str` tool each, then once with the final text `done`,
so a run is N tool calls and N + 1 model turns (2N + 1 keel journal steps). The final answer
turn is part of the timed run but is not counted as a step, so at 1 step the figure also
carries the whole per-run cost (creating and finishing the run record, building the loop).

**The floor** is a plain-Python `while` loop in the same process: it awaits a trivial fake
model function, appends the answer to a list, awaits the *same* async `lookup` function with
the answer's arguments and appends the result, until the answer has no tool call. No
validation, journal, budget or logging. **Overhead per step = (framework run time − floor run
time) / N**, both medians measured in the same process.

**keel**: `keel.Agent("bench", model=..., tools=[keel.tool(lookup)],
budget=keel.Budget.unlimited())`, run with `await agent.run("go", store=store)` and either
`keel.MemoryStore()` or `keel.open_store("sqlite:////tmp/<dir>/runs.db")` (four slashes: an
absolute path; `sqlite:///x.db` is relative to the working directory), one store per
benchmark size. The model is `BenchModel` (`bench/bench_keel.py`), a `keel.Model` whose
answers are built once and picked by the length of the conversation, so the model costs
about what the floor's fake model costs. The row "ScriptedModel" runs the same workload with
keel's own `keel.testing.ScriptedModel` (request recording off where the installed keel
supports `record_requests=False`), which also builds each answer and estimates token usage.

**Tool kinds and `store=`**: unless a row says otherwise, keel's `lookup` is the `async def`
function the floor awaits and the run gets `store=`. The rows "def tool" use the same function
written as a plain `def` (`bench.common.lookup_def`): keel runs it in a worker thread, or on
the event loop when it is declared `@tool(blocking=False)`. The row "no store=" is the path most
users take: a plain `def` tool and `await agent.run("go")` without `store=`, so keel uses its
default SQLite store (`KEEL_STORE` pointed at a temporary file), every default on.

**The other frameworks**, each with its own fake model that makes no network call and picks
its answer in O(1) from the conversation length (`bench/bench_frameworks.py`):
LangGraph as a `StateGraph(MessagesState)` with an agent node, the prebuilt `ToolNode` and
`tools_condition` (the graph `create_react_agent` builds; `create_react_agent` itself is
deprecated in LangGraph 1.x in favour of `langchain.agents.create_agent`, which needs the
`langchain` package) and a custom `BaseChatModel`, with `recursion_limit` raised; also with an
`InMemorySaver` checkpointer, LangGraph's counterpart of a journal. Pydantic AI as
`Agent(FunctionModel(fn), tools=[Tool(lookup)])` with `UsageLimits(request_limit=None)`. The
OpenAI Agents SDK as `Agent(model=<custom agents.Model>, tools=[function_tool(lookup)])` run by
`Runner.run(..., max_turns=N + 10)` with tracing disabled. Every timed run checks its result
(final text and number of tool results) and fails the benchmark if it is wrong.

**Timing**: the floor and keel's variants are measured *interleaved*: for each size, round
after round, each of them times one batch in turn, and each figure is the median of its 7
rounds, so a burst of outside load on this shared machine hits all of them alike. A batch
repeats the run until it lasts at least 50 ms; one untimed run per size comes first. The
other frameworks are measured one after another, with 3 rounds; a run that takes over half of
the per-size time budget ({budget:.0f} s) is timed once (marked ¹), and a single run still
going after {cap:.0f} s is cancelled and shown as "> that time", a lower bound. Every
framework first gets about a second of untimed warm-up runs (the first runs in a process are
slower). Before each batch, `gc.collect()` then `gc.freeze()`: objects kept from earlier
batches (keel's `MemoryStore` keeps every run) are not rescanned by the garbage collector
during the batch, while the batch's own garbage is collected as usual.
Wall clock (`time.perf_counter`) and the CPU time of the process (`time.process_time`, all
threads) are both recorded: with a zero-latency model the work is pure CPU, so on an idle
machine the two agree; on a shared machine the CPU figures are the more reliable ones.

**Concurrent runs**: {runs} runs started at once with `asyncio.gather`, each of {turns} model
turns ({tool_turns} tool calls, then the final answer), the model awaiting
{delay_ms:.0f} ms per turn. We count the {turns} model turns, so the ideal is {turns} ×
{delay_ms:.0f} ms = {ideal:.2f} s (tool calls take no time). Median of 3 batches for keel and
the floor (interleaved), one batch for the others; each batch gets a fresh agent (and for keel
a fresh `MemoryStore` shared by the batch's runs) and a warm-up of 10 runs. The CPU column is the
process's CPU time for the batch: when it is close to the wall time, the batch is CPU-bound
and the ideal is out of reach until the per-run CPU cost falls.

**Memory** is measured in a fresh process per framework, after a warm-up of 10 runs.
*RSS growth* = (peak RSS during a batch of runs − RSS before it) / runs, the peak read from
the kernel's high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` just before the
batch: `ru_maxrss` would even carry over the parent process's peak). *tracemalloc peak* =
peak traced memory during a second batch / runs. keel's `MemoryStore` keeps every run's
journal, so keel's figure includes the journals. The other frameworks' memory batches are
{other_memory_runs} runs (their {runs}-run batches take tens of seconds, and several times
that under tracemalloc).

**Parallel tools**: one model turn that calls {tools} different tools, each awaiting
{tool_ms:.0f} ms, then a final answer turn; zero-latency model. Ideal: {tool_delay:.2f} s. The
last column times the same run with tools that return at once: the framework's own CPU cost
for the turn.

**Import time**: `import X` timed inside a fresh interpreter, best of 5 for keel and of 3 for
the others.
"""

CAVEATS = """\
## Caveats

- The machine has 2 cores, and other work may share it (see the load average above).
  Waiting for a core inflates the wall-clock figures, above all the 1-step ones and the
  concurrent batches. CPU time is less affected but not immune (the two cores share caches):
  while writing this suite, keel's in-memory per-step figure moved by up to about 40 %
  between a busy and a quiet machine. The floor and keel are measured interleaved, so their
  comparison holds within a run; compare figures from one run, not across runs.
- On this machine `asyncio.sleep` wakes up late, typically 5–15 ms for a 100 ms sleep
  (`time.sleep` about 1 ms), so every figure that waits on a sleep (the concurrent batches,
  the parallel tools) carries that jitter, the floor included: compare against the floor row
  ("− floor") rather than the ideal alone.
- On this machine the CPU is slow for a few milliseconds after the process has been idle:
  the same Python work measured about 0.85 ms when the CPU was busy and about 2.4 ms right
  after a 100 ms `asyncio.sleep`. The parallel-tools figures therefore charge each framework
  about three times its real cost for the work done after the tools wake up; the last
  column of that table (tools that do not wait) shows the cost on a busy CPU.
- The floor costs a few µs per step, so "× floor" ratios are large for every framework; the
  absolute overhead is the meaningful figure.
- Each framework's fake model builds that framework's own response objects (an `AIMessage`,
  a Pydantic AI `ModelResponse`, Responses-API output items): that cost is part of the
  framework's figure, as a real provider adapter's parsing would be.
- The frameworks do different amounts of work: keel validates arguments with pydantic,
  enforces a per-tool timeout, checks budgets, hashes each step's input and appends every
  model turn and tool call to its journal. LangGraph without a checkpointer, Pydantic AI and
  the OpenAI Agents SDK (no session) keep nothing; "LangGraph + InMemorySaver" checkpoints
  every super-step.
- The other frameworks' longest runs are timed once (or stopped at the cap), their
  concurrent batch once and their memory at {other_memory_runs} concurrent runs: their
  figures are indications, not precise.
- tracemalloc sees memory allocated through Python's allocators only (not SQLite's own
  caches); RSS growth includes allocator and interpreter effects, and memory freed by an
  earlier batch can be reused, so both are taken in a fresh process.
"""


def _meta_section(results: dict[str, Any]) -> str:
    m = results["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = (f"{m['load_start'][0]:.2f} at the start, {m.get('load_end', (0.0,))[0]:.2f} at "
            "the end (1-minute load average)")
    busy = ""
    if max(m["load_start"][0], m.get("load_end", (0.0,))[0]) > (m["cores"] or 1):
        busy = ("\n\n**The machine was busy with other work during this run** (load average "
                "above the number of cores): read the wall-clock figures as upper bounds and "
                "prefer the CPU-time columns for the per-step overheads.")
    return (f"## Machine\n\n- Date: {m['date']}, keel at commit {m.get('commit', '?')}\n"
            f"- {m['cores']} cores, Python {m['python']}, "
            f"{m['platform']}\n- Versions: {versions}\n- Load: {load}\n- Whole run: "
            f"{m.get('total_s', 0):.0f} s{busy}\n")


def _anchors(results: dict[str, Any]) -> str:
    suites, names = results["suites"], results["names"]
    lines = ["## The issue's anchors for the other frameworks", "",
             "The issue (figures measured by its author) gives about 2,000–5,000 µs per step "
             "for the other frameworks, growing with run length for two of them, and 18–27 s "
             "for the 1,000 concurrent runs against 0.28 s for the plain loop. Here:", ""]
    from bench.report import overhead_us

    for key in ("langgraph", "pydantic-ai", "openai-agents"):
        if key not in suites:
            continue
        steps = suites[key].get("steps", {})
        shown = ", ".join(
            ("> " if steps[n].samples == 0 else "") + f"{overhead_us(results, key, n):,.0f}"
            for n in results["config"]["keel"]["sizes"] if n in steps)
        wall = suites[key].get("concurrent_s")
        conc = "" if wall is None else f"; {wall:.1f} s for the concurrent batch"
        lines.append(f"- {names[key]}: {shown} µs per step at "
                     f"{'/'.join(map(str, results['config']['keel']['sizes']))} steps{conc}.")
    floor = suites.get("floor", {}).get("concurrent_s")
    if floor is not None:
        lines.append(f"- The plain loop: {floor:.2f} s for the concurrent batch.")
    return "\n".join(lines) + "\n"


def document(results: dict[str, Any], tables: list[Table], notes: list[str]) -> str:
    cfg = results["config"]["keel"]
    from bench.run_all import OTHERS_MEMORY_RUNS, RUN_CAP_S

    fields = {"runs": cfg["concurrent_runs"], "turns": cfg["concurrent_turns"],
              "tool_turns": cfg["concurrent_turns"] - 1, "delay_ms": cfg["model_delay"] * 1e3,
              "ideal": cfg["concurrent_turns"] * cfg["model_delay"],
              "other_memory_runs": OTHERS_MEMORY_RUNS, "tools": cfg["parallel_tools"],
              "tool_ms": cfg["tool_delay"] * 1e3, "tool_delay": cfg["tool_delay"],
              "cap": RUN_CAP_S, "budget": results["config"]["others"]["step_budget_s"]}
    parts = [
        "# Benchmarks\n",
        "keel's framework overhead against a plain-Python floor, and the same workloads in "
        "LangGraph, Pydantic AI and the OpenAI Agents SDK, all with fake models that make no "
        "network call. This file is generated by `python -m bench.run_all --markdown "
        "docs/benchmarks.md`; every figure below comes from the run described under "
        "Machine.\n",
    ]
    if results.get("quick"):
        parts.append("**This is a `--quick` smoke run at tiny sizes: its figures mean "
                     "nothing.**\n")
    parts += [HOW_TO_RUN, _meta_section(results), METHOD.format(**fields), "## Results\n"]
    parts += [t.markdown() for t in tables]
    if notes:
        parts.append("Notes from this run:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    parts.append(_anchors(results))
    if "durable" in results:
        from bench.report_durable import durable_section

        parts.append(durable_section(results))
    parts.append(CAVEATS.format(**fields))
    return "\n".join(parts)
