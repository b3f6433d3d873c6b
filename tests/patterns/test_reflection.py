"""Reflection: generate, critique, revise; early stop, no-improvement stop, best version."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from keel import Agent, ConfigError, MemoryStore
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec, Usage
from keel.patterns import JsonSchema, Judgement, Predicate, Reflection, Rubric, Tests
from keel.runtime import replay_run
from keel.testing import FunctionModel, ScriptedModel, call


def writer(*drafts: Any) -> tuple[Agent[Any], ScriptedModel]:
    model = ScriptedModel(list(drafts))
    return Agent("writer", model=model), model


def has(word: str) -> Predicate:
    return Predicate(f"mentions {word}", lambda text: word in text, f"mention {word}")


async def test_stops_as_soon_as_every_criterion_passes() -> None:
    gen, model = writer("a draft", "a draft about cats", "never asked for")
    flow = Reflection("r", generator=gen, criteria=[has("cats")])
    store = MemoryStore()
    result = await flow.run("write about cats", store=store)
    out = result.output
    assert out.best == "a draft about cats" and out.passed and out.stopped == "passed"
    assert out.rounds == 2 and out.score == 1.0 and out.best_round == 1
    assert len(model.requests) == 2
    critiques = [e for e in await store.read_journal(result.run_id) if e.kind == "critique"]
    assert [e.key for e in critiques] == ["r/round:0/critique", "r/round:1/critique"]
    assert critiques[0].data["passed"] is False and critiques[0].data["score"] == 0.0
    assert (await store.get_run(result.run_id)).metadata == {"pattern": "reflection"}


async def test_stops_when_a_round_brings_no_improvement_and_returns_the_best() -> None:
    gen, model = writer("cats and dogs", "only cats", "cats dogs birds")
    flow = Reflection("r", generator=gen, max_rounds=3,
                      criteria=[has("cats"), has("dogs"), has("birds")])
    out = (await flow.run("animals", store=MemoryStore())).output
    assert out.stopped == "no_improvement" and out.rounds == 2 and len(model.requests) == 2
    assert out.best == "cats and dogs" and out.best_round == 0  # the best, not the last
    assert out.score == pytest.approx(2 / 3) and not out.passed
    assert [r.candidate for r in out.history] == ["cats and dogs", "only cats"]


async def test_max_rounds_caps_the_loop() -> None:
    gen, model = writer("none", "cats", "cats dogs", "cats dogs birds")
    flow = Reflection("r", generator=gen, max_rounds=3,
                      criteria=[has("cats"), has("dogs"), has("birds")])
    out = (await flow.run("animals", store=MemoryStore())).output
    assert out.stopped == "max_rounds" and out.rounds == 3 and len(model.requests) == 3
    assert out.best == "cats dogs" and [round(r.score, 2) for r in out.history] == [
        0.0, 0.33, 0.67]


async def test_the_critique_history_and_the_revision_prompt_carry_the_failures() -> None:
    gen, model = writer("dogs", "cats")
    flow = Reflection("r", generator=gen, criteria=[has("cats")], max_rounds=2)
    out = (await flow.run("write", store=MemoryStore())).output
    first = out.history[0]
    assert first.candidate == "dogs" and not first.passed
    [check] = first.checks
    assert check.name == "mentions cats" and check.message == "mention cats"
    revision = model.requests[1][-1].text
    assert "mentions cats: mention cats" in revision and "score 0.00" in revision
    assert [m.text for m in model.requests[1][-3:-1]] == ["write", "dogs"]  # earlier round


async def test_json_schema_criterion_reports_every_violation() -> None:
    schema = {"type": "object", "required": ["title", "tags"],
              "properties": {"title": {"type": "string"}, "tags": {"type": "array"}}}
    gen, _ = writer('{"title": 3}', "not json", '{"title": "t", "tags": []}')
    flow = Reflection("r", generator=gen, criteria=[JsonSchema(schema)], max_rounds=3)
    out = (await flow.run("json please", store=MemoryStore())).output
    assert out.stopped == "no_improvement"  # round 2 (not JSON) is no better than round 1
    message = out.history[0].checks[0].message
    assert "'tags' is a required property" in message and "title: 3 is not of type" in message
    assert "not valid JSON" in out.history[1].checks[0].message

    class Post(BaseModel):
        title: str
        words: int

    typed = Agent("typed", model=ScriptedModel([call("final_result", {"title": "", "words": 3}),
                                                call("final_result", {"title": "Hi",
                                                                      "words": 3})]),
                  output_type=Post)
    min_title = {"type": "object", "properties": {"title": {"minLength": 1}}}
    result = await Reflection("t", generator=typed, criteria=[JsonSchema(min_title)]).run(
        "post", store=MemoryStore())
    assert result.output.best == Post(title="Hi", words=3) and result.output.rounds == 2


async def test_tests_criterion_and_a_raising_predicate_fail_with_the_error_text() -> None:
    def test_short(text: str) -> None:
        assert len(text) < 10, f"too long: {len(text)} chars"

    def test_lower(text: str) -> bool:
        return text == text.lower()

    def explode(text: str) -> bool:
        return 1 / 0 > 0

    gen, _ = writer("A Very Long Answer", "short")
    flow = Reflection("r", generator=gen, max_rounds=2,
                      criteria=[Tests(test_short, test_lower), Predicate("boom", explode)])
    out = (await flow.run("go", store=MemoryStore())).output
    checks = {c.name: c for c in out.history[0].checks}
    assert checks["tests.test_short"].message.startswith("AssertionError: too long: 18 chars")
    assert not checks["tests.test_lower"].passed
    assert checks["boom"].message == "ZeroDivisionError: division by zero"
    assert out.best == "short" and out.score == pytest.approx(2 / 3)  # boom always fails


def judge_model(scores: dict[str, tuple[bool, float]], crash_on: set[str] | None = None,
                seen: list[str] | None = None) -> FunctionModel:
    """A judge that scores by the candidate: scores[candidate] = (passed, score)."""

    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> ModelResponse:
        prompt = messages[-1].text
        candidate = prompt.split("Answer:\n", 1)[1].split("\n\nRubric:", 1)[0]
        if seen is not None:
            seen.append(candidate)
        if crash_on and candidate in crash_on:
            crash_on.discard(candidate)
            raise RuntimeError("judge crashed")
        passed, score = scores[candidate]
        verdict = {"scores": [{"item": "is polite", "passed": passed, "score": score,
                               "feedback": "" if passed else "say please"}],
                   "feedback": "ok" if passed else "be nicer"}
        return ModelResponse(parts=(call("final_result", verdict, call_id="j"),),
                             usage=Usage(requests=1), finish_reason="tool_calls")

    return FunctionModel(answer)


async def test_a_model_judge_scores_the_rubric() -> None:
    gen, model = writer("give it", "please give it")
    critic = Agent("judge", model=judge_model({"give it": (False, 0.2),
                                               "please give it": (True, 0.9)}),
                   output_type=Judgement)
    flow = Reflection("r", generator=gen, critic=critic, criteria=[Rubric("is polite")])
    store = MemoryStore()
    result = await flow.run("ask for it", store=store)
    out = result.output
    assert out.passed and out.best == "please give it" and out.score == pytest.approx(0.9)
    first = out.history[0]
    assert first.feedback == "be nicer" and first.checks[0].name == "rubric.is polite"
    assert first.checks[0].score == pytest.approx(0.2) and first.checks[0].message == "say please"
    assert "Reviewer's feedback: be nicer" in model.requests[1][-1].text
    keys = {e.key for e in await store.read_journal(result.run_id)}
    assert "r/round:0/judge/turn:0/model" in keys and "r/round:1/judge/turn:0/model" in keys


async def test_resume_after_a_crash_mid_round_does_not_regenerate_finished_rounds() -> None:
    gen, model = writer("v1", "v2", "v3")
    seen: list[str] = []
    critic = Agent("judge", model=judge_model({"v1": (False, 0.1), "v2": (True, 1.0)},
                                              crash_on={"v2"}, seen=seen),
                   output_type=Judgement)
    flow = Reflection("r", generator=gen, critic=critic, criteria=[Rubric("is polite")])
    store = MemoryStore()
    with pytest.raises(Exception, match="judge crashed"):
        await flow.run("ask", store=store, run_id="run1")
    assert len(model.requests) == 2 and seen == ["v1", "v2"]
    result = await flow.resume("run1", store=store)
    assert result.output.best == "v2" and result.output.rounds == 2
    assert len(model.requests) == 2  # neither round's draft was generated again
    assert seen == ["v1", "v2", "v2"]  # only the unfinished judgement ran again
    report = await replay_run(flow, "run1", store=store)
    assert report.identical, report
    assert len(model.requests) == 2 and len(seen) == 3


async def test_replay_is_identical() -> None:
    gen, model = writer("a", "ab", "abc")
    flow = Reflection("r", generator=gen, criteria=[Predicate("two", lambda t: len(t) > 1),
                                                  Predicate("three", lambda t: len(t) > 2)])
    store = MemoryStore()
    result = await flow.run("go", store=store)
    report = await replay_run(flow, result.run_id, store=store)
    assert report.identical, report
    assert len(model.requests) == 3
    assert json.loads(json.dumps(report.replayed_output))["best"] == "abc"


def test_bad_construction_is_rejected_naming_the_field() -> None:
    gen, _ = writer("x")
    judge = Agent("judge", model=ScriptedModel(["x"]), output_type=Judgement)
    with pytest.raises(ConfigError, match="max_rounds"):
        Reflection("r", generator=gen, criteria=[has("x")], max_rounds=0)
    with pytest.raises(ConfigError, match="at least one criterion"):
        Reflection("r", generator=gen)
    with pytest.raises(ConfigError, match="not a criterion"):
        Reflection("r", generator=gen, criteria=[lambda t: True])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="needs a critic"):
        Reflection("r", generator=gen, criteria=[Rubric("clear")])
    with pytest.raises(ConfigError, match="Judgement"):
        Reflection("r", generator=gen, critic=Agent("j", model=ScriptedModel(["x"])))
    with pytest.raises(ConfigError, match="generator"):
        Reflection("r", generator="gpt", criteria=[has("x")])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="valid JSON Schema"):
        JsonSchema({"type": "nope"})
    with pytest.raises(ConfigError, match="Rubric"):
        Rubric()
    with pytest.raises(ConfigError, match="Tests"):
        Tests()
    Reflection("r", generator=gen, critic=judge)  # a critic alone is enough
