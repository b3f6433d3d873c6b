"""diff_runs: two runs aligned step by step, with a literal summary of each side."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from keel import Agent, MemoryStore, RunNotFound, tool
from keel.core import Message, ModelResponse, ModelSettings, TextPart, ToolCallPart, ToolSpec
from keel.runtime import diff_runs, fork_run
from keel.runtime._diff import merge_order, summarize
from keel.store import JournalEntry, RunRecord
from keel.testing import FunctionModel, ScriptedModel, call


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    if key == "bad":
        raise ValueError("no such key")
    return f"value of {key}"


def agent(script: list[Any], name: str = "test:scripted") -> Agent[Any]:
    return Agent("d", model=ScriptedModel(script, name=name), tools=[lookup])


TWO_LOOKUPS: list[Any] = [["Checking.", call("lookup", {"key": "a"})],
                          call("lookup", {"key": "b"}), "a and b"]


async def test_a_fork_against_its_parent() -> None:
    store = MemoryStore()
    parent = await agent(TWO_LOOKUPS).run("q", store=store)
    other = ScriptedModel([*TWO_LOOKUPS[:1], call("lookup", {"key": "bad"}), "only a"],
                          name="test:other")
    fork = await fork_run(agent(TWO_LOOKUPS), parent.run_id, at=2, store=store, model=other)
    d = await diff_runs(parent.run_id, fork.run_id, store=store)
    assert [(s.key, s.status) for s in d.steps] == [
        ("d/turn:0/model", "same"),
        ("d/turn:0/tool:lookup#0", "same"),
        ("d/turn:1/model", "changed"),
        ("d/turn:1/tool:lookup#0", "changed"),
        ("d/turn:2/model", "changed"),
    ]
    assert d.first_divergence == "d/turn:1/model"
    assert not d.outputs_equal and not d.identical
    assert (d.output_a, d.output_b) == ("a and b", "only a")
    step = d.steps[2]
    assert step.a == 'test:scripted: call lookup {"key": "b"}'
    assert step.b == 'test:other: call lookup {"key": "bad"}'
    assert d.steps[3].a == "value of b"
    assert d.steps[3].b is not None and d.steps[3].b.startswith("error tool_error: ")
    assert d.steps[0].a == d.steps[0].b == 'Checking. · call lookup {"key": "a"}'
    assert d.fork_b is not None and d.fork_b["parent"] == parent.run_id
    assert d.fork_a is None
    assert d.totals_a.steps == d.totals_b.steps == 5
    assert d.deltas()["steps"] == 0
    assert d.counts() == {"same": 2, "changed": 3, "only_a": 0, "only_b": 0}


async def test_steps_only_in_one_run_keep_their_place() -> None:
    store = MemoryStore()
    short = await agent([call("lookup", {"key": "a"}), "a"]).run("q", store=store)
    long = await agent([call("lookup", {"key": "a"}), call("lookup", {"key": "b"}),
                        "a and b"]).run("q", store=store)
    d = await diff_runs(short.run_id, long.run_id, store=store)
    assert [(s.key, s.status) for s in d.steps] == [
        ("d/turn:0/model", "same"),
        ("d/turn:0/tool:lookup#0", "same"),
        ("d/turn:1/model", "changed"),
        ("d/turn:1/tool:lookup#0", "only_b"),
        ("d/turn:2/model", "only_b"),
    ]
    only_b = d.steps[3]
    assert only_b.a is None and only_b.b == "value of b"
    assert d.totals_a.steps == 3 and d.totals_b.steps == 5
    assert d.deltas()["steps"] == 2
    assert d.deltas()["tokens"] == d.totals_b.tokens - d.totals_a.tokens > 0
    reverse = await diff_runs(long.run_id, short.run_id, store=store)
    assert [s.status for s in reverse.steps][-2:] == ["only_a", "only_a"]


async def test_identical_runs_ignore_provider_call_ids_and_token_counts() -> None:
    """Two live runs that said the same things are the same, even though the provider gave
    each tool call a fresh id and counted tokens differently."""

    def reply(messages: list[Message], tools: list[ToolSpec],
              settings: ModelSettings) -> ModelResponse | str:
        if not any(m.role == "assistant" for m in messages):
            args = '{"key":  "a"}' if len(messages) % 2 else '{"key": "a"}'
            return ModelResponse(parts=(
                TextPart(text="Checking."),
                ToolCallPart(call_id=uuid.uuid4().hex, tool_name="lookup", arguments=args)))
        return "done"

    store = MemoryStore()
    a = await Agent("d", model=FunctionModel(reply), tools=[lookup]).run("q", store=store)
    b = await Agent("d", model=FunctionModel(reply), tools=[lookup],
                    instructions="Be brief.").run("q", store=store)
    d = await diff_runs(a.run_id, b.run_id, store=store)
    assert [s.status for s in d.steps] == ["same", "same", "same"]
    assert d.first_divergence is None and d.outputs_equal and d.identical
    assert d.totals_a.tokens != d.totals_b.tokens  # the prompt differed in length


async def test_a_run_that_failed_and_one_that_did_not() -> None:
    store = MemoryStore()
    ok = await agent(["fine"]).run("q", store=store)
    record = RunRecord(run_id="failed-1", agent="d", status="failed", input="q",
                       created_at=1.0, updated_at=1.0, error={"type": "ModelError"})
    await store.create_run(record)
    await store.append("failed-1", [JournalEntry(
        seq=0, key="d/turn:0/tool:pay#0", phase="intent", kind="tool", name="pay",
        input_hash="h", data={"tool": "pay", "arguments": '{"amount": 5}'}, created_at=1.0)])
    d = await diff_runs(ok.run_id, "failed-1", store=store)
    assert not d.outputs_equal  # statuses differ, even though neither output is compared
    intent = next(s for s in d.steps if s.status == "only_b")
    assert intent.b == 'started, no result recorded: pay {"amount": 5}'


async def test_unknown_runs_are_refused() -> None:
    store = MemoryStore()
    ok = await agent(["fine"]).run("q", store=store)
    with pytest.raises(RunNotFound):
        await diff_runs(ok.run_id, "nope", store=store)
    with pytest.raises(RunNotFound):
        await diff_runs("nope", ok.run_id, store=store)


def test_merge_order_places_one_sided_keys_between_shared_ones() -> None:
    assert merge_order(["a", "b", "d"], ["a", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]
    assert merge_order([], ["x", "y"]) == ["x", "y"]
    assert merge_order(["x", "y"], []) == ["x", "y"]
    # Shared keys in a different order: each key still appears once, in A's order.
    merged = merge_order(["a", "b", "c"], ["c", "z", "b", "a"])
    assert sorted(merged) == ["a", "b", "c", "z"]
    assert [k for k in merged if k != "z"] == ["a", "b", "c"]


def test_summaries_are_one_literal_clipped_line() -> None:
    entry = JournalEntry(
        seq=0, key="k", phase="result", kind="model", name="m", input_hash="h",
        created_at=0.0, data={"parts": [
            {"type": "text", "text": "[bold red]x[/]\nsecond line"},
            {"type": "tool_call", "call_id": "c", "tool_name": "t", "arguments": "{}"}]})
    assert summarize(entry) == "[bold red]x[/] ⏎ second line · call t {}"
    long = JournalEntry(seq=0, key="k", phase="result", kind="tool", name="t",
                        input_hash="h", created_at=0.0, data={"content": "y" * 1000})
    text = summarize(long)
    assert text.startswith("y" * 240) and text.endswith("[760 more characters]")
    other = JournalEntry(seq=0, key="k", phase="result", kind="clock", name="now",
                         input_hash="h", created_at=0.0, data=12.5)
    assert summarize(other) == "12.5"
