"""What the proof tests share: the agents run both on Temporal and directly on a SQLite
store, and readers of what a run left in keel's store. Every model is a FunctionModel or a
ScriptedModel (the answer is the script's item for the conversation's turn: a pure function
of the messages), so a run continued by another activity, worker or process sees the same
answers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from keel import Agent, ApprovalPolicy, ApprovalRule, Budget, ToolContext, tool
from keel.core import Message, ModelError, ModelSettings, ToolSpec
from keel.patterns import Supervisor
from keel.store import HumanTask, JournalEntry, RunRecord, TaskFilter, open_store
from keel.testing import FunctionModel, ScriptedModel, call

# ---------------------------------------------------------------------------- tool use

WEATHER = {"paris": 18, "tokyo": 24}


@tool(risk="read")
def get_weather(city: str) -> int:
    """The temperature in a city, in degrees Celsius."""
    return WEATHER[city.lower()]


@tool(risk="read")
def difference(a: float, b: float) -> float:
    """a minus b."""
    return a - b


def weather_agent() -> Agent[Any]:
    return Agent("weather", model=ScriptedModel([
        [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Tokyo"})],
        call("difference", {"a": 24, "b": 18}),
        "Tokyo is warmer than Paris by 6 degrees.",
    ]), tools=[get_weather, difference])


# ---------------------------------------------------------------------------- approvals

#: what refund did in this process, one (idempotency key, ran inside a Temporal activity)
#: per execution
REFUNDS: list[tuple[str, bool]] = []


@tool(risk="read")
def lookup_order(order_id: str) -> float:
    """An order's amount."""
    return 249.0


@tool(risk="write", idempotent=False)
def refund(order_id: str, amount: float, ctx: ToolContext) -> str:
    """Refund an order."""
    from temporalio import activity

    REFUNDS.append((ctx.idempotency_key, activity.in_activity()))
    return f"refunded {amount:.2f} for {order_id}"


def refund_agent() -> Agent[Any]:
    return Agent("refunds", model=ScriptedModel([
        call("lookup_order", {"order_id": "A-1042"}),
        call("refund", {"order_id": "A-1042", "amount": 249.0}),
        "I refunded 249.00 for order A-1042.",
    ]), tools=[lookup_order, refund], approval=ApprovalPolicy(rules=(
        ApprovalRule("refund", lambda a: a["amount"] > 100, "refunds over 100 need a person"),)))


# --------------------------------------------------------------------------- supervisor


@tool(risk="read")
def search_notes(topic: str) -> str:
    """Search the research notes."""
    return f"notes on {topic}: COP 3"


def desk() -> Supervisor:
    researcher = Agent("researcher", model=ScriptedModel([
        call("search_notes", {"topic": "heat pumps"}), "Heat pumps have a COP of 3."]),
        tools=[search_notes])
    analyst = Agent("analyst", model=ScriptedModel([
        call("difference", {"a": 0.111, "b": 0.1}), "The heat pump is 0.011 cheaper."]),
        tools=[difference])
    editor = Agent("editor", model=ScriptedModel([
        [call("ask_researcher", {"task": "How efficient are heat pumps?"}),
         call("ask_analyst", {"task": "Cost of heat: heat pump vs gas?"})],
        "Heat pumps (COP 3) give cheaper heat than gas.",
    ]))
    return Supervisor("desk", lead=editor, workers=[researcher, analyst], worker_budget=0.5,
                      budget=Budget(max_steps=40))


# --------------------------------------------------------------------------------- saga

BOOKINGS: list[str] = []  # ("book:<key>" / "cancel:<key>") per execution, in this process


@tool(risk="write")
def cancel_room(result: str, ctx: ToolContext) -> str:
    """Cancel a room booking."""
    BOOKINGS.append(f"cancel:{result}")
    return f"cancelled {result}"


@tool(risk="write", compensate=cancel_room)
def book_room(guest: str, ctx: ToolContext) -> str:
    """Book a room."""
    BOOKINGS.append(f"book:{ctx.idempotency_key}")
    return f"room for {guest}"


def _trip_model(messages: list[Message], tools: list[ToolSpec],
                settings: ModelSettings) -> Any:
    if sum(1 for m in messages if m.role == "assistant") == 0:
        return call("book_room", {"guest": "ada"})
    return ModelError("the model is down", retryable=False)


def trip_agent() -> Agent[Any]:
    return Agent("trip", model=FunctionModel(_trip_model), tools=[book_room])


# ------------------------------------------------------------------------------ readers


def step_keys(journal: list[JournalEntry]) -> Counter[tuple[str, str, str]]:
    """The steps a run recorded (key, phase, kind), as a multiset: completion order of
    parallel branches may differ between two executions, the steps may not."""
    return Counter((e.key, e.phase, e.kind) for e in journal)


async def read_run(url: str, run_id: str) -> tuple[RunRecord, list[JournalEntry],
                                                      list[HumanTask]]:
    async with open_store(url) as store:
        return (await store.get_run(run_id), await store.read_journal(run_id),
                await store.list_tasks(TaskFilter(run_id=run_id)))


async def wait_for_task(url: str, run_id: str, seconds: float = 60) -> HumanTask:
    """The run's first pending human task, once it is in the store (polls the store)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, _, tasks = await read_run(url, run_id)
        except Exception:
            tasks = []
        pending = [t for t in tasks if t.status == "open"]
        if pending:
            return pending[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} has no pending task after {seconds} s")
