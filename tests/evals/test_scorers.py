"""Scorers on hand-made observations: each built-in, threshold checks, user functions, the
judge's score parsing."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest

from keel.evals import (
    Case,
    EvalError,
    Observed,
    Score,
    behaviour,
    contains,
    cost,
    exact_match,
    fuzzy_match,
    json_schema,
    latency,
    parse_score,
    regex,
    scorer,
    steps,
    tool_trajectory,
    typed_output,
)


def case(**raw: Any) -> Case:
    return Case.from_dict({"id": "c", "input": "q", **raw})


def run(s: Any, c: Case, o: Observed) -> Score:
    out: Score = asyncio.run(s.score(c, o))
    return out


def test_exact_match_normalises_and_compares_json() -> None:
    s = exact_match()
    assert run(s, case(expected="Paris"), Observed(output="  paris \n")).value == 1.0
    miss = run(s, case(expected="Paris"), Observed(output="Lyon"))
    assert (miss.value, miss.passed, miss.detail) == (0.0, False, "got 'Lyon'")
    strict = exact_match(case_sensitive=True)
    assert run(strict, case(expected="Paris"), Observed(output="paris")).value == 0.0
    punct = exact_match(strip_punctuation=True)
    assert run(punct, case(expected="Paris"), Observed(output="Paris!")).value == 1.0
    data = case(expected={"a": 1, "b": [2]})
    assert run(s, data, Observed(output='{"b": [2], "a": 1}')).value == 1.0
    assert run(s, data, Observed(output={"a": 1, "b": [3]})).value == 0.0
    assert not s.applies(case())


def test_fuzzy_match_is_a_ratio() -> None:
    s = fuzzy_match(threshold=0.9)
    near = run(s, case(expected="the order has shipped"),
               Observed(output="The order has shipped."))
    assert 0.9 < near.value < 1.0 and near.passed  # type: ignore[operator]
    far = run(s, case(expected="the order has shipped"), Observed(output="no idea"))
    assert far.value < 0.5 and not far.passed  # type: ignore[operator]


def test_contains_and_regex() -> None:
    some = run(contains("refund", "ticket"), case(), Observed(output="Refund made."))
    assert (some.value, some.passed, some.detail) == (0.5, False, "missing ['ticket']")
    assert run(contains(), case(expected="42"), Observed(output="it is 42.")).passed
    assert run(regex(r"\bORD-\d+"), case(), Observed(output="see ORD-12")).value == 1.0
    assert run(regex(r"\d+", fullmatch=True), case(), Observed(output="12a")).value == 0.0
    with pytest.raises(EvalError, match="'regex': '\\(' is not a valid regular expression"):
        regex("(")


def test_json_schema_from_the_case_or_given() -> None:
    s = json_schema()
    c = case(expect={"output_schema": {"type": "object", "required": ["total"],
                                       "properties": {"total": {"type": "number"}}}})
    assert s.applies(c) and not s.applies(case())
    assert run(s, c, Observed(output='{"total": 3}')).value == 1.0
    bad = run(s, c, Observed(output='{"total": "x"}'))
    assert bad.value == 0.0 and "'x' is not of type 'number'" in (bad.detail or "")
    assert run(s, c, Observed(output="not json")).value == 0.0
    with pytest.raises(EvalError, match="not a valid JSON Schema"):
        json_schema({"type": 12})


def test_typed_output() -> None:
    class Refund(pydantic.BaseModel):
        order: str
        amount: float

    s = typed_output(Refund)
    assert run(s, case(), Observed(output={"order": "1", "amount": 2})).value == 1.0
    assert run(s, case(), Observed(output=Refund(order="1", amount=2))).value == 1.0
    bad = run(s, case(), Observed(output='{"order": "1"}'))
    assert bad.value == 0.0 and bad.detail == "amount: Field required"


CALLS = ({"name": "lookup", "args": {"order": "7", "amount": 120, "tags": ["vip"]}},
         {"name": "refund", "args": {"order": "7", "amount": 50}},
         {"name": "notify", "args": {}})


@pytest.mark.parametrize(("rule", "ok"), [
    ("7", True), ({"$eq": "8"}, False), ({"$ne": "8"}, True), ({"$in": ["6", "7"]}, True),
    ({"$regex": "^\\d$"}, True), ({"$contains": "7"}, True), ({"$exists": True}, True),
    ({"$gt": "5"}, True), ({"$lt": 3}, False),  # a str never compares with an int
])
def test_argument_operators(rule: object, ok: bool) -> None:
    c = case(expect={"tools": [{"name": "lookup", "args": {"order": rule}}]})
    assert run(tool_trajectory(), c, Observed(tool_calls=CALLS)).passed is ok


def test_trajectory_numeric_list_and_missing_arguments() -> None:
    def score(args: dict[str, Any]) -> float | None:
        c = case(expect={"tools": [{"name": "lookup", "args": args}]})
        return run(tool_trajectory(), c, Observed(tool_calls=CALLS)).value

    assert score({"amount": {"$gte": 100}, "tags": {"$contains": "vip"}}) == 1.0
    assert score({"amount": {"$lte": 100}}) == 0.0
    assert score({"missing": {"$exists": False}}) == 1.0
    assert score({"missing": {"$eq": None}}) == 0.0  # absent is not null


def test_trajectory_order_and_forbidden_tools() -> None:
    want = [{"name": "refund"}, {"name": "lookup"}]
    unordered = case(expect={"tools": want})
    ordered = case(expect={"tools": want, "ordered": True})
    assert run(tool_trajectory(), unordered, Observed(tool_calls=CALLS)).value == 1.0
    late = run(tool_trajectory(), ordered, Observed(tool_calls=CALLS))
    assert late.value == 0.5 and "missing lookup" in (late.detail or "")
    forbid = case(expect={"tools": [{"name": "lookup"}], "forbid_tools": ["refund", "drop"]})
    got = run(tool_trajectory(), forbid, Observed(tool_calls=CALLS))
    assert round(got.value or 0, 4) == round(2 / 3, 4)
    assert "called forbidden refund" in (got.detail or "")
    twice = case(expect={"tools": [{"name": "notify"}, {"name": "notify"}]})
    assert run(tool_trajectory(), twice, Observed(tool_calls=CALLS)).value == 0.5


def test_behaviour_flags_and_refusals() -> None:
    b = behaviour()
    c = case(expect={"approval": True, "escalate": False})
    assert run(b, c, Observed(approval_requested=True)).value == 1.0
    half = run(b, c, Observed(approval_requested=True, escalated=True))
    assert half.value == 0.5 and half.detail == "expected escalate=False, got True"
    refuse = case(expect={"refuse": True})
    assert run(b, refuse, Observed(output="Sorry, I can't help with that.")).passed
    assert run(b, refuse, Observed(status="failed", guard_tripped=True)).passed
    assert not run(b, refuse, Observed(output="Sure, here it is.")).passed
    own = behaviour(refusal_patterns=[r"^NOPE"])
    assert run(own, refuse, Observed(output="NOPE.")).passed
    assert not own.applies(case())
    with pytest.raises(EvalError, match="refusal pattern is not a valid"):
        behaviour(refusal_patterns=["("])


def test_measures_are_lower_is_better() -> None:
    o = Observed(cost_usd=0.02, steps=4, latency_s=1.5)
    assert run(cost(0.05), case(), o).passed and not run(cost(0.01), case(), o).passed
    assert run(steps(4), case(), o).passed and not run(steps(3), case(), o).passed
    assert run(latency(2), case(), o).value == 1.5
    assert steps(3).name == "step_count" and not cost(1).higher_is_better


@pytest.mark.parametrize(("make", "bad", "message"), [
    (lambda t: exact_match(threshold=t), 1.5, "'exact_match': threshold must be a number "
                                              "from 0 to 1"),
    (lambda t: fuzzy_match(threshold=t), -0.1, "from 0 to 1"),
    (lambda t: fuzzy_match(threshold=t), float("nan"), "from 0 to 1"),
    (lambda t: fuzzy_match(threshold=t), True, "from 0 to 1"),
    (lambda t: cost(t), -1, "'cost': threshold must be a number >= 0"),
    (lambda t: latency(t), "5", "'latency': threshold must be a number >= 0"),
    (lambda t: steps(t), float("inf"), "'step_count': threshold must be a number >= 0"),
])
def test_thresholds_out_of_range_name_the_scorer(make: Any, bad: object, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        make(bad)


def test_user_functions_sync_async_and_their_results() -> None:
    @scorer(threshold=0.8)
    def polite(c: Case, o: Observed) -> float:
        return 0.9 if "please" in o.output_text else 0.1

    async def short(c: Case, o: Observed) -> bool:
        return len(o.output_text) < 10

    def graded(c: Case, o: Observed) -> Score:
        return Score(name="ignored", value=0.3, passed=True, detail="custom")

    assert polite.name == "polite" and run(polite, case(), Observed(output="please")).passed
    assert run(scorer(short), case(), Observed(output="long enough text")).value == 0.0
    got = run(scorer(graded, name="grade"), case(), Observed())
    assert (got.name, got.value, got.passed, got.detail) == ("grade", 0.3, True, "custom")
    with pytest.raises(EvalError, match=r"'weird' returned str 'x'"):
        run(scorer(lambda c, o: "x", name="weird"), case(), Observed())
    with pytest.raises(EvalError, match="takes a function"):
        scorer(42)  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="scorer name"):
        scorer(short, name="bad name!")


@pytest.mark.parametrize(("text", "value"), [
    ('{"score": 0.8, "reason": "good"}', 0.8), ("Here: {\"score\": 1}", 1.0),
    ("Score: 7/10 mostly right", 0.7), ("score = 0.25", 0.25), ("85%", 0.85),
    ("0.5", 0.5), ("4 / 5", 0.8), ('{"score": "0.6"}', 0.6),
])
def test_judge_scores_parse(text: str, value: float) -> None:
    assert parse_score(text)[0] == pytest.approx(value)


@pytest.mark.parametrize("text", ["great answer!", "", '{"score": 7}', "score: 1.5",
                                  '{"score": true}', "3/0", '{"grade": 0.4}'])
def test_unparseable_judge_answers_are_errors(text: str) -> None:
    with pytest.raises(EvalError, match="the judge's answer has no score from 0 to 1"):
        parse_score(text)
