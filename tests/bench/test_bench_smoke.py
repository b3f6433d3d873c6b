"""The keel benchmarks at tiny sizes, so they cannot rot. Speed is never asserted here
(that is what ``python -m bench.run_all`` is for): only that the benchmark functions run, give
sane numbers under the right keys, and that the runs they time are correct."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bench.bench_durable import MODES, STORES, durable_config, measure_durable, update_doc
from bench.bench_keel import BenchModel, Keel, keel_frameworks
from bench.common import RunFn, check
from bench.report_durable import END, START, durable_section
from bench.run_all import main as run_all_main
from bench.timing import SuiteConfig, Timing, interleaved_steps, run_memory, run_suite, run_suites

import keel

pytestmark = pytest.mark.slow  # benchmark smoke tests: real workloads at tiny sizes

OPTIONAL = ("langgraph", "langchain_core", "pydantic_ai", "agents")

TINY = SuiteConfig(sizes=(1, 3), concurrent_runs=5, concurrent_turns=3, model_delay=0.0,
                   parallel_tools=3, tool_delay=0.0, repeats=2, step_budget_s=1.0,
                   concurrent_repeats=1, parallel_repeats=1, warmup_s=0.0, settle_gc=False)


@pytest.mark.parametrize("key", list(keel_frameworks()))
async def test_suite_gives_positive_timings_under_the_right_keys(key: str) -> None:
    fw = keel_frameworks()[key]
    out = await run_suite(fw, TINY)
    assert out["framework"] == fw.name
    assert set(out["steps"]) == {1, 3}
    for timing in out["steps"].values():
        assert isinstance(timing, Timing)
        assert timing.wall > 0 and timing.cpu >= 0 and timing.samples >= 1
    assert out["concurrent_s"] > 0 and out["concurrent_cpu_s"] >= 0
    assert out["parallel_s"] > 0 and out["parallel_cpu_s"] >= 0 and out["parallel_zero_s"] > 0


async def test_only_the_requested_benches_run() -> None:
    out = await run_suite(Keel("memory"), TINY, benches=("steps",))
    assert set(out) == {"framework", "steps"}


async def test_memory_figures_are_per_run_and_non_negative() -> None:
    out = await run_memory(Keel("memory"), TINY)
    assert set(out) == {"tracemalloc_peak_per_run_kb", "rss_delta_per_run_kb"}
    assert out["tracemalloc_peak_per_run_kb"] > 0
    assert out["rss_delta_per_run_kb"] >= 0


async def test_keel_step_run_records_n_tool_calls_and_n_plus_one_model_turns() -> None:
    steps = 3
    model = BenchModel([[("lookup", {"i": k})] for k in range(steps)] + ["done"])
    agent: keel.Agent[str] = keel.Agent("bench", model=model, tools=[Keel().tool],
                                        budget=keel.Budget.unlimited())
    store = keel.MemoryStore()
    result = await agent.run("go", store=store)
    assert result.output == "done"
    journal = await store.read_journal(result.run_id)
    kinds = [e.kind for e in journal if e.phase == "result"]
    assert kinds.count("tool") == steps and kinds.count("model") == steps + 1
    tool_outputs = [e.data["content"] for e in journal if e.kind == "tool"]
    assert tool_outputs == ["item 0", "item 1", "item 2"]


async def test_keel_parallel_run_journals_every_tool() -> None:
    async with Keel("sqlite").parallel_run(4, 0.0) as run:
        await run()  # checks output == "done" and steps == tools + 2


async def test_interleaved_suites_follow_the_plan() -> None:
    fws = keel_frameworks()
    plan = {k: ("steps",) if k != "keel" else ("steps", "parallel") for k in fws}
    out = await run_suites(fws, TINY, plan)
    assert list(out) == list(fws)
    for key, suite in out.items():
        assert set(suite["steps"]) == {1, 3}
        assert all(t.samples == 2 for t in suite["steps"].values())
        assert ("parallel_s" in suite) == (key == "keel")
        assert "concurrent_s" not in suite


def test_check_raises_on_a_wrong_result() -> None:
    check(True, "fine")
    with pytest.raises(RuntimeError, match="wrong result"):
        check(False, "bad")


def test_run_all_quick_writes_markdown_without_the_other_frameworks(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    loaded = set(sys.modules)
    results = run_all_main(["--quick", "--only", "keel", "--markdown", str(out),
                            "--json", str(tmp_path / "r.json")])
    assert set(results["suites"]) == set(keel_frameworks())
    assert set(results["memory"]) == {"floor", "keel"}
    assert results["errors"] == {}
    text = out.read_text()
    assert "keel against its targets" in text and ("PASS" in text or "MISS" in text)
    assert results["durable"]["errors"] == {} and "## Durable runs" in text
    new = {name.split(".")[0] for name in set(sys.modules) - loaded}
    assert not new & set(OPTIONAL)


class _Slow:
    name = "slow"

    @asynccontextmanager
    async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
        async def run() -> None:
            await asyncio.sleep(10)

        yield run

    def parallel_run(self, tools: int, tool_delay: float) -> Any:
        raise NotImplementedError


async def test_a_run_over_the_cap_is_stopped_and_marked_as_a_lower_bound() -> None:
    cfg = SuiteConfig(sizes=(5,), run_cap_s=0.01)
    out = await interleaved_steps({"slow": _Slow()}, cfg)
    timing = out["slow"][5]
    assert timing.samples == 0 and timing.wall >= 0.01


async def test_durable_suite_gives_positive_figures_under_the_right_keys() -> None:
    cfg = durable_config(quick=True)
    out = await measure_durable(cfg, progress=lambda _: None)
    assert out["errors"] == {} and out["skipped"] == {}
    assert set(out["write"]) == set(STORES)
    for modes in out["write"].values():
        assert set(modes) == set(MODES)
        for by_runs in modes.values():
            assert set(by_runs) == set(cfg.concurrency)
            for fig in by_runs.values():
                assert fig["us_per_step"] > 0 and fig["steps_per_s"] > 0
                assert fig["run_ms_per_step"] > 0 and fig["run_ms_per_step_max"] > 0
                assert fig["cpu_us_per_step"] >= 0 and fig["samples"] == cfg.rounds
    for what in ("resume", "replay"):
        assert set(out[what]) == set(STORES)
        for fig in out[what].values():
            assert fig["seconds"] > 0 and fig["samples"] == cfg.repeats
    assert all(fig["entries"] == 2 * cfg.long_steps for fig in out["resume"].values())
    section = durable_section(out)
    assert section.startswith(START) and section.rstrip().endswith(END)
    assert "PASS" in section or "FAIL" in section


def test_the_durable_section_replaces_its_old_self(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Results\n\nfigures\n\n## Caveats\n\n- one\n")
    update_doc(str(doc), f"{START}\n## Durable runs\n\nold\n{END}\n")
    update_doc(str(doc), f"{START}\n## Durable runs\n\nnew\n{END}\n")
    text = doc.read_text()
    assert text.count(START) == 1 and "new" in text and "old" not in text
    assert text.index("## Results") < text.index(START) < text.index("## Caveats")


def test_patterns_bench_runs_every_pattern_example_at_tiny_size() -> None:
    from bench import bench_patterns

    text = bench_patterns.main(["--quick"])
    for name in ("planning", "reflection", "workflow", "routing", "supervisor", "handoff",
                 "group_chat", "marketplace"):
        assert f"| {name} (examples/{name}.py) |" in text
    assert "flow: 4 sub-agents in parallel" in text


def test_run_all_keeps_the_patterns_section_it_did_not_measure(tmp_path: Path) -> None:
    from bench.bench_patterns import MARKERS
    from bench.run_all import _own_section

    doc = tmp_path / "b.md"
    section = f"{MARKERS[0]}\n## Orchestration patterns\nfigures\n{MARKERS[1]}\n"
    doc.write_text("# Benchmarks\n\n" + section + "\n## Caveats\n- x\n")
    kept = _own_section(str(doc), MARKERS)
    assert kept == section
    doc.write_text("# Benchmarks (regenerated)\n\n## Caveats\n- x\n")
    update_doc(str(doc), kept, markers=MARKERS)
    text = doc.read_text()
    assert text.index("figures") < text.index("## Caveats") and "regenerated" in text


@pytest.mark.parametrize(("journal", "kind"), [("memory", "def"), ("memory", "inline"),
                                               ("default", "def"), ("sqlite", "def")])
async def test_keel_tool_kinds_and_the_default_store_run_the_workload(
        journal: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", "sqlite:////nonexistent-dir/should-not-be-used.db")
    fw = Keel(journal, tool=kind)
    assert fw.tool.meta.blocking is (kind == "def")
    async with fw.step_run(3) as run:
        await run()  # checks output == "done" and steps == 2 * 3 + 1
        await run()
    assert os.environ["KEEL_STORE"] == "sqlite:////nonexistent-dir/should-not-be-used.db"


def test_the_tool_kinds_section_shows_ratios_to_the_async_tool(tmp_path: Path) -> None:
    from bench.bench_keel import MARKERS, doc_section

    out = {"keel": {"steps": {10: Timing(0.001, 0.001, 3)}},
           "keel-def": {"steps": {10: Timing(0.002, 0.003, 3)}}}
    names = {"keel": "keel (async)", "keel-def": "keel (def)"}
    section = doc_section(out, names, [10])
    assert section.startswith(MARKERS[0]) and section.rstrip().endswith(MARKERS[1])
    assert "| keel (async) | 100.0 (1.00×) |" in section
    assert "| keel (def) | 200.0 (2.00×) |" in section  # wall
    assert "| keel (def) | 300.0 (3.00×) |" in section  # CPU
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\n## Caveats\n- x\n")
    update_doc(str(doc), section, markers=MARKERS)
    assert doc.read_text().index("## Tool kinds") < doc.read_text().index("## Caveats")
