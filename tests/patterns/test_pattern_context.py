"""The patterns' helper agents read their conversation through a keel.context History:
group-chat selectors and judges, the reflection critic and generator, the supervisor's lead
and handoff filters; what they see, that nothing is orphaned, replay, and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, tool
from keel.context import History, Importance, SlidingWindow
from keel.core import Message, ModelResponse, ToolCallPart, ToolResultPart, ToolSpec
from keel.guard import undelimit
from keel.patterns import (
    JUDGE_TURNS,
    GroupChat,
    HandoffTeam,
    HistoryFilter,
    Judge,
    Judgement,
    JudgeVerdict,
    ModelSelector,
    NextSpeaker,
    Predicate,
    Reflection,
    Rubric,
    Supervisor,
    judge_context,
)
from keel.runtime import replay_run
from keel.testing import FunctionModel, call


def _structured(answer: dict[str, Any]) -> FunctionModel:
    """Always answers ``final_result(answer)``; ``.requests`` keeps what it was sent."""

    def fn(messages: list[Message], tools: list[ToolSpec], settings: Any) -> ModelResponse:
        return ModelResponse(parts=(ToolCallPart(call_id="c", tool_name="final_result",
                                                 arguments=json.dumps(answer)),),
                             finish_reason="tool_calls")

    return FunctionModel(fn)


def _talker(name: str) -> Agent[str]:
    count = iter(range(10_000))
    return Agent(name, model=FunctionModel(lambda m, t, s: f"{name} says {next(count)}"))


def _peer_lines(request: list[Message]) -> list[str]:
    return [m.text for m in request
            if m.role == "user" and m.text.startswith("[") and not m.text.startswith("[keel:")]


def _orphans(request: list[Message]) -> tuple[set[str], set[str]]:
    calls = {p.call_id for m in request for p in m.parts if isinstance(p, ToolCallPart)}
    results = {p.call_id for m in request for p in m.parts if isinstance(p, ToolResultPart)}
    return calls - results, results - calls


# ------------------------------------------------------------------------------ group chat


async def test_a_judge_reads_the_task_and_the_last_turns_by_default() -> None:
    referee = _structured({"done": False, "reason": "not yet"})
    chat = GroupChat("chat", [_talker("ana"), _talker("bo")], max_turns=30,
                     until=[Judge(Agent("referee", model=referee, output_type=JudgeVerdict))])
    store = MemoryStore()
    result = await chat.run("plan a trip", store=store)
    assert len(result.output.transcript) == 30 and len(referee.requests) == 30
    last = referee.requests[-1]
    users = [m for m in last if m.role == "user"]
    assert users[0].text.startswith("Group chat between ana, bo. Task: plan a trip")
    lines = _peer_lines(last)
    # the latest turns, newest last; the judge's own prompt is one of the kept turns
    assert len(lines) == JUDGE_TURNS - 1  # the judge's own question is the twelfth turn
    assert lines[-1] == "[bo]: bo says 14"
    # early requests were not trimmed: the whole transcript still fitted the window
    assert len(_peer_lines(referee.requests[3])) == 4
    report = await replay_run(chat, result.run_id, store=store)
    assert report.identical and not report.unused_steps, report


async def test_history_off_gives_the_judge_and_selector_the_whole_transcript() -> None:
    referee = _structured({"done": False, "reason": "not yet"})
    picker = _structured({"speaker": "ana", "reason": "her turn"})
    chat = GroupChat("chat", [_talker("ana"), _talker("bo")], max_turns=20,
                     selector=ModelSelector(Agent("pick", model=picker, output_type=NextSpeaker)),
                     until=[Judge(Agent("referee", model=referee, output_type=JudgeVerdict))],
                     context=History.off())
    await chat.run("plan a trip", store=MemoryStore())
    assert len(_peer_lines(referee.requests[-1])) == 20
    assert len(_peer_lines(picker.requests[-1])) == 19


async def test_a_given_window_applies_to_the_selector_and_every_judge() -> None:
    referee = _structured({"done": False, "reason": "no"})
    second = _structured({"done": False, "reason": "no"})
    picker = _structured({"speaker": "bo", "reason": ""})
    chat = GroupChat("chat", [_talker("ana"), _talker("bo")], max_turns=10,
                     selector=ModelSelector(Agent("pick", model=picker, output_type=NextSpeaker)),
                     until=[Judge(Agent("referee", model=referee, output_type=JudgeVerdict)),
                            Judge(Agent("second", model=second, output_type=JudgeVerdict))],
                     context=History(Importance(), SlidingWindow(3)))
    await chat.run("plan a trip", store=MemoryStore())
    for model in (referee, second, picker):
        last = model.requests[-1]
        assert last[0].text.startswith("Group chat between")  # the task stays
        assert len(_peer_lines(last)) == 2  # 3 turns: two lines and the question itself
    # the pattern's agents are the clones that run; the user's agents are unchanged
    names = sorted(a.name for a in chat.agents())
    assert names == ["ana", "bo", "pick", "referee", "second"]


# ------------------------------------------------------------------------------ reflection


async def test_the_reflection_generator_and_critic_read_through_the_context() -> None:
    drafts = iter(range(100))
    generator = FunctionModel(lambda m, t, s: f"draft {next(drafts)}")
    scores = iter(range(1, 100))

    def critique(messages: list[Message], tools: list[ToolSpec], settings: Any) -> ModelResponse:
        score = next(scores) / 10  # every round better, none good enough
        verdict = {"scores": [{"item": "clear", "passed": False, "score": score,
                               "feedback": "more"}], "feedback": "more"}
        return ModelResponse(parts=(ToolCallPart(call_id="c", tool_name="final_result",
                                                 arguments=json.dumps(verdict)),),
                             finish_reason="tool_calls")

    critic = FunctionModel(critique)
    flow = Reflection("polish", generator=Agent("gen", model=generator),
                      critic=Agent("critic", model=critic, output_type=Judgement),
                      criteria=[Rubric("clear")], max_rounds=6,
                      context=History(Importance(), SlidingWindow(2)))
    store = MemoryStore()
    result = await flow.run("write a haiku", store=store)
    assert result.output.rounds == 6
    last = generator.requests[-1]
    users = [m.text for m in last if m.role == "user"]
    assert users[0] == "write a haiku"  # the task stays
    assert len(users) == 3  # the task, the previous round's revision request, this one
    assert sum(1 for m in last if m.role == "assistant") == 1
    assert len(critic.requests) == 6
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report


# ------------------------------------------------------------------------------ supervisor


async def test_the_supervisor_lead_reads_its_delegations_through_the_context() -> None:
    asks = iter([*(call("ask_research", {"task": f"fact {i}"}) for i in range(8)), "done"])
    lead_model = FunctionModel(lambda m, t, s: next(asks))
    research = Agent("research", model=FunctionModel(lambda m, t, s: "a fact"))
    team = Supervisor("team", lead=Agent("lead", model=lead_model), workers=[research],
                      context=History(Importance(), SlidingWindow(3)))
    store = MemoryStore()
    result = await team.run("collect facts", store=store)
    assert result.output == "done"
    last = lead_model.requests[-1]
    calls = [p for m in last for p in m.parts if isinstance(p, ToolCallPart)]
    assert 0 < len(calls) <= 3  # 8 delegations made, the last few seen
    assert _orphans(last) == (set(), set())
    assert last[0].text == "collect facts"  # the task stays
    report = await replay_run(team, result.run_id, store=store)
    assert report.identical, report


# -------------------------------------------------------------------------------- handoff


async def test_a_handoff_filter_within_a_history_carries_what_the_policy_keeps() -> None:
    moves = iter([*(["thinking", call("lookup", {"q": str(i)})] for i in range(4)),
                  [call("transfer_to_billing", {"reason": "billing"})]])
    triage = Agent("triage", model=FunctionModel(lambda m, t, s: next(moves)),
                   tools=[tool(lookup)])
    billing_model = FunctionModel(lambda m, t, s: "fixed")
    team = HandoffTeam("desk", agents=[triage, Agent("billing", model=billing_model)],
                       human=False, history=HistoryFilter.within(
                           History(Importance(), SlidingWindow(2)), tools=True))
    store = MemoryStore()
    result = await team.run("I was charged twice", store=store)
    assert result.output == "fixed"
    seen = billing_model.requests[0]
    assert seen[0].text == "I was charged twice"
    assert _orphans(seen) == (set(), set())
    results = [undelimit(p.content) for m in seen for p in m.parts
               if isinstance(p, ToolResultPart)]
    assert results == ["found 2", "found 3"]  # of four lookups, the last two turns
    report = await replay_run(team, result.run_id, store=store)
    assert report.identical, report


def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def test_history_filter_within_drops_old_turns_but_keeps_the_first_question() -> None:
    said = [Message.user("my order A1"), Message.assistant("looking"),
            *[Message.user(f"more {i}") if i % 2 == 0 else Message.assistant(f"ok {i}")
              for i in range(10)]]
    kept = HistoryFilter.within(History(Importance(), SlidingWindow(2))).apply(
        said, model="test:scripted")
    assert kept[0].text == "my order A1"
    assert [m.text for m in kept[2:]] == ["more 8", "ok 9"]  # after the note of what went
    # tools=True keeps tool calls with their results, never one without the other
    call_msg = Message(role="assistant", parts=(ToolCallPart(call_id="x", tool_name="t",
                                                             arguments="{}"),))
    result_msg = Message(role="tool", parts=(ToolResultPart(call_id="x", tool_name="t",
                                                            content="r"),))
    kept = HistoryFilter.within(History(SlidingWindow(1)), tools=True).apply(
        [Message.user("q"), Message.assistant("a"), Message.user("q2"), call_msg, result_msg])
    assert _orphans(kept) == (set(), set())


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", ["last 5", 5, SlidingWindow(3), [History()]])
def test_a_context_that_is_not_a_history_is_refused(bad: Any) -> None:
    peers = [_talker("ana"), _talker("bo")]
    with pytest.raises(ConfigError, match=r"keel\.context\.History"):
        GroupChat("chat", peers, context=bad)
    with pytest.raises(ConfigError, match=r"keel\.context\.History"):
        Reflection("r", generator=peers[0], criteria=[Predicate("p", lambda c: True)],
                   context=bad)
    with pytest.raises(ConfigError, match=r"keel\.context\.History"):
        Supervisor("s", lead=peers[0], workers=[peers[1]], context=bad)
    with pytest.raises(ConfigError, match=r"keel\.context\.History"):
        HistoryFilter.within(bad)


def test_each_agent_gets_its_own_history_and_the_users_agent_is_untouched() -> None:
    shared = History(SlidingWindow(4))
    judge_agent = Agent("referee", model=_structured({"done": True}), output_type=JudgeVerdict)
    chat = GroupChat("chat", [_talker("ana"), _talker("bo")], until=[Judge(judge_agent)],
                     context=shared)
    clone = next(a for a in chat.agents() if a.name == "referee")
    histories = [m for m in clone.config.middleware if isinstance(m, History)]
    assert len(histories) == 1 and histories[0] is not shared
    assert histories[0].policies == shared.policies
    assert not any(isinstance(m, History) for m in judge_agent.config.middleware)
    assert repr(judge_context()).startswith("History(")
