"""Conversations: ``run(..., conversation=)`` starts an agent's run from the earlier turns of
the conversation, rebuilt from their journals, in any process; the turns a run built on are a
journaled step, so resume and replay send the same requests even if the conversation grew;
another tenant or user cannot join; ``keel.Conversation`` lists, reads, continues, forks and
deletes. Every backend."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    Conversation,
    Escalate,
    MemoryStore,
    Message,
    RunError,
    RunStore,
    UserError,
    decide_approval,
    replay_run,
    resolve_escalation,
    tool,
)
from keel.runtime import flow, fork_run
from keel.store import (
    RunFilter,
    TaskFilter,
    export_run,
    import_run,
)
from keel.testing import FunctionModel, ScriptedModel, call
from tests._stores import BACKENDS, fresh_store
from tests.runtime._conv_child import answer, as_json, support

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh, empty store of each backend."""
    async with fresh_store(request.param, tmp_path, "keel_conv") as opened:
        yield opened


def _roles(messages: list[Message]) -> list[str]:
    return [m.role for m in messages]


# ------------------------------------------------------------------------------ history


async def test_a_turn_starts_from_the_earlier_turns(store: RunStore) -> None:
    model = FunctionModel(answer)
    agent = support(model)
    first = await agent.run("where is order 7?", store=store, conversation="c-1")
    assert "left the warehouse" in str(first.output)
    second = await agent.run("what did I ask?", store=store, conversation="c-1")
    assert second.output == "I have seen 2 user messages: where is order 7? | what did I ask?"
    sent = model.requests[-1]
    assert _roles(sent) == ["system", "user", "assistant", "tool", "assistant", "user"]
    call_part, result_part = sent[2].parts[0], sent[3].parts[0]
    assert call_part.tool_name == "lookup"  # type: ignore[union-attr]
    assert result_part.call_id == call_part.call_id  # type: ignore[union-attr]
    assert "order 7 left the warehouse" in result_part.content  # type: ignore[union-attr]
    # the run's messages carry the history too; other conversations and plain runs do not
    assert _roles(second.messages) == [*_roles(sent), "assistant"]
    other = await agent.run("hello", store=store, conversation="c-2")
    assert other.output == "I have seen 1 user messages: hello"
    plain = await agent.run("hi", store=store)
    assert plain.output == "I have seen 1 user messages: hi"
    listed = await store.list_runs(RunFilter(conversation="c-1"))
    assert [r.run_id for r in listed] == [second.run_id, first.run_id]
    assert (await store.get_run(plain.run_id)).conversation is None


async def test_the_turns_a_run_built_on_are_a_journal_step(store: RunStore) -> None:
    agent = support()
    first = await agent.run("hi", store=store, conversation="c-1")
    second = await agent.run("again", store=store, conversation="c-1")
    [step] = [e for e in await store.read_journal(second.run_id)
              if e.key == "support/conversation"]
    first_entries = await store.read_journal(first.run_id)
    assert step.kind == "conversation" and step.name == "c-1"
    assert step.data == {"conversation": "c-1",
                         "runs": [[first.run_id, len(first_entries), "completed"]]}
    assert (await store.get_run(second.run_id)).usage["steps"] == 1  # not a budgeted step


async def test_a_turn_continues_in_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await support().run("where is order 7?", store=url, conversation="c-1")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.runtime._conv_child", url, "c-1", "and now?", cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    request, final = lines[0], lines[-1]
    assert [role for role, _ in request] == ["system", "user", "assistant", "tool",
                                             "assistant", "user"]
    assert request[1][1] == "where is order 7?" and "order 7 left" in request[3][1]
    assert final == {"output": "I have seen 2 user messages: where is order 7? | and now?"}


async def test_a_crashed_turn_resumes_with_the_same_requests_though_the_thread_grew(
        tmp_path: Path) -> None:
    """The child dies (SIGKILL) inside the turn's tool call; meanwhile another turn joins the
    conversation; the resumed turn rebuilds the history it had, not the grown one."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await support().run("hello", store=url, conversation="c-1")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.runtime._conv_child", url, "c-1", "where is order 9?",
        "--die", "--run-id", "turn-2", cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == -9
    [before_crash] = [json.loads(line) for line in out.decode().splitlines()]
    later = await support().run("a later turn", store=url, conversation="c-1")
    assert later.output == ("I have seen 3 user messages: hello | where is order 9? | "
                            "a later turn")
    model = FunctionModel(answer)
    resumed = await support(model).resume("turn-2", store=url)
    assert "order 9 left the warehouse" in str(resumed.output)
    # the model's answer of turn 0 was still to be committed with the tool's result: it is
    # asked again, with the very request the dead process sent, then turn 1 goes on
    again, after = model.requests
    assert as_json(again) == before_crash
    assert _roles(after) == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert all("a later turn" not in m.text for m in again + after)
    report = await replay_run(support(), "turn-2", store=url)
    assert report.identical, report.reason


async def test_replay_of_a_turn_reads_the_earlier_turns(store: RunStore) -> None:
    agent = support()
    await agent.run("where is order 7?", store=store, conversation="c-1")
    second = await agent.run("what did I ask?", store=store, conversation="c-1")
    await agent.run("a third turn", store=store, conversation="c-1")
    report = await replay_run(agent, second.run_id, store=store)
    assert report.identical, report.reason
    assert "support/conversation" not in report.unused_steps


async def test_a_fork_of_a_turn_keeps_its_history(store: RunStore) -> None:
    agent = support()
    await agent.run("hello", store=store, conversation="c-1")
    second = await agent.run("what did I say?", store=store, conversation="c-1")
    model = FunctionModel(answer)
    forked = await fork_run(support(model), second.run_id, at="support/turn:0/model",
                            store=store)
    assert forked.output == second.output
    assert (await store.get_run(forked.run_id)).conversation is None  # not a turn of c-1
    assert len(await store.list_runs(RunFilter(conversation="c-1"))) == 2


# --------------------------------------------------------------- unfinished earlier turns


async def test_what_unfinished_and_answered_turns_contribute(store: RunStore) -> None:
    """A failed turn gives its user message and its recorded calls, each closed by a result;
    a turn a person answered through an escalation carries the person's answer."""

    @tool(risk="irreversible")
    def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    waits = Agent("support", model=ScriptedModel([call("refund", {"order": "5"}), "Done."]),
                  tools=[refund])
    with pytest.raises(ApprovalRequired) as suspended:
        await waits.run("refund order 5", store=store, conversation="c-1")
    failing = Agent("support", model=ScriptedModel([RuntimeError("provider down")]))
    with pytest.raises(RunError):
        await failing.run("are you there?", store=store, conversation="c-1")
    with pytest.raises(Escalate):
        await support().run("I want to talk to a human", store=store, conversation="c-1")
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    await resolve_escalation(task.task_id, store=store, by="ann", action="answer",
                             answer="A person here: your refund is on its way.")
    model = FunctionModel(lambda m, t, s: "ok")
    await support(model).run("thanks", store=store, conversation="c-1")
    sent = model.requests[0][1:]
    assert _roles(sent) == ["user", "assistant", "tool", "user", "user", "assistant", "user"]
    assert sent[0].text == "refund order 5"
    waiting = sent[2].parts[0]
    assert waiting.is_error and "suspended" in waiting.content  # type: ignore[union-attr]
    assert sent[3].text == "are you there?"
    assert sent[5].text == "A person here: your refund is on its way."
    # the suspended turn still goes on when approved; the next turn then sees its result
    [approval] = await store.list_tasks(TaskFilter(kind="approval"))
    await decide_approval(approval.task_id, store=store, approve=True, by="ann")
    await waits.resume(suspended.value.run_id or "", store=store)
    after = await Conversation("c-1", store=store).messages()
    assert "refunded 5" in after[2].parts[0].content  # type: ignore[union-attr]


async def test_flow_runs_join_with_their_input_and_output(store: RunStore) -> None:
    @flow("intake")
    async def intake(ctx: Any, text: str) -> str:
        return f"ticket opened for: {text}"

    await intake.run("my printer is on fire", store=store, conversation="c-1")
    model = FunctionModel(lambda m, t, s: "ok")
    await support(model).run("any news?", store=store, conversation="c-1")
    assert [m.text for m in model.requests[0][1:]] == [
        "my printer is on fire", "ticket opened for: my printer is on fire", "any news?"]


# ------------------------------------------------------------------------------ owners


async def test_another_tenant_or_user_cannot_join(store: RunStore) -> None:
    agent = support()
    await agent.run("mine", store=store, conversation="c-1", tenant="acme", user="alice")
    for tenant, user in (("globex", "alice"), ("acme", "bob"), (None, None), ("acme", None)):
        with pytest.raises(UserError, match="belongs to another tenant or user"):
            await agent.run("let me in", store=store, conversation="c-1", tenant=tenant,
                            user=user)
    assert len(await store.list_runs()) == 1
    ok = await agent.run("me again", store=store, conversation="c-1", tenant="acme",
                         user="alice")
    assert ok.output == "I have seen 2 user messages: mine | me again"


async def test_bad_conversation_ids_are_refused_before_anything_is_stored(
        store: RunStore) -> None:
    agent = support()
    for bad in ("", "  ", "x" * 201, "a\x00b", "line\nbreak", "\x1b[2J", 42):
        with pytest.raises(UserError, match="conversation"):
            await agent.run("hi", store=store, conversation=bad)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="conversation"):
            Conversation(bad, store=store)  # type: ignore[arg-type]
    assert await store.list_runs() == []
    hostile = "c' OR '1'='1; DROP TABLE runs; --"
    await agent.run("hi", store=store, conversation=hostile)
    assert [r.conversation for r in await store.list_runs()] == [hostile]
    assert await store.list_runs(RunFilter(conversation="c")) == []


async def test_a_turn_whose_earlier_turns_are_gone_cannot_be_replayed() -> None:
    """A turn imported into a store without the turns it built on: its history cannot be
    rebuilt, which is said, not papered over with a shorter history."""
    store = MemoryStore()
    agent = support()
    await agent.run("hi", store=store, conversation="c-1")
    second = await agent.run("again", store=store, conversation="c-1")
    elsewhere = MemoryStore()
    await import_run(await export_run(second.run_id, store=store), store=elsewhere)
    report = await replay_run(agent, second.run_id, store=elsewhere)
    assert not report.identical
    assert "no longer in the store" in str(report.replayed_error), report


# ------------------------------------------------------------------ other ways to run


async def test_streaming_and_workers_continue_conversations(store: RunStore) -> None:
    from keel.core import RunFinished
    from keel.runtime import Worker

    agent = support()
    await agent.run("where is order 7?", store=store, conversation="c-1")
    events = [e async for e in agent.stream("what did I ask?", store=store,
                                            conversation="c-1")]
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    assert finished.result is not None
    assert finished.result.output == ("I have seen 2 user messages: where is order 7? | "
                                      "what did I ask?")

    @tool(risk="irreversible")
    def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    def turn(messages: list[Message], tools: Any, settings: Any) -> Any:
        if messages[-1].role == "tool":
            return "refund done"
        users = [m.text for m in messages if m.role == "user"]
        return call("refund", {"order": str(len(users))})

    model = FunctionModel(turn)
    waits = Agent("support", model=model, tools=[refund])
    with pytest.raises(ApprovalRequired):
        await waits.run("refund it", store=store, conversation="c-1")
    await agent.run("meanwhile", store=store, conversation="c-1")  # the thread grows
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    await decide_approval(task.task_id, store=store, approve=True, by="ann")
    outcomes = await Worker([waits], store=store).run_until_idle()
    assert [o.status for o in outcomes] == ["completed"]
    record = await store.get_run(task.run_id)
    assert record.output == "refund done" and record.conversation == "c-1"
    entries = await store.read_journal(task.run_id)
    refunded = next(e for e in entries if e.kind == "tool" and e.phase == "result")
    assert "refunded 3" in refunded.data["content"]  # the third user message, as first seen
    # the worker's request had the history the turn started with, not the grown one
    assert len(model.requests) == 2
    assert all("meanwhile" not in m.text for m in model.requests[-1])
    assert [m.role for m in model.requests[-1]][-3:] == ["user", "assistant", "tool"]


async def test_a_flow_knows_its_conversation(store: RunStore) -> None:
    seen: list[str | None] = []

    @flow("intake")
    async def intake(ctx: Any, text: str) -> str:
        seen.append(ctx.conversation)
        return "ok"

    await intake.run("a", store=store, conversation="c-1")
    await intake.run("b", store=store)
    assert seen == ["c-1", None]
