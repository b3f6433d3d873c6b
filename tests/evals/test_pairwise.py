"""Pairwise judging with a scripted judge, both presentation orders, position bias."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from keel import Agent, MemoryStore
from keel.core import Message
from keel.evals import Case, EvalError, pairwise
from keel.store import RunFilter
from keel.testing import FunctionModel


def answerer(name: str, good: bool) -> Agent[str]:
    def fn(messages: list[Message], tools: Any, settings: Any) -> str:
        question = messages[-1].text
        return f"Good: a careful reply about {question}." if good else "Not sure."

    return Agent(name, model=FunctionModel(fn))


def _responses(prompt: str) -> tuple[str, str]:
    first = re.search(r"<response_1>\n(.*?)\n</response_1>", prompt, re.S)
    second = re.search(r"<response_2>\n(.*?)\n</response_2>", prompt, re.S)
    assert first and second
    return first.group(1), second.group(1)


def fair_judge(messages: list[Message], tools: Any, settings: Any) -> str:
    one, two = _responses(messages[-1].text)
    if one.startswith("Good") == two.startswith("Good"):
        return "tie"
    return "1" if one.startswith("Good") else "2"


def first_biased_judge(messages: list[Message], tools: Any, settings: Any) -> str:
    return "Response 1 is better."  # always the one shown first


CASES = [Case(id=f"q{i}", input=f"question {i}") for i in range(12)]


async def test_the_better_side_wins_and_runs_are_journaled() -> None:
    store = MemoryStore()
    judge = Agent("judge", model=FunctionModel(fair_judge))
    rep = await pairwise(answerer("old", False), answerer("new", True), CASES, judge=judge,
                         store=store, pairwise_id="pw1")
    assert (rep.judged, rep.b_wins, rep.a_wins, rep.ties, rep.errors) == (12, 12, 0, 0, 0)
    assert rep.win_rate_b == 1.0 and rep.significant and rep.preferred == "b"
    runs = await store.list_runs(RunFilter(limit=1000))
    assert len(runs) == 12 * 4  # a, b and the judge twice per case
    sides = sorted(r.metadata.get("side") or r.metadata["judge"] for r in runs
                   if r.metadata["pairwise"] == "pw1" and r.metadata["case"] == "q3")
    assert sides == ["a", "ab", "b", "ba"]
    case = rep.cases[3]
    assert case.verdict_ab == case.verdict_ba == "b" and set(case.run_ids) == {
        "a", "b", "judge_ab", "judge_ba"}
    assert "new (B) preferred" in rep.to_markdown()


async def test_position_bias_cancels_to_ties() -> None:
    judge = Agent("judge", model=FunctionModel(first_biased_judge))
    rep = await pairwise(answerer("old", False), answerer("new", True), CASES, judge=judge,
                         store=MemoryStore())
    assert rep.ties == 12 and rep.disagreements == 12 and rep.b_wins == 0
    assert rep.win_rate_b == 0.5 and not rep.significant and rep.preferred is None
    assert all(c.verdict_ab == "a" and c.verdict_ba == "b" for c in rep.cases)


async def test_equal_subjects_are_not_significant() -> None:
    judge = Agent("judge", model=FunctionModel(fair_judge))
    rep = await pairwise(answerer("x", True), answerer("y", True), CASES, judge=judge,
                         store=MemoryStore())
    assert rep.ties == 12 and rep.disagreements == 0 and not rep.significant


async def test_unreadable_judge_answers_are_reported_and_the_rest_goes_on() -> None:
    def moody(messages: list[Message], tools: Any, settings: Any) -> str:
        if "question 5" in messages[-1].text:
            return "I cannot decide, both are lovely."
        return fair_judge(messages, tools, settings)

    judge = Agent("judge", model=FunctionModel(moody))
    rep = await pairwise(answerer("old", False), answerer("new", True), CASES, judge=judge,
                         store=MemoryStore())
    assert rep.judged == 11 and rep.errors == 1 and rep.b_wins == 11
    [bad] = [c for c in rep.cases if c.error]
    assert bad.case_id == "q5" and "not 1, 2 or tie" in bad.error
    assert "could not be judged" in rep.to_markdown()


async def test_a_failing_subject_is_reported_per_case() -> None:
    def flaky(messages: list[Message], tools: Any, settings: Any) -> str:
        if "question 2" in messages[-1].text:
            raise RuntimeError("model down")
        return "Good: fine."

    judge = Agent("judge", model=FunctionModel(fair_judge))
    flaky_agent = Agent("flaky", model=FunctionModel(flaky))
    rep = await pairwise(answerer("old", False), flaky_agent, CASES, judge=judge,
                         store=MemoryStore())
    assert rep.errors == 1 and rep.judged == 11
    assert "B failed" in (rep.cases[2].error or "")


async def test_json_verdicts_and_conversation_cases() -> None:
    def json_judge(messages: list[Message], tools: Any, settings: Any) -> str:
        verdict = fair_judge(messages, tools, settings)
        return json.dumps({"winner": verdict})

    convo = Case.from_dict({"id": "c", "input": [{"role": "user", "content": "hi"},
                                                  {"role": "user", "content": "question 9"}]})
    rep = await pairwise(answerer("old", False), answerer("new", True), [convo, CASES[0]],
                         judge=Agent("judge", model=FunctionModel(json_judge)),
                         store=MemoryStore())
    assert rep.b_wins == 2 and rep.cases[0].output_b == "Good: a careful reply about question 9."


async def test_bad_input_names_the_fix() -> None:
    judge = Agent("judge", model=FunctionModel(fair_judge))
    a, b = answerer("a", True), answerer("b", True)
    with pytest.raises(EvalError, match="at least one case"):
        await pairwise(a, b, [], judge=judge)
    with pytest.raises(EvalError, match="appears twice"):
        await pairwise(a, b, [CASES[0], CASES[0]], judge=judge)
    with pytest.raises(EvalError, match="keel Agent"):
        await pairwise(a, b, CASES, judge="gpt")  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="agents or flows"):
        await pairwise(a, object(), CASES, judge=judge)  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="concurrency"):
        await pairwise(a, b, CASES, judge=judge, concurrency=0)
    with pytest.raises(EvalError, match="rubric"):
        await pairwise(a, b, CASES, judge=judge, rubric="  ")
    with pytest.raises(EvalError, match="list of Case"):
        await pairwise(a, b, "q1", judge=judge)  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="printable"):
        await pairwise(a, b, CASES, judge=judge, pairwise_id="x\x00y")
    with pytest.raises(EvalError, match="from 100"):
        await pairwise(a, b, CASES, judge=judge, resamples=3)
    with pytest.raises(EvalError, match="<cases>:1"):
        await pairwise(a, b, [{"input": "no id"}], judge=judge)
