"""A trip-booking saga run in a child process that SIGKILLs itself mid-compensation. Used by
test_sigkill_saga.py.

    python saga_agent.py init            create the travel database (the outside system)
    python saga_agent.py run RUN_ID      book flight, hotel, charge; the model then fails
    python saga_agent.py resume RUN_ID   finish what the killed process left

The outside system is the SQLite file ``KEEL_CRASH_EFFECTS``: tables ``flights``, ``hotels``,
``cards``, ``payments``, plus ``applied`` (one row per idempotency key: an operation asked
again with the same key is not applied again) and ``applications`` (one row per operation that
really changed the data: what the test counts). Kill points: ``op:NAME:before`` /
``op:NAME:after`` (around the commit of operation NAME) and the store's
``append:KEY:PHASE``.

Exit codes: 0 completed, 4 the run failed (compensated), 6 escalated, 5 leased / finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from _child import configure, die_if, open_killing_store

from keel import Agent, Budget, Escalate, RunError, RunLeased, StoreError, ToolContext, tool
from keel.core import Message, ModelError, ModelResponse, ModelSettings, ToolSpec
from keel.testing import FunctionModel, ScriptedModel, call

AGENT = "trip"
SCRIPT: list[Any] = [
    call("book_flight", {"traveller": "ada"}),
    call("book_hotel", {"traveller": "ada", "nights": 2}),
    call("charge_card", {"card": "visa", "amount": 700}),
    "never reached: the model fails at turn 3",
]


def travel() -> sqlite3.Connection:
    return sqlite3.connect(os.environ["KEEL_CRASH_EFFECTS"], isolation_level=None, timeout=30)


def init() -> None:
    db = travel()
    try:
        db.executescript("""
            CREATE TABLE flights (id TEXT PRIMARY KEY, traveller TEXT);
            CREATE TABLE hotels (id TEXT PRIMARY KEY, traveller TEXT, nights INT);
            CREATE TABLE cards (card TEXT PRIMARY KEY, balance INT);
            CREATE TABLE payments (id TEXT PRIMARY KEY, card TEXT, amount INT);
            CREATE TABLE applied (idem TEXT PRIMARY KEY, op TEXT, out TEXT);
            CREATE TABLE applications (op TEXT, idem TEXT, pid INT);
            INSERT INTO cards VALUES ('visa', 1000);
            INSERT INTO flights VALUES ('FL-old', 'bob');
        """)
    finally:
        db.close()


def once(op: str, ctx: ToolContext, apply: Callable[[sqlite3.Connection], str]) -> str:
    """Apply ``op`` at most once per idempotency key, with kill points around the commit."""
    die_if(f"op:{op}:before")
    db = travel()
    try:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT out FROM applied WHERE idem = ?",
                         (ctx.idempotency_key,)).fetchone()
        if row is not None:
            db.execute("COMMIT")
            return str(row[0])
        out = apply(db)
        db.execute("INSERT INTO applied VALUES (?, ?, ?)", (ctx.idempotency_key, op, out))
        db.execute("INSERT INTO applications VALUES (?, ?, ?)",
                   (op, ctx.idempotency_key, os.getpid()))
        db.execute("COMMIT")
    finally:
        db.close()
    die_if(f"op:{op}:after")
    return out


def _refund(card: str, amount: int, payment: str) -> Callable[[sqlite3.Connection], str]:
    def apply(db: sqlite3.Connection) -> str:
        db.execute("DELETE FROM payments WHERE id = ?", (payment,))
        db.execute("UPDATE cards SET balance = balance + ? WHERE card = ?", (amount, card))
        return f"refunded {amount}"
    return apply


def _charge(card: str, amount: int) -> Callable[[sqlite3.Connection], str]:
    def apply(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO payments VALUES ('PA-1', ?, ?)", (card, amount))
        db.execute("UPDATE cards SET balance = balance - ? WHERE card = ?", (amount, card))
        return "PA-1"
    return apply


@tool(risk="write")
def cancel_flight(result: str, ctx: ToolContext) -> str:
    """Cancel a flight booking."""
    return once("cancel_flight", ctx, lambda db: (
        db.execute("DELETE FROM flights WHERE id = ?", (result,)), f"cancelled {result}")[1])


@tool(risk="write")
def cancel_hotel(result: str, ctx: ToolContext) -> str:
    """Cancel a hotel booking."""
    return once("cancel_hotel", ctx, lambda db: (
        db.execute("DELETE FROM hotels WHERE id = ?", (result,)), f"cancelled {result}")[1])


@tool(risk="write")
def refund_card(card: str, amount: int, result: str, ctx: ToolContext) -> str:
    """Refund a payment."""
    return once("refund_card", ctx, _refund(card, amount, result))


@tool(risk="write", compensate=cancel_flight)
def book_flight(traveller: str, ctx: ToolContext) -> str:
    """Book a flight."""
    return once("book_flight", ctx, lambda db: (
        db.execute("INSERT INTO flights VALUES ('FL-1', ?)", (traveller,)), "FL-1")[1])


@tool(risk="write", compensate=cancel_hotel)
def book_hotel(traveller: str, nights: int, ctx: ToolContext) -> str:
    """Book a hotel."""
    return once("book_hotel", ctx, lambda db: (
        db.execute("INSERT INTO hotels VALUES ('HO-1', ?, ?)", (traveller, nights)),
        "HO-1")[1])


@tool(risk="write", compensate=refund_card)
def charge_card(card: str, amount: int, ctx: ToolContext) -> str:
    """Charge a card."""
    return once("charge_card", ctx, _charge(card, amount))


scripted = ScriptedModel(SCRIPT, record_requests=False)


async def model_fn(messages: list[Message], tools: list[ToolSpec],
                   settings: ModelSettings) -> ModelResponse:
    if sum(1 for m in messages if m.role == "assistant") == 3:
        raise ModelError("the model is down", retryable=False)
    return await scripted.request(messages, tools, settings)


def build_agent() -> Agent[str]:
    return Agent(AGENT, model=FunctionModel(model_fn),
                 tools=[book_flight, book_hotel, charge_card], budget=Budget.unlimited())


async def main(argv: list[str]) -> int:
    configure()
    if argv[0] == "init":
        init()
        return 0
    agent = build_agent()
    store = open_killing_store()
    try:
        if argv[0] == "run":
            result = await agent.run("Book my trip.", store=store, run_id=argv[1])
        else:
            result = await agent.resume(argv[1], store=store)
    except Escalate as exc:
        print(json.dumps({"error": "Escalate", "escalation_id": exc.escalation_id}))
        return 6
    except (RunLeased, StoreError) as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 5
    except RunError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": exc.message}))
        return 4
    finally:
        await store.close()
    print(json.dumps({"output": result.output}))
    return 0


def main_sync(argv: list[str]) -> int:
    return asyncio.run(main(argv))


if __name__ == "__main__":
    sys.exit(main_sync(sys.argv[1:]))
