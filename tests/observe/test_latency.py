"""Latency budgets per turn and the report of where a run's time went (model, tools, keel),
on an injected clock: no assertion here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel import Agent, BudgetExceeded, ConfigError, MemoryStore, tool
from keel.core import Message
from keel.observe import LatencyBudget, RunTimings
from keel.testing import FunctionModel, ScriptedModel, call


class Clock:
    """A clock the model and tools advance by the time they 'take'."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def timed_agent(clock: Clock, budget: LatencyBudget, *, model_s: float = 2.0,
                tool_s: float = 3.0, turns: int = 2) -> Agent[str]:
    @tool
    def lookup(i: int) -> str:
        """Look i up."""
        clock.now += tool_s
        return f"item {i}"

    script: list[Any] = [call("lookup", {"i": k}) for k in range(turns - 1)] + ["done"]

    def model(messages: list[Message], tools: Any, settings: Any) -> Any:
        clock.now += model_s
        return script[sum(1 for m in messages if m.role == "assistant")]

    return Agent("timed", model=FunctionModel(model, name="test:m"), tools=[lookup],
                 middleware=[budget])


async def test_the_report_splits_the_run_into_model_tools_and_keel() -> None:
    clock = Clock()
    reports: list[RunTimings] = []
    budget = LatencyBudget(on_report=reports.append, clock=clock)
    agent = timed_agent(clock, budget, turns=3)
    result = await agent.run("go", store=MemoryStore())
    [report] = reports
    assert budget.timings(result.run_id) == report
    assert report.status == "completed" and report.agent == "timed"
    assert report.model_calls == 3 and report.tool_calls == 2
    assert (report.model_s, report.tools_s) == (6.0, 6.0)
    assert report.wall_s == 12.0 and report.keel_s == 0.0, "the clock moved only in calls"
    assert report.turns == {"timed/turn:0": (2.0, 3.0), "timed/turn:1": (2.0, 3.0),
                            "timed/turn:2": (2.0, 0.0)}
    assert report.over_budget == ()
    assert report.to_dict()["turns"]["timed/turn:0"] == [2.0, 3.0]


async def test_parallel_tool_calls_count_once_in_the_tools_time() -> None:
    loop_clock = asyncio.get_running_loop().time
    budget = LatencyBudget(clock=loop_clock)
    release = asyncio.Event()
    started = []

    @tool
    async def slow(i: int) -> str:
        """Wait."""
        started.append(i)
        if len(started) == 2:
            release.set()
        await release.wait()
        return "ok"

    agent = Agent("par", model=ScriptedModel([[call("slow", {"i": 1}), call("slow", {"i": 2})],
                                              "done"]), tools=[slow], middleware=[budget])
    result = await agent.run("go", store=MemoryStore())
    report = budget.timings(result.run_id)
    assert report is not None and report.tool_calls == 2
    per_call = report.turns["par/turn:0"][1]  # both calls' own times summed
    assert report.tools_s <= per_call, "overlapping calls are one stretch of tool time"
    assert report.wall_s >= report.model_s + report.tools_s


async def test_a_tool_that_starts_after_the_turn_budget_is_refused() -> None:
    clock = Clock()
    budget = LatencyBudget(turn_seconds=5, clock=clock)
    agent = timed_agent(clock, budget, model_s=6.0, turns=2)  # the model alone uses the turn
    runs = MemoryStore()
    result = await agent.run("go", store=runs)
    assert result.output == "done", "an answer that came late is kept"
    journal = await runs.read_journal(result.run_id)
    [tool_entry] = [e for e in journal if e.kind == "tool"]
    assert tool_entry.data["failure"]["error_type"] == "budget_exceeded"
    assert "turn's time budget" in tool_entry.data["failure"]["message"]
    report = budget.timings(result.run_id)
    assert report is not None and report.over_budget == ("timed/turn:0", "timed/turn:1")
    assert report.turns["timed/turn:0"][1] == 0.0, "the refused tool never ran"


async def test_a_slow_model_is_cancelled_at_the_turn_budget() -> None:
    never = asyncio.Event()

    async def hangs(messages: list[Message], tools: Any, settings: Any) -> str:
        await never.wait()
        return "never"

    budget = LatencyBudget(turn_seconds=0.05)
    agent = Agent("slow", model=FunctionModel(hangs, name="test:m"), middleware=[budget])
    runs = MemoryStore()
    with pytest.raises(BudgetExceeded) as info:
        await agent.run("go", store=runs)
    assert info.value.limit == "turn_seconds"
    assert info.value.step_key == "slow/turn:0/model"
    [record] = await runs.list_runs()
    assert record.status == "failed"
    [report] = [budget.timings(record.run_id)]
    assert report is not None and report.over_budget == ("slow/turn:0",)
    assert report.status == "failed"


async def test_a_slow_tool_is_stopped_and_the_model_answers_next_turn() -> None:
    never = asyncio.Event()

    @tool
    async def hangs() -> str:
        """Never returns."""
        await never.wait()
        return "never"

    budget = LatencyBudget(turn_seconds=0.05)
    model = ScriptedModel([call("hangs", {}), "sorry, the lookup took too long"])
    agent = Agent("slowtool", model=model, tools=[hangs], middleware=[budget])
    runs = MemoryStore()
    result = await agent.run("go", store=runs)
    assert result.output == "sorry, the lookup took too long"
    [entry] = [e for e in await runs.read_journal(result.run_id) if e.kind == "tool"]
    assert entry.data["failure"]["error_type"] == "budget_exceeded"
    report = budget.timings(result.run_id)
    assert report is not None and report.over_budget == ("slowtool/turn:0",)


def test_reports_kept_are_bounded() -> None:
    budget = LatencyBudget(keep=2)
    agent = Agent("k", model=ScriptedModel(["a"] * 1), middleware=[budget])
    ids = [agent.run_sync("go", store=MemoryStore()).run_id for _ in range(3)]
    assert budget.timings(ids[0]) is None and budget.timings(ids[2]) is not None


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"turn_seconds": 0}, "LatencyBudget.turn_seconds"),
    ({"turn_seconds": "5"}, "LatencyBudget.turn_seconds"),
    ({"turn_seconds": float("nan")}, "LatencyBudget.turn_seconds"),
    ({"on_report": 1}, "LatencyBudget.on_report"), ({"keep": -1}, "LatencyBudget.keep"),
])
def test_bad_configuration_names_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
        LatencyBudget(**kwargs)
