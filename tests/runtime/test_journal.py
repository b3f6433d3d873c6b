from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pydantic
import pytest

from keel import (
    Agent,
    Divergence,
    MemoryStore,
    ModelError,
    OutputValidationError,
    RunNotFound,
    StoreError,
    ToolContext,
    UnknownOutcome,
    UserError,
    tool,
)
from keel.core import JsonFormatter, ModelTurn, Observation, RunFinished, RunStarted, TextDelta
from keel.runtime import BudgetTracker, FlowContext, Journal
from keel.store import RunRecord
from keel.testing import ScriptedModel, call


class Ledger:
    """A stand-in for an outside system: counts effects per idempotency key."""

    def __init__(self) -> None:
        self.effects: list[str] = []

    def apply(self, key: str) -> None:
        self.effects.append(key)


def failing_then(script: list[Any], fail_at: int) -> list[Any]:
    out = list(script)
    out[fail_at] = ModelError("connection reset", retryable=True)
    return out


async def test_resume_does_not_repeat_completed_steps() -> None:
    ledger = Ledger()

    @tool(risk="write", idempotent=True)
    def charge(order: str, ctx: ToolContext) -> str:
        ledger.apply(ctx.idempotency_key)
        return f"charged {order}"

    script: list[Any] = [call("charge", {"order": "A"}), call("charge", {"order": "B"}), "done"]
    store = MemoryStore()
    broken = Agent("pay", model=ScriptedModel(failing_then(script, 2)), tools=[charge])
    with pytest.raises(ModelError) as err:
        await broken.run("go", store=store)
    run_id = err.value.run_id
    assert run_id is not None
    assert len(ledger.effects) == 2

    fresh_model = ScriptedModel(script)
    agent = Agent("pay", model=fresh_model, tools=[charge])
    result = await agent.resume(run_id, store=store)
    assert result.output == "done"
    assert result.replayed_steps == 4
    assert len(fresh_model.requests) == 1  # only the missing turn was asked of the model
    assert len(ledger.effects) == 2  # no tool ran again
    assert len(set(ledger.effects)) == 2
    record = await store.get_run(run_id)
    assert record.status == "completed" and record.error is None


async def test_resuming_a_completed_or_unknown_run_is_refused() -> None:
    store = MemoryStore()
    agent = Agent("a", model=ScriptedModel(["hi"]))
    result = await agent.run("x", store=store)
    with pytest.raises(StoreError, match="already completed"):
        await agent.resume(result.run_id, store=store)
    with pytest.raises(RunNotFound, match="keel runs list"):
        await agent.resume("nope", store=store)
    other = Agent("b", model=ScriptedModel(["hi"]))
    record = await store.get_run(result.run_id)
    await store.update_run(record.with_status("failed"))
    with pytest.raises(StoreError, match="belongs to agent 'a'"):
        await other.resume(result.run_id, store=store)


async def test_changed_code_is_a_divergence_showing_both_sides() -> None:
    @tool
    def lookup(q: str) -> str:
        return q

    store = MemoryStore()
    crashing = ScriptedModel([call("lookup", {"q": "x"}), ModelError("boom")])
    with pytest.raises(ModelError) as err:
        await Agent("d", model=crashing, tools=[lookup]).run("go", store=store)
    run_id = err.value.run_id or ""

    changed = Agent("d", model=ScriptedModel([call("lookup", {"q": "x"}), "ok"]), tools=[lookup],
                    instructions="new instructions")
    with pytest.raises(Divergence) as div:
        await changed.resume(run_id, store=store)
    text = str(div.value)
    assert "d/turn:0/model" in text
    assert "recorded" in text and "requested" in text
    assert div.value.recorded["input_hash"] != div.value.requested["input_hash"]
    assert (await store.get_run(run_id)).status == "failed"


async def test_intent_without_result_is_an_unknown_outcome_never_a_rerun() -> None:
    runs: list[str] = []

    @tool(risk="irreversible", approval=False)
    def wire_money(amount: int) -> str:
        runs.append("wired")
        return "ok"

    store = MemoryStore()
    agent = Agent("bank", model=ScriptedModel([call("wire_money", {"amount": 5}), "sent"]),
                  tools=[wire_money])
    run_id = await _run_with_lost_result(agent, store, "bank/turn:0/tool:wire_money#0")
    with pytest.raises(UnknownOutcome, match="will not run it again") as err:
        await agent.resume(run_id, store=store)
    assert err.value.step_key == "bank/turn:0/tool:wire_money#0"
    assert runs == ["wired"]  # the original call only; the resume did not run it again
    assert (await store.get_run(run_id)).status == "failed"


async def test_reconcile_hook_decides_an_unknown_outcome() -> None:
    runs: list[int] = []
    applied_elsewhere = {"bank/turn:0/tool:pay#0"}

    async def check_bank(args: dict[str, Any], ctx: ToolContext) -> Any:
        return "paid (reconciled)" if ctx.step_key in applied_elsewhere else None

    @tool(risk="irreversible", reconcile=check_bank, approval=False)
    def pay(amount: int) -> str:
        runs.append(amount)
        return "paid"

    store = MemoryStore()
    agent = Agent("bank", model=ScriptedModel([call("pay", {"amount": 5}), "done"]), tools=[pay])
    run_id = await _run_with_lost_result(agent, store, "bank/turn:0/tool:pay#0")
    result = await agent.resume(run_id, store=store)
    assert result.output == "done"
    assert runs == [5]  # the original call only: reconciled, not re-run
    journal = await store.read_journal(run_id)
    tool_result = [e for e in journal if e.key == "bank/turn:0/tool:pay#0" and e.phase == "result"]
    assert tool_result[0].data["content"] == "paid (reconciled)"

    applied_elsewhere.clear()  # now the bank says it never happened: run it again
    run_id = await _run_with_lost_result(agent, store, "bank/turn:0/tool:pay#0")
    await agent.resume(run_id, store=store)
    assert runs == [5, 5, 5]  # first run, second run, and the re-run the hook allowed


async def _run_with_lost_result(agent: Agent[Any], store: MemoryStore, key: str) -> str:
    """Simulate a crash between a tool's intent and its result: run once in a scratch store,
    then copy the run into ``store`` with its journal cut just after that intent (what a
    SIGKILL there would leave; tests/crash does it with real processes)."""
    scratch = MemoryStore()
    result = await agent.run("go", store=scratch)
    entries = await scratch.read_journal(result.run_id)
    cut = next(i for i, e in enumerate(entries) if e.key == key and e.phase == "intent")
    record = await scratch.get_run(result.run_id)
    run_id = f"{result.run_id}-{len(await store.list_runs())}"
    await store.create_run(replace(record, run_id=run_id, status="running", output=None))
    await store.append(run_id, entries[: cut + 1])
    return run_id


async def test_intent_is_written_before_a_non_idempotent_tool_runs() -> None:
    store = MemoryStore()
    seen: list[list[tuple[str, str]]] = []

    @tool(risk="write")
    async def send_email(to: str, ctx: ToolContext) -> str:
        seen.append([(e.key, e.phase) for e in await store.read_journal(ctx.run_id)])
        return "sent"

    agent = Agent("mail", model=ScriptedModel([call("send_email", {"to": "a@b.c"}), "ok"]),
                  tools=[send_email])
    await agent.run("go", store=store)
    assert seen[0][-1] == ("mail/turn:0/tool:send_email#0", "intent")


async def test_flow_context_steps_and_deterministic_helpers() -> None:
    store = MemoryStore()
    now = 1_000.0
    await store.create_run(RunRecord(run_id="r", agent="flow", status="running", input=None,
                                     created_at=now, updated_at=now))
    calls: list[int] = []

    async def workflow() -> list[Any]:
        journal = Journal(store, "r", "flow", await store.read_journal("r"),
                          BudgetTracker(__import__("keel").Budget()))
        ctx = FlowContext(journal)
        out = [await ctx.now(), await ctx.uuid(), await ctx.random()]
        out.append(await ctx.step("fetch", lambda: calls.append(1) or {"n": len(calls)},
                                  input={"q": 1}))
        return out

    first = await workflow()
    second = await workflow()
    assert first == second
    assert calls == [1]

    journal = Journal(store, "r", "flow", await store.read_journal("r"),
                      BudgetTracker(__import__("keel").Budget()))
    ctx = FlowContext(journal)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(UserError, match="cannot be recorded"):
        await ctx.step("bad", lambda: looped)
    await ctx.step("once", lambda: 1)
    with pytest.raises(UserError, match="used twice"):
        await ctx.step("once", lambda: 2)


async def test_stream_ends_in_exactly_the_non_streamed_result() -> None:
    @tool
    def weather(city: str) -> str:
        return f"sunny in {city}"

    script: list[Any] = [["Checking both.", call("weather", {"city": "Oslo"}),
                          call("weather", {"city": "Rome"})], "Both sunny."]
    plain = await Agent("wx", model=ScriptedModel(script), tools=[weather]).run(
        "?", store=MemoryStore(), run_id="same")
    events = [e async for e in Agent("wx", model=ScriptedModel(script), tools=[weather]).stream(
        "?", store=MemoryStore(), run_id="same")]
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished)
    streamed = events[-1].result
    assert streamed == plain
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "Checking both.Both sunny.")
    observations = [e.content for e in events if isinstance(e, Observation)]
    assert observations == ["sunny in Oslo", "sunny in Rome"]
    assert sum(isinstance(e, ModelTurn) for e in events) == 2


async def test_stream_raises_the_run_failure_and_resume_can_stream() -> None:
    store = MemoryStore()
    agent = Agent("s", model=ScriptedModel([call("nope"), ModelError("down")]))
    with pytest.raises(ModelError) as err:
        async for _ in agent.stream("x", store=store):
            pass
    ok = Agent("s", model=ScriptedModel([call("nope"), "fine"]))
    events = [e async for e in ok.stream(resume=err.value.run_id, store=store)]
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result.output == "fine"
    with pytest.raises(UserError, match="not both"):
        async for _ in ok.stream("x", resume="y"):
            pass


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("keel")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield buf
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_one_json_log_line_per_step_without_secrets(json_log: io.StringIO) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"

    @tool
    def login(api_key: str) -> str:
        return f"logged in with {api_key}"

    store = MemoryStore()
    model = ScriptedModel([call("login", {"api_key": secret}), "ok"])
    result = await Agent("auth", model=model, tools=[login]).run("go", store=store)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    steps = [line for line in lines if line["logger"] == "keel.step"]
    assert [s["step_key"] for s in steps] == ["auth/turn:0/model", "auth/turn:0/tool:login#0",
                                              "auth/turn:1/model"]
    for field in ("timestamp", "run_id", "step_key", "agent", "action", "tool_name",
                  "latency_ms", "success", "input_tokens", "output_tokens", "cost_usd"):
        assert field in steps[0], field
    assert steps[1]["tool_name"] == "login" and steps[1]["success"] is True
    assert steps[0]["input_tokens"] > 0
    assert secret not in json_log.getvalue()
    stored = json.dumps([e.data for e in await store.read_journal(result.run_id)])
    assert secret not in stored  # nor in the journal


class CountingStore(MemoryStore):
    """A memory store that remembers each append batch (one batch = one commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, str]]] = []

    async def append(self, run_id: str, entries: Any, *, lease: str | None = None) -> None:
        await super().append(run_id, entries, lease=lease)
        self.batches.append([(e.key, e.phase) for e in entries])

    async def finish_run(self, record: Any, entries: Any, *, lease: str | None = None) -> None:
        await super().finish_run(record, entries, lease=lease)
        if entries:
            self.batches.append([(e.key, e.phase) for e in entries])


async def test_model_response_rides_with_a_read_only_tool_result() -> None:
    @tool
    def lookup(q: str) -> str:
        return q

    store = CountingStore()
    model = ScriptedModel([call("lookup", {"q": "a"}), "done"])
    await Agent("r", model=model, tools=[lookup]).run("go", store=store)
    assert store.batches == [
        [("r/turn:0/model", "result"), ("r/turn:0/tool:lookup#0", "result")],
        [("r/turn:1/model", "result")],  # the final answer, committed before the run completes
    ]


async def test_model_response_is_committed_before_a_tool_with_effects_runs() -> None:
    store = CountingStore()
    seen: list[list[tuple[str, str]]] = []

    @tool(risk="write", idempotent=True)
    async def upsert(q: str, ctx: ToolContext) -> str:
        seen.append([(e.key, e.phase) for e in await store.read_journal(ctx.run_id)])
        return q

    @tool(risk="irreversible", approval=False)
    async def send(q: str, ctx: ToolContext) -> str:
        seen.append([(e.key, e.phase) for e in await store.read_journal(ctx.run_id)])
        return q

    model = ScriptedModel([call("upsert", {"q": "a"}), call("send", {"q": "b"}), "done"])
    await Agent("w", model=model, tools=[upsert, send]).run("go", store=store)
    assert seen[0] == [("w/turn:0/model", "result")]
    assert seen[1][-2:] == [("w/turn:1/model", "result"), ("w/turn:1/tool:send#0", "intent")]
    assert [("w/turn:1/model", "result")] in store.batches  # its own commit, before the intent


async def test_deferred_records_are_kept_when_the_run_fails() -> None:
    """The last model answers are only deferred when the run fails on them (the output never
    validates): the failure path still commits them."""

    class Answer(pydantic.BaseModel):
        n: int

    store = MemoryStore()
    model = ScriptedModel(["not json", "still not", "nope"])
    agent = Agent("f", model=model, output_type=Answer, max_output_retries=2)
    with pytest.raises(OutputValidationError) as err:
        await agent.run("go", store=store)
    keys = [e.key for e in await store.read_journal(err.value.run_id or "")]
    assert keys == ["f/turn:0/model", "f/turn:1/model", "f/turn:2/model"]


async def test_streamed_resume_marks_replayed_observations() -> None:
    @tool
    def lookup(q: str) -> str:
        return q

    store = MemoryStore()
    broken = Agent("s", model=ScriptedModel([call("lookup", {"q": "a"}), ModelError("down")]),
                   tools=[lookup])
    with pytest.raises(ModelError) as err:
        await broken.run("go", store=store)
    fixed = Agent("s", model=ScriptedModel([call("lookup", {"q": "a"}), call("lookup", {"q": "b"}),
                                            "done"]), tools=[lookup])
    events = [e async for e in fixed.stream(resume=err.value.run_id, store=store)]
    observed = [(e.content, e.replayed) for e in events if isinstance(e, Observation)]
    assert observed == [("a", True), ("b", False)]
