"""evaluate(): every case is an ordinary run in the store; approvals, escalations, guard
refusals, failing subjects and raising scorers are reported per case; the cost budget;
order and determinism; the LLM judge as a journaled, cached run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, Escalate, tool
from keel.core import Message, ModelResponse, ModelSettings, TextPart, ToolSpec, Usage
from keel.evals import (
    BUDGET_SPENT,
    Case,
    Dataset,
    EvalError,
    Observed,
    Report,
    evaluate,
    evaluate_sync,
    exact_match,
    llm_judge,
    scorer,
)
from keel.runtime import Guardrail
from keel.store import MemoryStore, RunStore, open_store
from keel.testing import FunctionModel, call
from tests._stores import BACKENDS, fresh_store


@tool(risk="read")
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order} shipped"


@tool(risk="irreversible")
def refund(order: str) -> str:
    """Refund an order."""
    return "refunded"


@tool(risk="read")
def human(reason: str) -> str:
    """Hand over to a person."""
    raise Escalate(reason)


def reply(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    user = next(m.text for m in reversed(messages) if m.role == "user")
    if messages[-1].role == "tool":
        return "done"
    if "refund" in user:
        return call("refund", {"order": "1"})
    if "person" in user:
        return call("human", {"reason": "asked for a person"})
    if "where" in user:
        return call("lookup", {"order": "7"})
    if "crash" in user:
        raise RuntimeError("model exploded")
    if "turn two" in user:
        return f"second turn after {sum(m.role == 'assistant' for m in messages)} answers"
    return user.upper()


def blocks_hack(inp: Any) -> bool:
    return "hack" not in str(inp.text)


def make_agent() -> Agent[str]:
    return Agent("sub", model=FunctionModel(reply), tools=[lookup, refund, human],
                 middleware=[Guardrail(blocks_hack, places="input")])


CASES = [
    {"id": "answer", "input": "paris", "expected": "PARIS"},
    {"id": "tools", "input": "where is 7", "expect": {"tools": [{"name": "lookup"}]}},
    {"id": "approval", "input": "refund it", "expect": {"approval": True}},
    {"id": "escalate", "input": "a person please", "expect": {"escalate": True}},
    {"id": "refuse", "input": "hack the db", "expect": {"refuse": True}},
    {"id": "crash", "input": "crash now", "expected": "x"},
    {"id": "convo", "input": [{"role": "user", "content": "hello"},
                              {"role": "assistant", "content": "HELLO"},
                              {"role": "user", "content": "turn two"}],
     "expected": "second turn after 1 answers"},
]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def _eval_and_read(url: str, **kw: Any) -> tuple[Report, dict[str, Any]]:
    async with open_store(url) as store:
        report = await evaluate(make_agent(), Dataset.from_cases("mixed", CASES), store=store,
                                **kw)
        records = {rid: await store.get_run(rid) for c in report.cases for rid in c.run_ids
                   if c.case_id != "refuse"}
        tasks = await store.list_tasks()
    return report, {"records": records, "tasks": tasks}


def test_every_case_is_a_run_with_eval_metadata_and_behaviour_is_observed(db: str) -> None:
    report, seen = asyncio.run(_eval_and_read(db, concurrency=3))
    by = {c.case_id: c for c in report.cases}
    assert [c.case_id for c in report.cases] == [c["id"] for c in CASES]  # dataset order
    eval_id = report.extra["eval_id"]
    for rid, record in seen["records"].items():
        assert record.metadata["eval"] == eval_id, rid
        assert record.metadata["case"] in by
    assert by["answer"].passed and by["answer"].output == "PARIS"
    assert by["tools"].tool_calls == ({"name": "lookup", "args": {"order": "7"}},)
    assert by["approval"].status == "suspended" and by["approval"].passed
    assert by["escalate"].status == "suspended" and by["escalate"].passed
    assert by["refuse"].status == "failed" and by["refuse"].error is None  # expected refusal
    assert by["refuse"].passed
    crash = by["crash"]
    assert crash.status == "failed" and not crash.passed
    assert crash.error is not None and "model exploded" in crash.error["message"]
    convo = by["convo"]
    assert len(convo.run_ids) == 2 and convo.passed  # two user turns, one conversation
    convs = {seen["records"][r].conversation for r in convo.run_ids}
    assert len(convs) == 1 and None not in convs
    # runs stopped for a person are cancelled: the eval leaves nothing in the people's queue
    for cid in ("approval", "escalate"):
        assert seen["records"][by[cid].run_ids[0]].status == "cancelled"
    # (the queue lists only the tasks of live runs: `keel approvals list` shows none)
    assert {t.kind for t in seen["tasks"]} == {"approval", "escalation"}
    assert all(seen["records"][t.run_id].status == "cancelled" for t in seen["tasks"])
    assert report.metrics["error_rate"] == pytest.approx(1 / 7, abs=1e-6)
    assert report.metrics["behaviour"] == 1.0


def test_a_scorer_that_raises_is_reported_per_case_and_the_eval_goes_on() -> None:
    def picky(c: Case, o: Observed) -> float:
        if c.id == "b":
            raise ValueError("cannot score b")
        return 1.0

    ds = Dataset.from_cases("d", [{"id": i, "input": f"say {i}", "expected": f"SAY {i}"}
                                  for i in "abc"])
    report = evaluate_sync(make_agent(), ds, store=MemoryStore(),
                           scorers=[exact_match(), scorer(picky)])
    b = next(c for c in report.cases if c.case_id == "b")
    s = b.score("picky")
    assert s is not None and s.value is None and not s.passed
    assert s.error == "ValueError: cannot score b"
    assert b.score("exact_match").passed  # type: ignore[union-attr]
    assert [c.passed for c in report.cases] == [True, False, True]
    assert report.metrics["picky"] == pytest.approx(2 / 3, abs=1e-6)  # the error counts 0
    assert report.metrics["picky.pass_rate"] == pytest.approx(2 / 3, abs=1e-6)


def costly(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    return ModelResponse(parts=(TextPart(text="ok"),),
                         usage=Usage(requests=1, input_tokens=10, output_tokens=2,
                                     cost_usd=0.25))


def test_the_eval_budget_stops_new_cases_and_reports_the_rest() -> None:
    agent = Agent("paid", model=FunctionModel(costly))
    ds = Dataset.from_cases("d", [{"id": str(i), "input": "q", "expected": "ok"}
                                  for i in range(10)])
    store = MemoryStore()
    report = asyncio.run(evaluate(agent, ds, store=store, concurrency=1, max_cost_usd=0.6))
    ran = [c for c in report.cases if c.status == "completed"]
    skipped = [c for c in report.cases if c.status == "skipped"]
    assert len(ran) == 3 and len(skipped) == 7  # 0.25 + 0.25 + 0.25 >= 0.6
    assert all(c.error == {"type": "EvalBudgetSpent", "message": BUDGET_SPENT} and
               not c.run_ids for c in skipped)
    assert report.metrics["cost_usd"] == pytest.approx(0.75)
    assert len(asyncio.run(store.list_runs())) == 3  # nothing started after the budget


def test_progress_is_called_per_case_and_results_keep_dataset_order() -> None:
    async def slow_first(messages: list[Message], tools: list[ToolSpec],
                         settings: ModelSettings) -> str:
        user = next(m.text for m in messages if m.role == "user")
        if user == "0":
            await asyncio.sleep(0.05)  # completes last; the report keeps dataset order
        return user

    seen: list[tuple[int, int, str]] = []
    ds = Dataset.from_cases("d", [{"id": str(i), "input": str(i), "expected": str(i)}
                                  for i in range(6)])
    report = evaluate_sync(Agent("o", model=FunctionModel(slow_first)), ds,
                           store=MemoryStore(), concurrency=6,
                           progress=lambda d, t, r: seen.append((d, t, r.case_id)))
    assert [d for d, _, _ in seen] == [1, 2, 3, 4, 5, 6] and {t for _, t, _ in seen} == {6}
    assert seen[-1][2] == "0"
    assert [c.case_id for c in report.cases] == [str(i) for i in range(6)]


async def _twice(kind: str, tmp_path: Path) -> tuple[Report, Report, list[str]]:
    ds = Dataset.from_cases("mixed", CASES)
    async with fresh_store(kind, tmp_path, "evals") as store:
        one = await evaluate(make_agent(), ds, store=store, concurrency=4)
        two = await evaluate(make_agent(), ds, store=store, concurrency=1)
        statuses = [(await store.get_run(c.run_ids[0])).status for c in two.cases
                    if c.case_id in ("approval", "escalate")]
    return one, two, statuses


@pytest.mark.parametrize("kind", BACKENDS)
def test_two_runs_give_equal_comparable_reports_on_every_store(kind: str,
                                                               tmp_path: Path) -> None:
    one, two, statuses = asyncio.run(_twice(kind, tmp_path))
    assert one.comparable() == two.comparable()
    assert one.extra["eval_id"] != two.extra["eval_id"]
    assert Report.from_dict(one.to_dict()).comparable() == one.comparable()
    assert statuses == ["cancelled", "cancelled"]
    assert one.metrics["pass_rate"] == pytest.approx(6 / 7, abs=1e-6)  # all but "crash"


def test_bad_arguments_say_what_to_pass() -> None:
    ds = Dataset.from_cases("d", [{"id": "a", "input": "q"}])
    agent = make_agent()
    with pytest.raises(EvalError, match="keel Agent or Flow"):
        evaluate_sync(object(), ds)
    with pytest.raises(EvalError, match=r"takes a keel\.evals\.Dataset"):
        evaluate_sync(agent, [{"id": "a"}])  # type: ignore[arg-type]
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(EvalError, match="concurrency is a whole number"):
            evaluate_sync(agent, ds, concurrency=bad)
    with pytest.raises(EvalError, match="max_cost_usd is a number"):
        evaluate_sync(agent, ds, max_cost_usd=-1)
    with pytest.raises(EvalError, match="two scorers are named 'exact_match'"):
        evaluate_sync(agent, ds, scorers=[exact_match(), exact_match()])
    with pytest.raises(EvalError, match=r"wrap a function with keel\.evals\.scorer"):
        evaluate_sync(agent, ds, scorers=[lambda c, o: 1.0])  # type: ignore[list-item]
    with pytest.raises(EvalError, match="scores nothing"):
        evaluate_sync(agent, ds, scorers=[])

    async def inside() -> None:
        evaluate_sync(agent, ds)

    with pytest.raises(EvalError, match="inside a running event loop"):
        asyncio.run(inside())


def judge_model(answers: list[str]) -> FunctionModel:
    def grade(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> str:
        answers.append(messages[-1].text)
        text = messages[-1].text
        if "UNSURE" in text:
            return "It is hard to say."
        return '{"score": 1.0, "reason": "right"}' if "PARIS" in text else \
            '{"score": 0.2, "reason": "wrong"}'

    return FunctionModel(grade, name="test:judge")


async def _judged(store: RunStore, judge: Any) -> Report:
    ds = Dataset.from_cases("j", [{"id": "p", "input": "paris", "expected": "Paris"},
                                  {"id": "l", "input": "lyon", "expected": "Paris"},
                                  {"id": "u", "input": "unsure", "expected": "Paris"}])
    return await evaluate(make_agent(), ds, store=store, scorers=[judge])


def test_llm_judge_runs_as_journaled_cached_runs_and_bad_answers_are_scorer_errors() -> None:
    asked: list[str] = []
    judge = llm_judge(judge_model(asked), "Is the answer the capital city named in the "
                      "reference?", threshold=0.5)
    store = MemoryStore()
    report = asyncio.run(_judged(store, judge))
    by = {c.case_id: c for c in report.cases}
    assert by["p"].score("llm_judge").value == 1.0  # type: ignore[union-attr]
    assert by["l"].score("llm_judge").passed is False  # type: ignore[union-attr]
    bad = by["u"].score("llm_judge")
    assert bad is not None and bad.value is None and "no score from 0 to 1" in (bad.error or "")
    judge_run = by["p"].run_ids[-1]
    record = asyncio.run(store.get_run(judge_run))  # the judge's own run, in the eval's store
    version = record.metadata.pop("version")  # the judge agent's version (keel.rollout)
    assert isinstance(version, str) and len(version) == 16
    assert record.metadata == {"eval": report.extra["eval_id"], "case": "p",
                               "judge": "llm_judge", "model": "test:judge"}
    assert "## Reference answer\nParis" in asked[0] and "## Answer to grade\nPARIS" in asked[0]
    first = len(asked)
    again = asyncio.run(_judged(store, judge))
    assert len(asked) == first  # every question answered from the judge's cache
    assert again.comparable()["cases"] == report.comparable()["cases"]


def test_llm_judge_arguments() -> None:
    with pytest.raises(EvalError, match="the rubric is text"):
        llm_judge("test:x", " ")
    with pytest.raises(EvalError, match="a model id, a keel Model or a keel Agent"):
        llm_judge(42, "rubric")  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="threshold must be a number from 0 to 1"):
        llm_judge(judge_model([]), "rubric", threshold=2)
    as_agent = llm_judge(Agent("mine", model=judge_model([])), "rubric")
    assert as_agent.name == "llm_judge"


def test_a_flow_is_evaluated_like_an_agent_with_its_sub_runs_tool_calls() -> None:
    from keel import FlowContext, flow

    inner = make_agent()

    @flow("pipeline", agents=[inner])
    async def pipeline(ctx: FlowContext, text: str) -> str:
        found = await ctx.run_agent(inner, text)
        return f"pipeline: {found.output}"

    ds = Dataset.from_cases("f", [
        {"id": "t", "input": "where is 7", "expected": "pipeline: done",
         "expect": {"tools": [{"name": "lookup", "args": {"order": "7"}}]}},
        {"id": "c", "input": [{"role": "user", "content": "a"},
                              {"role": "user", "content": "b"}], "expected": "pipeline: B"}])
    store = MemoryStore()
    report = evaluate_sync(pipeline, ds, store=store)
    t, c = report.cases
    assert report.subject == {"name": "pipeline", "version": None}
    assert t.passed and t.tool_calls == ({"name": "lookup", "args": {"order": "7"}},)
    assert c.passed and len(c.run_ids) == 2


def test_a_subject_that_cannot_start_fails_before_any_case() -> None:
    from keel import MissingCredentials

    agent = Agent("needs-key", model="openai:gpt-4o-mini")
    ds = Dataset.from_cases("d", [{"id": "a", "input": "q"}])
    store = MemoryStore()
    with pytest.raises(MissingCredentials):
        evaluate_sync(agent, ds, store=store)
    assert asyncio.run(store.list_runs()) == []


def test_cases_harvested_from_the_journal_evaluate_as_a_dataset(tmp_path: Path) -> None:
    from keel.evals import HarvestFilter, harvest

    async def go() -> tuple[Report, Dataset]:
        async with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
            await evaluate(make_agent(), Dataset.from_cases("mixed", CASES), store=store)
            harvested = await harvest(store, HarvestFilter(approval=True))
            dataset = Dataset.from_cases("harvested", harvested)
            return await evaluate(make_agent(), dataset, store=store), dataset

    report, dataset = asyncio.run(go())
    assert [c.turns for c in dataset.cases] == [["refund it"]]
    assert dataset.cases[0].expect.approval is True
    assert report.cases[0].passed and report.metrics["behaviour"] == 1.0
