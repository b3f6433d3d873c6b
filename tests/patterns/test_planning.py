"""Planning: plans as journaled data, concurrent waves, retries, replans, approval, resume,
replay and budgets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, Budget, BudgetExceeded, Escalate, MemoryStore, tool
from keel.core import Message, ModelResponse, ModelSettings, RunError, ToolSpec
from keel.patterns import Plan, Planner, PlanStepFailed
from keel.runtime import replay_run, resolve_escalation
from keel.store import JournalEntry
from keel.testing import FunctionModel, ScriptedModel, call


def step(id: str, agent: str | None = "writer", *, after: Sequence[str] = (),
         tool: str | None = None, args: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "description": f"do {id}", "depends_on": list(after)}
    if tool is not None:
        out.update(tool=tool, args=args or {})
    else:
        out["agent"] = agent
    return out


def plan_answer(*steps: dict[str, Any]) -> ModelResponse:
    return ModelResponse(parts=(call("final_result", {"steps": list(steps)}, call_id="p"),))


class Queue:
    """A model function answering each request with the next item (a resumed run does not
    ask again for recorded turns, so the queue stays in step)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[list[Message]] = []

    def __call__(self, messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> ModelResponse | str:
        self.seen.append(messages)
        item = self.answers[len(self.seen) - 1]
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]


def planner_agent(*answers: Any) -> tuple[Agent[Any], Queue]:
    queue = Queue(*answers)
    return Agent("planner", model=FunctionModel(queue), instructions="Plan the work."), queue


def echo(name: str) -> tuple[Agent[str], list[str]]:
    """A worker that answers '<name>: <first line of its input>' and keeps its inputs."""
    inputs: list[str] = []

    def answer(messages: list[Message], tools: list[ToolSpec], s: ModelSettings) -> str:
        text = messages[-1].text
        inputs.append(text)
        return f"{name} did {text.splitlines()[0].split(': ', 1)[1]}"

    return Agent(name, model=FunctionModel(answer)), inputs


async def journal(store: MemoryStore, run_id: str) -> list[JournalEntry]:
    return await store.read_journal(run_id)


def last_plan(entries: list[JournalEntry]) -> Plan:
    return Plan.model_validate([e for e in entries if e.kind == "plan"][-1].data)


def model_keys(entries: list[JournalEntry], part: str) -> list[str]:
    return [e.key for e in entries if e.kind == "model" and part in e.key]


# --------------------------------------------------------------------------- happy path


async def test_independent_steps_run_concurrently_and_feed_their_dependent() -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    def meet(mine: asyncio.Event, other: asyncio.Event, text: str) -> Any:
        async def answer(messages: list[Message], *_: Any) -> str:
            mine.set()  # each waits for the other: only concurrent steps get past this
            await asyncio.wait_for(other.wait(), 2)
            return text
        return answer

    fa = Agent("fa", model=FunctionModel(meet(a_started, b_started, "Paris 18C")))
    fb = Agent("fb", model=FunctionModel(meet(b_started, a_started, "Tokyo 24C")))
    writer, seen = echo("writer")
    planner, queue = planner_agent(plan_answer(
        step("a", "fa"), step("b", "fb"), step("c", "writer", after=["a", "b"])))
    flow = Planner("trip", planner=planner, workers=[fa, fb, writer])
    store = MemoryStore()
    result = await flow.run("compare the weather", store=store)
    assert result.output == {"a": "Paris 18C", "b": "Tokyo 24C", "c": "writer did do c"}
    assert "- a: Paris 18C" in seen[0] and "- b: Tokyo 24C" in seen[0]
    entries = await journal(store, result.run_id)
    keys = [e.key for e in entries]
    assert keys.index("trip/step.a.v0.1/outcome") < keys.index("trip/step.c.v0.1/turn:0/model")
    assert keys.index("trip/step.b.v0.1/outcome") < keys.index("trip/step.c.v0.1/turn:0/model")
    plans = [e for e in entries if e.kind == "plan"]
    assert [p.key for p in plans] == [f"trip/plan#{n}" for n in range(5)]
    assert [s["status"] for s in plans[1].data["steps"]] == ["in_progress", "in_progress",
                                                               "pending"]
    final = last_plan(entries)
    assert [(s.id, s.status, s.attempts) for s in final.steps] == [
        ("a", "complete", 1), ("b", "complete", 1), ("c", "complete", 1)]
    assert len(queue.seen) == 1
    assert (await store.get_run(result.run_id)).metadata == {"pattern": "planning"}
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report


async def test_a_tool_step_gets_its_arguments_and_a_synthesizer_writes_the_answer() -> None:
    calls: list[str] = []

    @tool
    def weather(city: str) -> str:
        """Weather in a city."""
        calls.append(city)
        return f"{city}: sunny"

    synth = Agent("synth", model=FunctionModel(
        lambda m, t, s: "final: " + m[-1].text.split("- w (do w): ")[1].splitlines()[0]))
    planner, _ = planner_agent(plan_answer(step("w", tool="weather", args={"city": "Oslo"})))
    flow = Planner("wx", planner=planner, tools=[weather], synthesizer=synth)
    store = MemoryStore()
    result = await flow.run("weather?", store=store)
    assert result.output == "final: Oslo: sunny" and calls == ["Oslo"]
    keys = [e.key for e in await journal(store, result.run_id)]
    assert "wx/step.w.v0.1/weather" in keys and "wx/synthesize/turn:0/model" in keys


# ------------------------------------------------------------------ failures and replans


def flaky_tool(fail_times: int) -> tuple[Any, list[int]]:
    tries: list[int] = []

    @tool(name="fetch")
    def fetch(page: int) -> str:
        """Fetch a page."""
        tries.append(page)
        if len(tries) <= fail_times:
            raise ValueError("server said no")
        return f"page {page}"

    return fetch, tries


async def test_a_failing_step_is_retried_then_replanned_keeping_completed_work() -> None:
    fetch, tries = flaky_tool(fail_times=99)
    writer, seen = echo("writer")
    planner, queue = planner_agent(
        plan_answer(step("a"), step("b", tool="fetch", args={"page": 1}, after=["a"])),
        plan_answer(step("a"), step("b2", after=["a"])))
    flow = Planner("job", planner=planner, workers=[writer], tools=[fetch],
                   max_step_attempts=2)
    store = MemoryStore()
    result = await flow.run("go", store=store)
    assert result.output == {"a": "writer did do a", "b2": "writer did do b2"}
    assert tries == [1, 1] and len(queue.seen) == 2
    assert "step b failed after 2 attempt(s)" in queue.seen[1][-1].text
    assert "server said no" in queue.seen[1][-1].text
    entries = await journal(store, result.run_id)
    assert model_keys(entries, "step.a.") == ["job/step.a.v0.1/turn:0/model"]  # not re-run
    assert len(seen) == 2  # a once, b2 once
    final = last_plan(entries)
    assert final.version == 1
    assert [(s.id, s.status) for s in final.steps] == [
        ("a", "complete"), ("b", "failed"), ("b2", "complete")]
    assert "server said no" in (final.get("b").error or "")
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report


async def test_a_retry_that_succeeds_needs_no_replan() -> None:
    fetch, tries = flaky_tool(fail_times=1)
    planner, queue = planner_agent(plan_answer(step("b", tool="fetch", args={"page": 2})))
    flow = Planner("job", planner=planner, tools=[fetch])
    store = MemoryStore()
    result = await flow.run("go", store=store)
    assert result.output == {"b": "page 2"} and tries == [2, 2] and len(queue.seen) == 1
    keys = [e.key for e in await journal(store, result.run_id) if e.kind == "plan_step"]
    assert keys == ["job/step.b.v0.1/outcome", "job/step.b.v0.2/outcome"]


async def test_skip_skips_the_failed_step_and_its_dependents() -> None:
    fetch, _ = flaky_tool(fail_times=99)
    writer, _seen = echo("writer")
    planner, _ = planner_agent(plan_answer(
        step("a"), step("b", tool="fetch", args={"page": 1}), step("c", after=["b"])))
    flow = Planner("job", planner=planner, workers=[writer], tools=[fetch],
                   on_failure="skip", max_step_attempts=1)
    store = MemoryStore()
    result = await flow.run("go", store=store)
    assert result.output == {"a": "writer did do a"}
    final = last_plan(await journal(store, result.run_id))
    assert [(s.id, s.status) for s in final.steps] == [
        ("a", "complete"), ("b", "skipped"), ("c", "skipped")]
    assert final.get("c").error == "dependency b did not complete"


async def test_fail_stops_the_run_naming_the_step() -> None:
    fetch, _ = flaky_tool(fail_times=99)
    planner, _ = planner_agent(plan_answer(step("b", tool="fetch", args={"page": 1})))
    flow = Planner("job", planner=planner, tools=[fetch], on_failure="fail",
                   max_step_attempts=1)
    with pytest.raises(PlanStepFailed, match="plan step 'b' failed 1 time") as info:
        await flow.run("go", store=MemoryStore())
    assert info.value.step_key == "job/step.b.v0.1"


async def test_replans_are_bounded() -> None:
    fetch, _ = flaky_tool(fail_times=99)
    planner, queue = planner_agent(
        plan_answer(step("b", tool="fetch", args={"page": 1})),
        plan_answer(step("b", tool="fetch", args={"page": 2})))
    flow = Planner("job", planner=planner, tools=[fetch], max_replans=1,
                   max_step_attempts=1)
    with pytest.raises(PlanStepFailed, match="max_replans=1"):
        await flow.run("go", store=MemoryStore())
    assert len(queue.seen) == 2


async def test_plan_and_refine_revises_the_remaining_steps_after_each_wave() -> None:
    writer, _ = echo("writer")
    planner, queue = planner_agent(
        plan_answer(step("a"), step("b", after=["a"])),
        plan_answer(step("c", after=["a"])),  # replaces b, builds on a
        plan_answer())                          # nothing more to do
    flow = Planner("r", planner=planner, workers=[writer], mode="plan-and-refine")
    store = MemoryStore()
    result = await flow.run("go", store=store)
    assert result.output == {"a": "writer did do a", "c": "writer did do c"}
    assert len(queue.seen) == 2  # after c the plan is finished: no third call
    assert "[complete] a" in queue.seen[1][-1].text and "result: writer did do a" in (
        queue.seen[1][-1].text)
    final = last_plan(await journal(store, result.run_id))
    assert [s.id for s in final.steps] == ["a", "c"] and final.version == 1


async def test_a_surprising_result_triggers_a_replan() -> None:
    odd = Agent("odd", model=ScriptedModel(["the store is closed"]))
    writer, _ = echo("writer")
    planner, queue = planner_agent(
        plan_answer(step("look", "odd"), step("buy", after=["look"])),
        plan_answer(step("other", after=["look"])))
    flow = Planner("shop", planner=planner, workers=[odd, writer],
                   check=lambda s, r: "closed" if "closed" in str(r) else None)
    store = MemoryStore()
    result = await flow.run("buy milk", store=store)
    assert result.output == {"look": "the store is closed", "other": "writer did do other"}
    assert "step look surprised: closed" in queue.seen[1][-1].text
    final = last_plan(await journal(store, result.run_id))
    assert final.get("look").surprise == "closed"


# ---------------------------------------------------------------- approval and preview


async def test_the_plan_waits_for_approval_then_runs_with_the_note() -> None:
    writer, seen = echo("writer")
    planner, queue = planner_agent(plan_answer(step("a")))
    flow = Planner("ok", planner=planner, workers=[writer], require_approval=True,
                   approval_queue="plans")
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await flow.run("go", store=store)
    assert info.value.trigger == "plan_approval" and info.value.queue == "plans"
    task = await store.get_task(info.value.escalation_id or "")
    assert "1. [pending] a by agent writer: do a" in task.data["proposal"]
    assert seen == []
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                             note="go ahead")
    result = await flow.resume(info.value.run_id or "", store=store)
    assert result.output == {"a": "writer did do a"} and len(queue.seen) == 1
    assert "approved the plan with this note: go ahead" in seen[0]


async def test_preview_returns_the_plan_and_with_plan_executes_it() -> None:
    writer, seen = echo("writer")
    planner, queue = planner_agent(plan_answer(step("a"), step("b", after=["a"])))
    flow = Planner("pv", planner=planner, workers=[writer])
    plan = await flow.preview("go")
    assert [s.id for s in plan.steps] == ["a", "b"] and seen == []
    result = await flow.with_plan(plan).run("go", store=MemoryStore())
    assert result.output == {"a": "writer did do a", "b": "writer did do b"}
    assert len(queue.seen) == 1  # the preview's planning only


# --------------------------------------------------------------------- resume and replay


async def test_a_crash_mid_plan_resumes_without_planning_again() -> None:
    writer, seen = echo("writer")
    broken = Agent("w2", model=ScriptedModel([RuntimeError("boom")]))
    planner, queue = planner_agent(plan_answer(step("a"), step("b", "w2", after=["a"])))
    store = MemoryStore()
    with pytest.raises(RunError, match="boom"):
        await Planner("cr", planner=planner, workers=[writer, broken]).run(
            "go", store=store, run_id="r1")
    assert (await store.get_run("r1")).status == "failed"
    fixed = Agent("w2", model=ScriptedModel(["b done"]))
    flow = Planner("cr", planner=planner, workers=[writer, fixed])
    result = await flow.resume("r1", store=store)
    assert result.output == {"a": "writer did do a", "b": "b done"}
    assert len(queue.seen) == 1 and len(seen) == 1  # no replanning, a not run again
    report = await replay_run(flow, "r1", store=store)
    assert report.identical, report


# ------------------------------------------------------------------------------- budgets


def looping(name: str) -> Agent[str]:
    return Agent(name, model=ScriptedModel([call("ping")] * 30 + ["done"]),
                 tools=[tool(lambda: "pong", name="ping")])


async def test_a_step_cannot_exceed_its_share() -> None:
    writer, _ = echo("writer")
    planner, _ = planner_agent(plan_answer(step("loop", "looper"), step("a")))
    flow = Planner("b", planner=planner, workers=[looping("looper"), writer],
                   step_budget=Budget(max_steps=3), on_failure="skip", max_step_attempts=1)
    store = MemoryStore()
    result = await flow.run("go", store=store)
    assert result.output == {"a": "writer did do a"}
    entries = await journal(store, result.run_id)
    assert len([e for e in entries if "step.loop." in e.key and e.kind in ("model", "tool")
                and e.phase == "result"]) == 3
    assert "BudgetExceeded" in (last_plan(entries).get("loop").error or "")


async def test_the_whole_planner_stops_at_its_budget() -> None:
    planner, _ = planner_agent(plan_answer(step("loop", "looper")))
    flow = Planner("b", planner=planner, workers=[looping("looper")],
                   budget=Budget(max_steps=6))
    with pytest.raises(BudgetExceeded) as info:
        await flow.run("go", store=MemoryStore())
    # 1 planner turn + 5 steps of the loop (the share: all that was left) = the 6 allowed
    assert info.value.allowed == 6 and info.value.limit == "steps"
    assert info.value.step_key == "b/step.loop.v0.1/turn:2/tool:ping#0"


# ----------------------------------------------------------------------- model's plans


async def test_an_invalid_model_plan_goes_back_to_the_planner_with_the_reasons() -> None:
    writer, _ = echo("writer")
    planner, queue = planner_agent(
        plan_answer(step("a", "ghost"), step("b", after=["b"])),
        plan_answer(step("a")))
    store = MemoryStore()
    result = await Planner("fix", planner=planner, workers=[writer]).run("go", store=store)
    assert result.output == {"a": "writer did do a"}
    feedback = " ".join(str(getattr(p, "content", "")) for p in queue.seen[1][-1].parts)
    assert "final_result rejected" in feedback
    assert "plan step a: names unknown agent 'ghost'" in feedback
    assert "plan step b: depends on itself" in feedback
    plans = [e for e in await journal(store, result.run_id) if e.kind == "plan"]
    assert plans[0].data["steps"][0]["agent"] == "writer"


async def test_a_planner_that_never_writes_a_valid_plan_fails_clearly() -> None:
    bad = plan_answer(step("a", after=["z"]))
    queue = Queue(bad, bad)
    planner = Agent("planner", model=FunctionModel(queue), max_output_retries=1)
    writer, _ = echo("writer")
    with pytest.raises(RunError, match="unknown step 'z'"):
        await Planner("x", planner=planner, workers=[writer]).run("go", store=MemoryStore())


# ------------------------------------------------------------------------- the CLI shows it


def test_keel_runs_show_prints_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    fetch, _ = flaky_tool(fail_times=99)
    writer, _ = echo("writer")
    planner, _ = planner_agent(plan_answer(
        step("a"), step("b", tool="fetch", args={"page": 1}, after=["a"])))
    flow = Planner("show", planner=planner, workers=[writer], tools=[fetch],
                   on_failure="skip", max_step_attempts=1)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = asyncio.run(flow.run("go", store=url))
    runner = CliRunner()
    shown = runner.invoke(app, ["--store", url, "runs", "show", result.run_id])
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "plan show (version 0)" in out
    row_a = next(line for line in out.splitlines() if line.startswith("a ")
                 and "complete" in line)
    assert "agent writer" in row_a and "writer did do a" in row_a
    row_b = next(line for line in out.splitlines() if line.startswith("b ")
                 and "skipped" in line)
    assert "tool fetch" in row_b and "server said no" in row_b
    data = json.loads(runner.invoke(app, ["--store", url, "runs", "show", "--json",
                                          result.run_id]).stdout)
    assert [s["status"] for s in data["plans"]["show"]["steps"]] == ["complete", "skipped"]
