"""Group chat: selectors, termination conditions, the shared transcript, budgets, resume."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel import Agent, Budget, BudgetExceeded, ConfigError, MemoryStore, tool
from keel.core import Message, ModelResponse, ToolCallPart
from keel.patterns import (
    Agreement,
    ChatResult,
    GroupChat,
    Judge,
    JudgeVerdict,
    Keyword,
    ModelSelector,
    NextSpeaker,
    RoundRobin,
    RuleSelector,
)
from keel.runtime import replay_run
from keel.testing import FunctionModel, ScriptedModel, call


def peer(name: str, *lines: str, **kw: Any) -> Agent[str]:
    return Agent(name, model=ScriptedModel(list(lines)), **kw)


def judge(*verdicts: bool) -> Agent[JudgeVerdict]:
    return Agent("referee", output_type=JudgeVerdict, model=ScriptedModel(
        [call("final_result", {"done": v, "reason": f"done={v}"}) for v in verdicts]))


def answers(*outputs: dict[str, Any]) -> FunctionModel:
    """A model whose n-th request (over all runs) answers ``final_result(outputs[n])``."""
    queue = list(outputs)

    def answer(messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        args = queue.pop(0)
        return ModelResponse(parts=(ToolCallPart(call_id="c", tool_name="final_result",
                                                 arguments=json.dumps(args)),),
                             finish_reason="tool_calls")

    return FunctionModel(answer)


async def journal(store: MemoryStore, run_id: str) -> dict[str, Any]:
    return {e.key: e.data for e in await store.read_journal(run_id) if e.phase == "result"}


async def test_round_robin_takes_turns_in_order_until_max_turns() -> None:
    chat = GroupChat("chat", [peer("ana", "a1", "a2"), peer("bo", "b1", "b2"),
                              peer("cy", "c1")], max_turns=5)
    store = MemoryStore()
    result = await chat.run("plan a trip", store=store)
    out = result.output
    assert isinstance(out, ChatResult)
    assert out.speakers == ["ana", "bo", "cy", "ana", "bo"]
    assert [t.text for t in out.transcript] == ["a1", "b1", "c1", "a2", "b2"]
    assert out.stopped_by == "max_turns" and out.final == "b2"
    steps = await journal(store, result.run_id)
    assert steps["chat/turn:0/select"] == {"speaker": "ana", "by": "round_robin", "reason": ""}
    assert steps["chat/turn:4/stop"]["by"] == "max_turns"
    assert steps["chat/turn:3/stop"] == {"stop": False, "by": None, "reason": ""}
    assert "chat/turn:2/cy/turn:0/model" in steps
    record = await store.get_run(result.run_id)
    assert record.metadata == {"pattern": "group_chat"}
    assert record.output["stopped_by"] == "max_turns"


async def test_peers_see_the_shared_transcript_labelled_by_speaker() -> None:
    ana_model = ScriptedModel(["hello", "bye"])
    bo_model = ScriptedModel(["hi ana"])
    chat = GroupChat("chat", [Agent("ana", model=ana_model), Agent("bo", model=bo_model)],
                     max_turns=3)
    await chat.run("greet", store=MemoryStore())
    [bo_request] = bo_model.requests
    texts = [(m.role, m.text) for m in bo_request if m.role != "system"]
    assert texts[0] == ("user", "Group chat between ana, bo. Task: greet")
    assert texts[1] == ("user", "[ana]: hello")
    assert texts[2][0] == "user" and "You are bo" in texts[2][1]
    second = ana_model.requests[1]
    roles = [(m.role, m.text) for m in second if m.role != "system"]
    assert ("assistant", "hello") in roles and ("user", "[bo]: hi ana") in roles


async def test_rule_selector_picks_the_speaker_and_none_means_round_robin() -> None:
    def rule(transcript: Any) -> str | None:
        return "cy" if len(transcript) == 1 else None

    chat = GroupChat("chat", [peer("ana", "a1", "a2"), peer("bo", "b1"), peer("cy", "c1")],
                     selector=RuleSelector(rule), max_turns=3)
    store = MemoryStore()
    result = await chat.run("x", store=store)
    assert result.output.speakers == ["ana", "cy", "ana"]
    steps = await journal(store, result.run_id)
    assert steps["chat/turn:1/select"]["by"] == "rule"
    assert steps["chat/turn:2/select"]["by"] == "round_robin"


async def test_model_selector_chooses_and_an_unknown_name_falls_back_to_round_robin() -> None:
    selector = Agent("mod", output_type=NextSpeaker, model=answers(
        {"speaker": "bo", "reason": "bo knows"}, {"speaker": "zed"}))
    chat = GroupChat("chat", [peer("ana", "a1"), peer("bo", "b1"), peer("cy", "c1")],
                     selector=ModelSelector(selector), max_turns=2)
    store = MemoryStore()
    result = await chat.run("x", store=store)
    assert result.output.speakers == ["bo", "cy"]  # after bo, round robin gives cy
    steps = await journal(store, result.run_id)
    assert steps["chat/turn:0/select"] == {"speaker": "bo", "by": "model", "reason": "bo knows"}
    fallback = steps["chat/turn:1/select"]
    assert fallback["by"] == "round_robin_fallback" and "'zed'" in fallback["reason"]
    assert "chat/turn:1/selector/turn:0/model" in steps
    assert selector.model.requests[1][-1].text.endswith("one of: ana, bo, cy.")


async def test_keyword_stops_the_chat() -> None:
    chat = GroupChat("chat", [peer("writer", "draft 1", "draft 2"),
                              peer("editor", "fix the intro", "APPROVED")],
                     until=[Keyword("APPROVED")])
    store = MemoryStore()
    result = await chat.run("write", store=store)
    assert result.output.stopped_by == "keyword" and result.output.final == "APPROVED"
    assert len(result.output.transcript) == 4
    steps = await journal(store, result.run_id)
    assert steps["chat/turn:3/stop"] == {"stop": True, "by": "keyword",
                                         "reason": "editor said 'APPROVED'"}


async def test_agreement_needs_the_last_n_distinct_speakers_to_agree() -> None:
    chat = GroupChat("chat", [peer("ana", "I AGREE", "yes AGREE"),
                              peer("bo", "no", "AGREE too"), peer("cy", "AGREE")],
                     until=[Agreement(2)])
    result = await chat.run("x", store=MemoryStore())
    # ana AGREE, bo no, cy AGREE (cy+bo: no), ana AGREE (ana+cy: yes)
    assert result.output.speakers == ["ana", "bo", "cy", "ana"]
    assert result.output.stopped_by == "agreement"
    everyone = GroupChat("all", [peer("ana", "ok!", "ok!"), peer("bo", "ok!")],
                         until=[Agreement(agrees=lambda t: t.endswith("!"))])
    out = (await everyone.run("x", store=MemoryStore())).output
    assert out.speakers == ["ana", "bo"] and out.stopped_by == "agreement"


async def test_a_judge_ends_the_chat_with_its_reason() -> None:
    referee = Agent("referee", output_type=JudgeVerdict, model=answers(
        {"done": False, "reason": "not yet"}, {"done": True, "reason": "they converged"}))
    chat = GroupChat("chat", [peer("ana", "a1", "a2"), peer("bo", "b1")],
                     until=[Judge(referee)])
    store = MemoryStore()
    result = await chat.run("x", store=store)
    assert result.output.stopped_by == "judge" and result.output.reason == "they converged"
    assert result.output.speakers == ["ana", "bo"]
    steps = await journal(store, result.run_id)
    assert "chat/turn:0/judge/turn:0/model" in steps
    assert steps["chat/turn:0/stop"]["stop"] is False
    assert steps["chat/turn:1/stop"] == {"stop": True, "by": "judge",
                                         "reason": "they converged"}


async def test_each_peer_turn_runs_within_its_budget_share() -> None:
    looping = Agent("loopy", model=ScriptedModel([call("ping")] * 20 + ["done"]),
                    tools=[tool(lambda: "pong", name="ping")])
    chat = GroupChat("chat", [looping, peer("bo", "b1")], peer_budget=Budget(max_steps=3))
    store = MemoryStore()
    with pytest.raises(BudgetExceeded) as info:
        await chat.run("x", store=store)
    assert info.value.allowed == 3
    models = [e for e in await store.read_journal(info.value.run_id or "") if e.kind == "model"]
    assert len(models) == 2  # turn, tool, turn = 3 steps; the next turn would be the 4th


async def test_resume_mid_chat_does_not_rerun_finished_turns() -> None:
    ana_model = ScriptedModel(["a1", "a2"])
    bo_calls: list[int] = []

    class Flaky(ScriptedModel):
        async def request(self, messages: Any, tools: Any = (), settings: Any = None) -> Any:
            bo_calls.append(1)
            if len(bo_calls) == 1:
                raise RuntimeError("bo crashed")
            return await super().request(messages, tools, settings)

    chat = GroupChat("chat", [Agent("ana", model=ana_model),
                              Agent("bo", model=Flaky(["b1"]))], max_turns=3)
    store = MemoryStore()
    with pytest.raises(Exception, match="bo crashed"):
        await chat.run("x", store=store, run_id="gc1")
    assert len(ana_model.requests) == 1
    result = await chat.resume("gc1", store=store)
    assert result.output.speakers == ["ana", "bo", "ana"]
    assert len(ana_model.requests) == 2  # turn 0 came from the journal
    assert len(bo_calls) == 2


async def test_replay_is_identical_and_calls_no_model() -> None:
    ana_model = ScriptedModel(["a1", "APPROVED"])
    chat = GroupChat("chat", [Agent("ana", model=ana_model), peer("bo", "b1")],
                     until=[Keyword("APPROVED"), Judge(judge(False, False))])
    store = MemoryStore()
    result = await chat.run("x", store=store)
    assert result.output.stopped_by == "keyword"
    before = len(ana_model.requests)
    report = await replay_run(chat, result.run_id, store=store)
    assert report.identical, report
    assert len(ana_model.requests) == before


def test_bad_input_names_the_part() -> None:
    a, b = peer("a", "x"), peer("b", "y")
    with pytest.raises(ConfigError, match="peers"):
        GroupChat("c", [a])
    with pytest.raises(ConfigError, match="peers"):
        GroupChat("c", [a, peer("a", "z")])
    with pytest.raises(ConfigError, match="peers"):
        GroupChat("c", [a, "b"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="reserved"):
        GroupChat("c", [a, peer("selector", "z")])
    with pytest.raises(ConfigError, match="max_turns"):
        GroupChat("c", [a, b], max_turns=0)
    with pytest.raises(ConfigError, match="selector"):
        GroupChat("c", [a, b], selector="round robin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="termination"):
        GroupChat("c", [a, b], until=["APPROVED"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="termination"):
        GroupChat("c", [a, b], until=[Agreement(3)])
    with pytest.raises(ConfigError, match="termination"):
        Agreement(1)
    with pytest.raises(ConfigError, match="termination"):
        Keyword("")
    with pytest.raises(ConfigError, match="termination"):
        Judge(a)  # no structured verdict
    with pytest.raises(ConfigError, match="selector"):
        ModelSelector(a)
    with pytest.raises(ConfigError, match="budget share"):
        GroupChat("c", [a, b], peer_budget=2.0)
    assert isinstance(GroupChat("c", [a, b]).selector, RoundRobin)
    assert len(GroupChat("c", [a, b], until=[Judge(judge(True))]).agents()) == 3
