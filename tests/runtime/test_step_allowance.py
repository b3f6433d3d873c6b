"""The step allowance: the runtime seam an engine (keel.temporal) uses to run a run one
model request or tool call at a time. Off by default; replayed steps never count."""

from __future__ import annotations

import re
from typing import Any

import pytest

from keel import (
    Agent,
    ConfigError,
    MemoryStore,
    Message,
    ModelError,
    Signal,
    ToolContext,
    tool,
)
from keel.core import ToolResultPart
from keel.reliability import Retry
from keel.runtime import Launch, Middleware, Paused, RunEndInput, execute, flow
from keel.testing import FunctionModel, call


def _results(messages: list[Message]) -> list[str]:
    return [re.sub(r"<[^>]+>", "", p.content).strip() for m in messages if m.role == "tool"
            for p in m.parts if isinstance(p, ToolResultPart)]


def _answer(messages: list[Message], tools: Any, settings: Any) -> Any:
    seen = _results(messages)
    if not seen:
        return [call("add", {"a": 1, "b": 2}), call("add", {"a": 3, "b": 4}),
                call("add", {"a": 5, "b": 6})]  # three calls in one turn, run in parallel
    if len(seen) == 3:
        return call("add", {"a": 7, "b": 8})
    return "sums " + " ".join(seen)


class Ends(Middleware):
    def __init__(self) -> None:
        self.statuses: list[str] = []

    async def on_run_end(self, inp: RunEndInput) -> None:
        self.statuses.append(inp.status)


def _agent(calls: list[tuple[int, int]], ends: Ends | None = None) -> tuple[Agent[Any],
                                                                            FunctionModel]:
    @tool(risk="write", idempotent=False)
    def add(a: int, b: int, ctx: ToolContext) -> int:
        """Add."""
        calls.append((a, b))
        return a + b

    model = FunctionModel(_answer)
    return Agent("adder", model=model, tools=[add],
                 middleware=[ends] if ends is not None else []), model


async def test_off_by_default_a_run_goes_to_the_end() -> None:
    assert Launch().step_allowance is None
    calls: list[tuple[int, int]] = []
    agent, model = _agent(calls)
    result = await agent.run("go", store=MemoryStore())
    assert result.output == "sums 3 7 11 15" and len(model.requests) == 3 and len(calls) == 4


async def test_each_execution_runs_one_new_step_and_replays_the_rest() -> None:
    store = MemoryStore()
    calls: list[tuple[int, int]] = []
    ends = Ends()
    agent, model = _agent(calls, ends)
    with pytest.raises(Paused) as first:  # allowance 0: the run is created, nothing runs
        await execute(agent, store, Launch(input="go", run_id="r1", step_allowance=0))
    assert isinstance(first.value, Signal) and first.value.run_id == "r1"
    record = await store.get_run("r1")
    assert record.status == "running" and record.lease_owner is None
    assert model.requests == [] and await store.read_journal("r1") == []
    done: list[str] = []
    for _ in range(20):
        before = len(model.requests), len(calls)
        try:
            result = await execute(agent, store, Launch(resume_id="r1", step_allowance=1))
        except Paused:
            record = await store.get_run("r1")
            assert record.status == "running" and record.lease_owner is None
            journal = await store.read_journal("r1")
            # exactly one new model request or tool call ran (replayed ones did not count)
            assert (len(model.requests) - before[0]) + (len(calls) - before[1]) == 1
            last = [e for e in journal if e.phase == "result"][-1]
            done.append(last.kind)
            assert record.usage["steps"] == len(done)
            continue
        break
    else:
        raise AssertionError("the run never finished")
    assert done == ["model", "tool", "tool", "tool", "model", "tool"]
    assert result.output == "sums 3 7 11 15" and len(model.requests) == 3
    assert calls == [(1, 2), (3, 4), (5, 6), (7, 8)]  # each call once, never again
    assert (await store.get_run("r1")).status == "completed"
    # the end hooks heard each pause as an interruption, then the completion
    assert ends.statuses == ["interrupted"] * 7 + ["completed"]


async def test_a_larger_allowance_runs_that_many_steps() -> None:
    store = MemoryStore()
    calls: list[tuple[int, int]] = []
    agent, model = _agent(calls)
    with pytest.raises(Paused):
        await execute(agent, store, Launch(input="go", run_id="r2", step_allowance=3))
    assert len(model.requests) == 1 and len(calls) == 2
    result = await execute(agent, store, Launch(resume_id="r2", step_allowance=100))
    assert result.output == "sums 3 7 11 15" and calls == [(1, 2), (3, 4), (5, 6), (7, 8)]


async def test_flow_steps_of_other_kinds_do_not_count() -> None:
    store = MemoryStore()
    ran: list[str] = []

    @flow("counting")
    async def body(ctx: Any, text: str) -> str:
        for n in range(3):
            await ctx.step(f"note{n}", lambda n=n: ran.append(f"n{n}") or n, kind="function",
                           blocking=False)
        return "ok"

    result = await execute(body, store, Launch(input="go", run_id="f1", step_allowance=0))
    assert result.output == "ok" and ran == ["n0", "n1", "n2"]


async def test_a_failure_retried_later_is_not_compensated_until_final() -> None:
    store = MemoryStore()
    log: list[str] = []
    failing = [True]

    def answer(messages: list[Message], tools: Any, settings: Any) -> Any:
        if not _results(messages):
            return call("book", {})
        if failing[0]:
            return ModelError("503", status=503, retryable=True)
        return "booked"

    @tool(risk="write")
    def cancel(result: str) -> str:
        """Cancel."""
        log.append("cancel")
        return "ok"

    @tool(risk="write", compensate=cancel)
    def book() -> str:
        """Book."""
        log.append("book")
        return "B-1"

    agent = Agent("trip", model=FunctionModel(answer), tools=[book], middleware=[Retry.off()])
    with pytest.raises(ModelError):  # the engine will retry: not compensated
        await execute(agent, store, Launch(input="go", run_id="s1", retried_later=True))
    assert log == ["book"] and (await store.get_run("s1")).status == "failed"
    with pytest.raises(ModelError):  # the last attempt: the saga runs
        await execute(agent, store, Launch(resume_id="s1"))
    assert log == ["book", "cancel"]
    assert Launch().retried_later is False


async def test_a_retried_failure_that_passes_completes_without_compensating() -> None:
    store = MemoryStore()
    log: list[str] = []
    failing = [True]

    def answer(messages: list[Message], tools: Any, settings: Any) -> Any:
        if not _results(messages):
            return call("book", {})
        if failing[0]:
            failing[0] = False
            return ModelError("503", status=503, retryable=True)
        return "booked"

    def cancel(result: str) -> str:
        """Cancel."""
        log.append("cancel")
        return "ok"

    @tool(risk="write", compensate=cancel)
    def book() -> str:
        """Book."""
        log.append("book")
        return "B-1"

    agent = Agent("trip", model=FunctionModel(answer), tools=[book], middleware=[Retry.off()])
    with pytest.raises(ModelError):
        await execute(agent, store, Launch(input="go", run_id="s2", retried_later=True))
    result = await execute(agent, store, Launch(resume_id="s2", retried_later=True))
    assert result.output == "booked" and log == ["book"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_allowance_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="step_allowance"):
        Launch(input="go", step_allowance=bad)
