"""Sagas: a failed (or cancelled) run undoes its completed compensable tool calls, newest
first, each compensation a journaled step; against a real SQLite database of bookings."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, Budget, Escalate, ToolContext, ToolError, tool
from keel.core import (
    Message,
    ModelError,
    ModelResponse,
    ModelSettings,
    RepeatedFailure,
    RunCancelled,
    RunError,
    ToolDefinitionError,
    ToolSpec,
)
from keel.runtime import cancel_run, resolve_escalation
from keel.store import RunStore, TaskFilter, open_store
from keel.testing import FunctionModel, ScriptedModel, call
from keel.tools import FunctionTool

AGENT = "trip"
FLIGHT = f"{AGENT}/turn:0/tool:book_flight#0"
HOTEL = f"{AGENT}/turn:1/tool:book_hotel#0"
CHARGE = f"{AGENT}/turn:2/tool:charge_card#0"
SCRIPT: list[Any] = [
    call("book_flight", {"traveller": "ada"}),
    call("book_hotel", {"traveller": "ada", "nights": 2}),
    call("charge_card", {"card": "visa", "amount": 700}),
    call("confirm", {}),
    "Booked.",
]


def comp(key: str) -> str:
    return f"{AGENT}/compensate:{key}"


class Travel:
    """The outside system: a SQLite database of flights, hotels, cards and payments. Every
    operation is applied at most once per idempotency key (the ``applied`` table)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.faults: dict[str, list[BaseException]] = {}
        self.calls: list[str] = []  # tool names, in the order they were called
        with self.db() as db:
            db.executescript("""
                CREATE TABLE flights (id TEXT PRIMARY KEY, traveller TEXT);
                CREATE TABLE hotels (id TEXT PRIMARY KEY, traveller TEXT, nights INT);
                CREATE TABLE cards (card TEXT PRIMARY KEY, balance INT);
                CREATE TABLE payments (id TEXT PRIMARY KEY, card TEXT, amount INT);
                CREATE TABLE applied (idem TEXT PRIMARY KEY, op TEXT, out TEXT);
                INSERT INTO cards VALUES ('visa', 1000), ('amex', 50);
                INSERT INTO flights VALUES ('FL-old', 'bob');
            """)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def state(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.db() as db:
            return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
                    for t in ("flights", "hotels", "cards", "payments")}

    def applied(self, op: str) -> int:
        with self.db() as db:
            return int(db.execute("SELECT count(*) FROM applied WHERE op = ?", (op,))
                       .fetchone()[0])

    def once(self, op: str, ctx: ToolContext, apply: Callable[[sqlite3.Connection], str]) -> str:
        self.calls.append(op)
        queued = self.faults.get(op)
        if queued:
            raise queued.pop(0)
        db = self.db()
        try:
            with db:
                row = db.execute("SELECT out FROM applied WHERE idem = ?",
                                 (ctx.idempotency_key,)).fetchone()
                if row is not None:
                    return str(row[0])
                out = apply(db)
                db.execute("INSERT INTO applied VALUES (?, ?, ?)",
                           (ctx.idempotency_key, op, out))
                return out
        finally:
            db.close()


def tools_for(travel: Travel) -> list[FunctionTool]:
    @tool(risk="write")
    def cancel_flight(result: str, ctx: ToolContext) -> str:
        """Cancel a flight booking (``result``: the booking id)."""
        return travel.once("cancel_flight", ctx, lambda db: (
            db.execute("DELETE FROM flights WHERE id = ?", (result,)), f"cancelled {result}")[1])

    def cancel_hotel(result: str, ctx: ToolContext) -> str:
        """Cancel a hotel booking (a plain function: @tool makes it a write tool)."""
        return travel.once("cancel_hotel", ctx, lambda db: (
            db.execute("DELETE FROM hotels WHERE id = ?", (result,)), f"cancelled {result}")[1])

    @tool(risk="write")
    def refund_card(card: str, amount: int, result: str, ctx: ToolContext) -> str:
        """Refund a payment: the original arguments (card, amount) and its result (the id)."""
        def apply(db: sqlite3.Connection) -> str:
            db.execute("DELETE FROM payments WHERE id = ?", (result,))
            db.execute("UPDATE cards SET balance = balance + ? WHERE card = ?", (amount, card))
            return f"refunded {amount}"
        return travel.once("refund_card", ctx, apply)

    @tool(risk="write", compensate=cancel_flight)
    def book_flight(traveller: str, ctx: ToolContext) -> str:
        """Book a flight; returns the booking id."""
        return travel.once("book_flight", ctx, lambda db: (
            db.execute("INSERT INTO flights VALUES ('FL-1', ?)", (traveller,)), "FL-1")[1])

    @tool(risk="write", compensate=cancel_hotel)
    def book_hotel(traveller: str, nights: int, ctx: ToolContext) -> str:
        """Book a hotel; returns the booking id."""
        return travel.once("book_hotel", ctx, lambda db: (
            db.execute("INSERT INTO hotels VALUES ('HO-1', ?, ?)", (traveller, nights)),
            "HO-1")[1])

    @tool(risk="write", compensate=refund_card)
    def charge_card(card: str, amount: int, ctx: ToolContext) -> str:
        """Charge a card; returns the payment id."""
        def apply(db: sqlite3.Connection) -> str:
            db.execute("INSERT INTO payments VALUES ('PA-1', ?, ?)", (card, amount))
            db.execute("UPDATE cards SET balance = balance - ? WHERE card = ?", (amount, card))
            return "PA-1"
        return travel.once("charge_card", ctx, apply)

    @tool
    async def confirm(ctx: ToolContext) -> str:
        """Ask the traveller to confirm (read-only)."""
        travel.calls.append("confirm")
        queued = travel.faults.get("confirm")
        if queued:
            raise queued.pop(0)
        return "confirmed"

    return [book_flight, book_hotel, charge_card, confirm]


def model(fail_turn: int | None = None,
          on_turn: Callable[[int], Any] | None = None) -> FunctionModel:
    scripted = ScriptedModel(SCRIPT, record_requests=False)

    async def fn(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> ModelResponse:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == fail_turn:
            raise ModelError("the model is down", retryable=False)
        return await scripted.request(messages, tools, settings)

    return FunctionModel(fn)


def agent_for(travel: Travel, **kw: Any) -> Agent[str]:
    kw.setdefault("model", model())
    return Agent(AGENT, tools=tools_for(travel), budget=Budget.unlimited(),
                 max_repeated_failures=1, **kw)


@pytest.fixture
def travel(tmp_path: Path) -> Travel:
    return Travel(tmp_path / "travel.db")


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    url = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"
    async with open_store(url) as opened:
        yield opened


async def _keys(store: RunStore, run_id: str, kind: str, phase: str = "result") -> list[str]:
    return [e.key for e in await store.read_journal(run_id) if e.kind == kind
            and e.phase == phase]


# --------------------------------------------------------------------------- failing runs


@pytest.mark.parametrize(("fails", "compensated"), [
    ("book_flight", []),
    ("book_hotel", [FLIGHT]),
    ("charge_card", [HOTEL, FLIGHT]),
    ("model", [CHARGE, HOTEL, FLIGHT]),
    ("confirm", [CHARGE, HOTEL, FLIGHT]),
])
async def test_a_run_failing_at_each_step_leaves_the_database_as_before(
        travel: Travel, store: RunStore, fails: str, compensated: list[str]) -> None:
    before = travel.state()
    if fails == "model":
        agent = agent_for(travel, model=model(fail_turn=3))
    else:
        travel.faults[fails] = [ToolError(f"{fails} refused", retryable=False)]
        agent = agent_for(travel)
    with pytest.raises(RunError) as info:
        await agent.run("Book my trip.", store=store, run_id="r1")
    assert isinstance(info.value, ModelError if fails == "model" else RepeatedFailure)
    assert travel.state() == before
    record = await store.get_run("r1")
    assert record.status == "failed"
    assert record.error is not None and record.error["type"] == type(info.value).__name__
    # reverse order of completion, each a journaled step with an intent and a result
    assert await _keys(store, "r1", "compensate") == [comp(k) for k in compensated]
    assert await _keys(store, "r1", "compensate", "intent") == [comp(k) for k in compensated]
    undo = {"cancel_flight", "cancel_hotel", "refund_card"}
    assert [c for c in travel.calls if c in undo] == [
        {FLIGHT: "cancel_flight", HOTEL: "cancel_hotel", CHARGE: "refund_card"}[k]
        for k in compensated]
    saga = await _keys(store, "r1", "saga")
    assert saga == ([f"{AGENT}/saga"] if compensated else [])  # nothing to undo: no saga


async def test_the_compensation_gets_the_original_arguments_result_and_its_own_key(
        travel: Travel, store: RunStore) -> None:
    agent = agent_for(travel, model=model(fail_turn=3))
    with pytest.raises(ModelError):
        await agent.run("Book my trip.", store=store, run_id="r1")
    journal = {(e.key, e.phase): e for e in await store.read_journal("r1")}
    intent = journal[(comp(CHARGE), "intent")].data
    assert intent["arguments"] == {"card": "visa", "amount": 700, "result": "PA-1"}
    assert intent["idempotency_key"] == f"r1/{comp(CHARGE)}"
    assert journal[(comp(CHARGE), "result")].data["value"] == "refunded 700"
    plan = journal[(f"{AGENT}/saga", "intent")].data
    assert plan["error"]["type"] == "ModelError"
    assert [s["key"] for s in plan["steps"]] == [CHARGE, HOTEL, FLIGHT]


async def test_resuming_a_compensated_run_fails_again_without_running_anything(
        travel: Travel, store: RunStore) -> None:
    agent = agent_for(travel, model=model(fail_turn=3))
    with pytest.raises(ModelError):
        await agent.run("Book my trip.", store=store, run_id="r1")
    calls, entries = list(travel.calls), len(await store.read_journal("r1"))
    with pytest.raises(RunError, match="the model is down"):
        await agent.resume("r1", store=store)
    assert travel.calls == calls, "no tool, compensation or model ran again"
    assert (await store.get_run("r1")).status == "failed"
    assert len(await store.read_journal("r1")) == entries


async def test_opt_out_leaves_the_effects(travel: Travel, store: RunStore) -> None:
    agent = agent_for(travel, model=model(fail_turn=3), compensate_on_failure=False)
    with pytest.raises(ModelError):
        await agent.run("Book my trip.", store=store, run_id="r1")
    assert travel.state()["payments"] == [("PA-1", "visa", 700)]
    assert await _keys(store, "r1", "compensate") == []
    assert agent.clone().compensate_on_failure is False


async def test_a_cancelled_run_is_compensated(travel: Travel, store: RunStore) -> None:
    before = travel.state()
    tools = {t.name: t for t in tools_for(travel)}

    @tool(name="confirm")
    async def confirm(ctx: ToolContext) -> str:
        """Ask the traveller to confirm: they cancel the run meanwhile (`cancel_run`)."""
        await cancel_run("r1", store=store, reason="the traveller changed their mind")
        await asyncio.sleep(5)
        return "confirmed"

    agent = Agent(AGENT, model=model(), budget=Budget.unlimited(),
                  tools=[tools["book_flight"], tools["book_hotel"], tools["charge_card"], confirm])
    with pytest.raises(RunCancelled):
        await agent.run("Book my trip.", store=store, run_id="r1")
    assert travel.state() == before
    record = await store.get_run("r1")
    assert record.status == "cancelled"
    assert await _keys(store, "r1", "compensate") == [comp(CHARGE), comp(HOTEL), comp(FLIGHT)]


# --------------------------------------------------------------------- failing compensations


async def test_a_transient_compensation_failure_is_retried_and_journaled(
        travel: Travel, store: RunStore) -> None:
    before = travel.state()
    travel.faults["cancel_hotel"] = [ConnectionError("hotel API blip"),
                                     TimeoutError("hotel API slow")]
    agent = agent_for(travel, model=model(fail_turn=3))
    with pytest.raises(ModelError):
        await agent.run("Book my trip.", store=store, run_id="r1")
    assert travel.state() == before
    assert travel.calls.count("cancel_hotel") == 3
    attempts = await _keys(store, "r1", "attempt")
    assert attempts == [f"{comp(HOTEL)}/attempt:1", f"{comp(HOTEL)}/attempt:2"]
    assert (await store.get_run("r1")).status == "failed"


async def test_a_permanently_failing_compensation_escalates_with_the_state(
        travel: Travel, store: RunStore) -> None:
    before = travel.state()
    travel.faults["cancel_hotel"] = [ToolError("hotel says: booking is locked",
                                               retryable=False)]
    agent = agent_for(travel, model=model(fail_turn=3))
    with pytest.raises(Escalate) as info:
        await agent.run("Book my trip.", store=store, run_id="r1")
    assert info.value.trigger == "compensation_failed"
    assert (await store.get_run("r1")).status == "suspended"
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    assert task.task_id == info.value.escalation_id
    saga = task.data["saga"]
    assert saga["compensated"] == [CHARGE]
    assert saga["not_compensated"] == [HOTEL, FLIGHT]
    assert saga["failed"]["step"] == HOTEL and saga["failed"]["compensation"] == "cancel_hotel"
    assert "booking is locked" in saga["failed"]["error"]
    assert saga["error"]["type"] == "ModelError"
    assert "cancel_hotel" in task.data["reason"]
    # half undone: the refund happened, the bookings are still there
    state = travel.state()
    assert state["payments"] == [] and state["hotels"] == [("HO-1", "ada", 2)]

    # a person fixes the cause and resumes: the saga goes on where it stopped
    await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                             note="unlocked the booking")
    with pytest.raises(RunError, match="the model is down"):
        await agent.resume("r1", store=store)
    assert travel.state() == before
    assert travel.applied("refund_card") == 1 and travel.calls.count("refund_card") == 1
    assert (await store.get_run("r1")).status == "failed"
    assert await _keys(store, "r1", "compensate") == [comp(CHARGE), comp(HOTEL), comp(FLIGHT)]


async def test_transient_failures_past_the_limit_escalate(travel: Travel,
                                                          store: RunStore) -> None:
    travel.faults["cancel_flight"] = [ConnectionError("down")] * 10
    agent = agent_for(travel, model=model(fail_turn=3))
    with pytest.raises(Escalate):
        await agent.run("Book my trip.", store=store, run_id="r1")
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    assert task.data["saga"]["failed"]["attempts"] == 4
    assert task.data["saga"]["not_compensated"] == [FLIGHT]
    # dismissed: the person cancelled the flight by hand; the run is closed
    await resolve_escalation(task.task_id, store=store, by="ann", action="dismiss",
                             comment="cancelled FL-1 by phone")
    assert (await store.get_run("r1")).status == "cancelled"


# ----------------------------------------------------------------------------- definition


def test_a_compensation_must_be_fillable_from_the_original_call() -> None:
    def undo(booking: str) -> None:
        """Needs a parameter the original call does not have."""

    with pytest.raises(ToolDefinitionError, match="booking"):
        @tool(risk="write", compensate=undo)
        def book(traveller: str) -> str:
            """Book."""
            return "x"

    def undo_ok(traveller: str, result: str, note: str = "") -> None:
        """Named original argument, the result, and a defaulted extra."""

    @tool(risk="write", compensate=undo_ok)
    def book_ok(traveller: str) -> str:
        """Book."""
        return "x"

    assert book_ok.meta.compensate is not None
    assert book_ok.meta.compensate.meta.risk == "write"
    assert tool(book_ok.fn).meta.compensate is None
