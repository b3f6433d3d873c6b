"""Who acted is called ``by`` everywhere; the names keel 0.1 used (``decided_by``,
``resolved_by``) still work for one release with a DeprecationWarning, and decisions that
keel 0.1 journaled under them still load and resume."""

from __future__ import annotations

import time
from typing import Any

import pytest

from keel import Agent, ApprovalRequired, MemoryStore, tool
from keel.core import ModelResponse, ToolCallPart, ToolResultPart
from keel.runtime import decide_approval, resolve_escalation
from keel.store import JournalEntry, TaskFilter
from keel.testing import FunctionModel


def _wire_agent(seen: list[str]) -> Agent[Any]:
    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        return f"sent {amount}"

    def reply(messages: Any, tools: Any, settings: Any) -> Any:
        results = [p.content for m in messages for p in m.parts
                   if isinstance(p, ToolResultPart)]
        if not results:
            return ModelResponse(parts=(ToolCallPart(call_id="c0", tool_name="wire",
                                                     arguments='{"amount": 5}'),))
        seen.extend(results)
        return "done"

    return Agent("pay", model=FunctionModel(reply), tools=[wire])


async def _suspended(store: MemoryStore, seen: list[str]) -> tuple[Agent[Any], str, str]:
    agent = _wire_agent(seen)
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("pay", store=store)
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert info.value.run_id is not None
    return agent, info.value.run_id, task.task_id


async def test_the_old_names_still_work_with_a_deprecation_warning() -> None:
    store = MemoryStore()
    _, run_id, task_id = await _suspended(store, [])
    with pytest.warns(DeprecationWarning, match="decided_by= is deprecated; pass by="):
        task = await decide_approval(task_id, store=store, approve=True, decided_by="ann")
    assert task.by == "ann"
    with pytest.warns(DeprecationWarning, match=r"HumanTask.resolved_by is deprecated"):
        assert task.resolved_by == "ann"
    entry = (await store.read_journal(run_id))[-1]
    assert entry.data["by"] == "ann" and "decided_by" not in entry.data


async def test_resolve_escalation_takes_by_and_the_old_name() -> None:
    from keel import Escalate

    @tool
    def stuck() -> str:
        """Give up."""
        raise Escalate("needs a person")

    def reply(messages: Any, tools: Any, settings: Any) -> Any:
        return ModelResponse(parts=(ToolCallPart(call_id="c0", tool_name="stuck",
                                                 arguments="{}"),))

    agent = Agent("esc", model=FunctionModel(reply), tools=[stuck])
    for name in ("by", "resolved_by"):
        store = MemoryStore()
        with pytest.raises(Escalate):
            await agent.run("help", store=store)
        [task] = await store.list_tasks(TaskFilter(kind="escalation"))
        if name == "by":
            done = await resolve_escalation(task.task_id, store=store, by="ana", action="answer",
                                            answer="42")
        else:
            with pytest.warns(DeprecationWarning, match="resolved_by= is deprecated"):
                done = await resolve_escalation(task.task_id, store=store, resolved_by="ana",
                                                action="answer", answer="42")
        assert done.by == "ana"
        assert (await store.read_journal(task.run_id))[-1].data["by"] == "ana"


async def test_by_and_an_old_name_that_differ_are_refused() -> None:
    from keel import UserError

    store = MemoryStore()
    _, _, task_id = await _suspended(store, [])
    with pytest.raises(UserError, match="give who acted once"), \
            pytest.warns(DeprecationWarning, match="decided_by="):
        await decide_approval(task_id, store=store, approve=True, by="ann", decided_by="bob")


async def test_a_decision_journaled_by_keel_0_1_still_resumes() -> None:
    """keel 0.1 wrote ``decided_by`` in the decision: a denial still names who denied."""
    store = MemoryStore()
    seen: list[str] = []
    agent, run_id, task_id = await _suspended(store, seen)
    task = await store.get_task(task_id)
    journal = await store.read_journal(run_id)
    intent = next(e for e in journal if e.key == task.step_key and e.phase == "intent")
    old = {"approved": False, "comment": "not today", "arguments": {"amount": 5},
           "edited": False, "decided_by": "ann", "decided_at": time.time()}
    entry = JournalEntry(seq=max(e.seq for e in journal) + 1, key=task.step_key,
                         phase="result", kind="approval", name="wire",
                         input_hash=intent.input_hash, data=old, created_at=time.time())
    await store.resolve_task(task_id, old, by="ann", entry=entry)
    assert (await agent.resume(run_id, store=store)).output == "done"
    assert any("ann denied this call: not today" in text for text in seen), seen


# ------------------------------------------------------------- the store is passed as store=


async def test_every_store_function_takes_store_as_a_keyword() -> None:
    """One convention: ``f(ids..., store=store)``, as ``agent.run``, ``replay_run``,
    ``fork_run`` and ``Worker`` take it; keel 0.1's ``f(store, ids...)`` still works for one
    release with a DeprecationWarning, and a call without a store says what to pass."""
    import inspect

    from keel import UserError, cancel_run, diff_runs, export_run, import_run
    from keel.runtime import Worker, claim_escalation, fork_run, replay_run

    for func in (cancel_run, decide_approval, resolve_escalation, claim_escalation, diff_runs,
                 export_run, import_run, replay_run, fork_run, Worker):
        param = inspect.signature(func).parameters["store"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, func

    store = MemoryStore()
    _, run_id, task_id = await _suspended(store, [])
    with pytest.warns(DeprecationWarning, match=r"export_run\(store, \.\.\.\) is deprecated"):
        old = await export_run(store, run_id)  # type: ignore[arg-type]
    new = await export_run(run_id, store=store)
    assert {**old, "exported_at": 0} == {**new, "exported_at": 0}
    with pytest.raises(UserError, match=r"decide_approval\(\) needs the run store: pass store="):
        await decide_approval(task_id, approve=True, by="ann")
    with pytest.warns(DeprecationWarning, match=r"cancel_run\(store, \.\.\.\)"):
        assert await cancel_run(store, run_id, by="ann") == "cancelled"  # type: ignore[arg-type]
    assert (await store.read_journal(run_id))[-1].data["by"] == "ann"
    with pytest.warns(DeprecationWarning, match=r"diff_runs\(store, \.\.\.\)"):
        old_diff = await diff_runs(store, run_id, run_id)  # type: ignore[arg-type]
    assert old_diff.to_dict() == (await diff_runs(run_id, run_id, store=store)).to_dict()
