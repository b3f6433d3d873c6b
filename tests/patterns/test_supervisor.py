"""Supervisor and hierarchical teams: delegation, concurrency, what the lead sees, budgets,
resume, replay and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel import Agent, Budget, ConfigError, Escalate, MemoryStore, tool
from keel.core import Message, ToolCallPart, ToolResultPart
from keel.guard import undelimit
from keel.patterns import Supervisor
from keel.runtime import replay_run, resolve_escalation
from keel.store import TaskFilter
from keel.testing import ScriptedModel, call

BOTH = [call("ask_research", {"task": "find the facts"}),
        call("ask_writer", {"task": "draft the intro"})]


def _texts(requests: list[list[Message]]) -> str:
    parts: list[str] = []
    for request in requests:
        for m in request:
            for p in m.parts:
                if isinstance(p, ToolResultPart):
                    parts.append(undelimit(p.content))
                elif isinstance(p, ToolCallPart):
                    parts.append(f"{p.tool_name}({p.arguments})")
                else:
                    parts.append(p.text)
    return "\n".join(parts)


def _team(barrier: asyncio.Barrier | None = None, **kw: Any) -> tuple[Supervisor, ScriptedModel,
                                                                       list[ScriptedModel]]:
    async def lookup(topic: str) -> str:
        """Look a topic up."""
        if barrier is not None:  # both workers must be inside their tool at the same time
            await asyncio.wait_for(barrier.wait(), 2)
        return f"secret-internal-{topic}"

    research_model = ScriptedModel([call("lookup", {"topic": "facts"}), "facts: the sky is blue"])
    writer_model = ScriptedModel([call("lookup", {"topic": "style"}), "intro: Once upon a time"])
    lead_model = ScriptedModel([BOTH, "Report: the sky is blue. Once upon a time."])
    research = Agent("research", model=research_model, tools=[tool(lookup)],
                     instructions="Finds facts.")
    writer = Agent("writer", model=writer_model, tools=[tool(lookup)])
    lead = Agent("lead", model=lead_model, instructions="Split the work, then synthesize.")
    return (Supervisor("team", lead=lead, workers=[research, writer], **kw), lead_model,
            [research_model, writer_model])


async def test_workers_run_concurrently_and_the_lead_sees_only_their_results() -> None:
    barrier = asyncio.Barrier(2)  # deadlocks (and the tool times out) if they ran one by one
    team, lead_model, workers = _team(barrier)
    store = MemoryStore()
    result = await team.run("write a report", store=store)
    assert result.output == "Report: the sky is blue. Once upon a time."
    assert barrier.n_waiting == 0 and all(len(m.requests) == 2 for m in workers)
    for worker, topic in zip(workers, ("facts", "style"), strict=True):
        seen_by_worker = [p for m in worker.requests[-1] for p in m.tool_results]
        assert [(undelimit(p.content), p.is_error) for p in seen_by_worker] == [
            (f"secret-internal-{topic}", False)]
    seen = _texts(lead_model.requests)
    assert "facts: the sky is blue" in seen and "intro: Once upon a time" in seen
    assert "secret-internal" not in seen and "lookup" not in seen
    tool_results = [p for m in lead_model.requests[-1] for p in m.tool_results]
    assert [(p.tool_name, p.is_error) for p in tool_results] == [("ask_research", False),
                                                                 ("ask_writer", False)]
    keys = {e.key for e in await store.read_journal(result.run_id)}
    assert {"team/lead/turn:0/tool:ask_research#0",
            "team/lead/turn:0/tool:ask_research#0/research/turn:1/model",
            "team/lead/turn:0/tool:ask_writer#0/writer/turn:0/tool:lookup#0",
            "team/lead/turn:1/model"} <= keys
    record = await store.get_run(result.run_id)
    assert record.metadata == {"pattern": "supervisor"} and record.status == "completed"


async def test_share_internals_shows_the_lead_a_transcript_of_the_workers_tools() -> None:
    team, lead_model, _ = _team(share_internals=["research"])
    await team.run("write a report", store=MemoryStore())
    results = {p.tool_name: undelimit(p.content) for m in lead_model.requests[-1]
               for p in m.tool_results}
    assert "call lookup(" in results["ask_research"]
    assert "result lookup: secret-internal-facts" in results["ask_research"]
    assert results["ask_writer"] == "intro: Once upon a time"


async def test_a_worker_can_be_a_supervisor_and_its_keys_nest() -> None:
    coder = Agent("coder", model=ScriptedModel(["def f(): pass"]))
    manager = Agent("mgr", model=ScriptedModel([call("ask_coder", {"task": "write f"}),
                                                "dept: f is written"]))
    dept = Supervisor("dept", lead=manager, workers=[coder])
    boss_model = ScriptedModel([call("ask_dept", {"task": "ship f"}), "shipped: f is written"])
    top = Supervisor("top", lead=Agent("boss", model=boss_model), workers=[dept])
    store = MemoryStore()
    result = await top.run("ship it", store=store)
    assert result.output == "shipped: f is written"
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert ("top/boss/turn:0/tool:ask_dept#0/dept/mgr/turn:0/tool:ask_coder#0/coder/"
            "turn:0/model") in keys
    assert "def f" not in _texts(boss_model.requests)  # two levels down stays down
    assert (await replay_run(top, result.run_id, store=store)).identical


async def test_a_worker_cannot_exceed_its_share_and_the_lead_sees_the_failure() -> None:
    def poll() -> str:
        """Poll a job."""
        return "still running"

    looper_model = ScriptedModel([call("poll")] * 20)
    looper = Agent("looper", model=looper_model, tools=[tool(poll)])
    lead_model = ScriptedModel([call("ask_looper", {"task": "wait for the job"}),
                                "The job did not finish in time."])
    team = Supervisor("team", lead=Agent("lead", model=lead_model), workers=[looper],
                      worker_budget=Budget(max_steps=3))
    store = MemoryStore()
    result = await team.run("go", store=store)
    assert result.output == "The job did not finish in time."
    assert len(looper_model.requests) == 2  # model, tool, model; the next tool is refused
    [failure] = [p for m in lead_model.requests[-1] for p in m.tool_results]
    assert failure.is_error and '"tool_error"' in failure.content
    assert "worker 'looper' failed: BudgetExceeded" in failure.content
    assert (await replay_run(team, result.run_id, store=store)).identical


async def test_a_fractional_share_is_taken_from_what_is_left_of_the_supervisor() -> None:
    looper_model = ScriptedModel([call("poll")] * 20)
    looper = Agent("looper", model=looper_model, tools=[tool(lambda: "no", name="poll")],
                   budget=Budget(max_steps=100))
    lead = Agent("lead", model=ScriptedModel([call("ask_looper", {"task": "x"}), "gave up"]))
    team = Supervisor("team", lead=lead, workers=[looper], worker_budget=0.5,
                      budget=Budget(max_steps=10))
    result = await team.run("go", store=MemoryStore())
    # 10 steps, 1 used by the lead's first turn: the worker gets half of 9, i.e. 4 steps.
    assert result.output == "gave up" and len(looper_model.requests) == 2


async def test_resume_after_a_crash_in_synthesis_does_not_run_workers_again() -> None:
    team, _, workers = _team()
    team.lead = team.lead.clone(model=ScriptedModel([BOTH, RuntimeError("model down")]))
    store = MemoryStore()
    with pytest.raises(Exception, match="model down"):
        await team.run("write a report", store=store, run_id="r1")
    assert [len(m.requests) for m in workers] == [2, 2]
    assert (await store.get_run("r1")).status == "failed"
    fixed, _, _ = _team()
    fixed.workers = team.workers  # the same worker models: their request counts tell
    result = await fixed.resume("r1", store=store)
    assert result.output == "Report: the sky is blue. Once upon a time."
    assert [len(m.requests) for m in workers] == [2, 2]
    assert (await replay_run(fixed, "r1", store=store)).identical


async def test_replay_of_a_supervisor_run_is_identical_and_calls_nothing() -> None:
    team, lead_model, workers = _team()
    store = MemoryStore()
    result = await team.run("write a report", store=store)
    before = [len(lead_model.requests)] + [len(m.requests) for m in workers]
    report = await replay_run(team, result.run_id, store=store)
    assert report.identical, report
    assert report.steps_replayed == report.steps_recorded
    assert [len(lead_model.requests)] + [len(m.requests) for m in workers] == before


def _agent(name: str) -> Agent[str]:
    return Agent(name, model=ScriptedModel(["ok"]))


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"workers": []}, "workers"),
    ({"workers": "research"}, "workers"),
    ({"workers": [_agent("a"), _agent("a")]}, "workers[1]"),
    ({"workers": {"bad name": _agent("a")}}, "workers['bad name']"),
    ({"workers": [_agent("billing-desk")]}, "workers[0]"),
    ({"workers": [object()]}, "workers[0]"),
    ({"workers": [_agent("a")], "descriptions": {"b": "x"}}, "descriptions['b']"),
    ({"workers": [_agent("a")], "worker_budget": 1.5}, "worker_budget"),
    ({"workers": [_agent("a")], "worker_budget": "half"}, "worker_budget"),
    ({"workers": [_agent("a")], "share_internals": ["b"]}, "share_internals"),
    ({"workers": [_agent("a")], "lead": "lead"}, "lead"),
    ({"workers": [_agent("a")],
      "lead": Agent("lead", model=ScriptedModel([]), tools=[tool(lambda: 1, name="ask_a")])},
     "lead.tools"),
])
def test_bad_definitions_name_the_part(kwargs: dict[str, Any], part: str) -> None:
    kwargs.setdefault("lead", _agent("lead"))
    with pytest.raises(ConfigError) as info:
        Supervisor("team", **kwargs)
    assert info.value.field == part


async def test_a_supervisor_that_contains_itself_is_refused_before_it_runs() -> None:
    inner = Supervisor("inner", lead=_agent("lead"), workers=[_agent("a")])
    outer = Supervisor("outer", lead=_agent("boss"), workers=[inner])
    inner.workers["outer"] = outer  # a cycle made after construction
    store = MemoryStore()
    with pytest.raises(ConfigError, match="cycle: outer -> inner -> outer"):
        await outer.run("go", store=store)
    assert await store.list_runs() == []
    with pytest.raises(ConfigError, match="cycle"):
        Supervisor("again", lead=_agent("x"), workers=[outer])


async def test_a_worker_that_escalates_suspends_the_run_once_on_its_own_task() -> None:
    def refund(order_id: str) -> str:
        """Refund an order."""
        raise Escalate(f"a refund of {order_id} needs a person")

    worker_model = ScriptedModel([call("refund", {"order_id": "A1"}), "Refunded A1."])
    worker = Agent("billing", model=worker_model, tools=[tool(refund)],
                   instructions="Handle billing.")
    lead_model = ScriptedModel([call("ask_billing", {"task": "refund A1"}), "Done: refunded."])
    team = Supervisor("team", lead=Agent("lead", model=lead_model), workers=[worker])
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await team.run("refund A1", store=store)
    run_id = info.value.run_id or ""
    tasks = await store.list_tasks(TaskFilter(run_id=run_id))
    assert [t.task_id for t in tasks] == [info.value.escalation_id]  # exactly one task
    assert tasks[0].data["step_key"].startswith("team/lead/turn:0/tool:ask_billing#0/billing/")
    assert (await store.get_run(run_id)).status == "suspended"
    await resolve_escalation(tasks[0].task_id, store=store, by="ana", action="resume",
                             note="go ahead")
    result = await team.resume(run_id, store=store)
    assert result.output == "Done: refunded."
    assert len(await store.list_tasks(TaskFilter(run_id=run_id))) == 1
    assert len(lead_model.requests) == 2 and len(worker_model.requests) == 2
    assert "go ahead" in worker_model.requests[-1][-1].text
    assert (await replay_run(team, run_id, store=store)).identical
