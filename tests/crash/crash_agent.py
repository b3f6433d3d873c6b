"""A multi-step agent whose tools change an outside system (a separate SQLite file), run in a
child process that SIGKILLs itself at a chosen point. Used by test_sigkill.py.

    python crash_agent.py run RUN_ID KILL_POINT
    python crash_agent.py resume RUN_ID

Environment: KEEL_CRASH_STORE (the run store file), KEEL_CRASH_EFFECTS (the outside system).
Kill points: ``model:N`` (inside turn N's model call), ``tool:NAME:before`` / ``tool:NAME:after``
(inside the tool, before / after its effect is committed), ``append:KEY:PHASE`` (right after
that journal entry is committed), ``none``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from keel import Agent, Budget, ToolContext, UnknownOutcome, tool
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.store import JournalEntry, RunStore, open_store
from keel.testing import FunctionModel, ScriptedModel, call

KILL = os.environ.get("KEEL_CRASH_KILL", "none")
SCRIPT: list[Any] = [
    ["Reserve first.", call("reserve", {"item": "lamp"})],
    call("charge", {"amount": 40}),
    call("notify", {"message": "your lamp is on its way"}),
    "Order placed.",
]


SLOW = os.environ.get("KEEL_CRASH_SLOW") == "1"


def die_if(point: str) -> None:
    if SLOW:
        import time

        time.sleep(0.02)  # give an outside killer moments to land in
    if point == KILL:
        os.kill(os.getpid(), signal.SIGKILL)


def effects() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["KEEL_CRASH_EFFECTS"], isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS effects (tool TEXT, idem TEXT, detail TEXT)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS reserve_once ON effects (idem) "
               "WHERE tool = 'reserve'")
    return db


def effect(tool_name: str, ctx: ToolContext, detail: str, *, dedupe: bool = False) -> None:
    die_if(f"tool:{tool_name}:before")
    db = effects()
    try:
        verb = "INSERT OR IGNORE" if dedupe else "INSERT"
        db.execute(f"{verb} INTO effects VALUES (?, ?, ?)", (tool_name, ctx.idempotency_key,
                                                             detail))
    finally:
        db.close()
    die_if(f"tool:{tool_name}:after")


@tool(risk="write", idempotent=True)
def reserve(item: str, ctx: ToolContext) -> str:
    """Reserve stock (idempotent: the outside system dedupes on the idempotency key)."""
    effect("reserve", ctx, item, dedupe=True)
    return f"reserved {item}"


async def charge_reconcile(args: dict[str, Any], ctx: ToolContext) -> Any:
    db = effects()
    try:
        row = db.execute("SELECT detail FROM effects WHERE tool='charge' AND idem=?",
                         (ctx.idempotency_key,)).fetchone()
    finally:
        db.close()
    return None if row is None else f"charged {row[0]} (reconciled)"


@tool(risk="irreversible", reconcile=charge_reconcile, approval=False)
def charge(amount: int, ctx: ToolContext) -> str:
    """Charge the card (not idempotent; a reconcile hook asks the payment system)."""
    effect("charge", ctx, str(amount))
    return f"charged {amount}"


@tool(risk="write", idempotent=False)
def notify(message: str, ctx: ToolContext) -> str:
    """Send a message (not idempotent, no way to ask whether it was sent)."""
    effect("notify", ctx, message)
    return "sent"


scripted = ScriptedModel(SCRIPT)


async def model_fn(messages: list[Message], tools: list[ToolSpec],
                   settings: ModelSettings) -> ModelResponse:
    turn = sum(1 for m in messages if m.role == "assistant")
    die_if(f"model:{turn}")
    return await scripted.request(messages, tools, settings)


agent = Agent("orders", model=FunctionModel(model_fn), tools=[reserve, charge, notify],
              budget=Budget.unlimited())


def killing(store: RunStore) -> RunStore:
    """The real store, made to die right after the chosen entry is committed."""
    inner_append = store.append

    async def append(run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        await inner_append(run_id, entries, lease=lease)
        for e in entries:
            die_if(f"append:{e.key}:{e.phase}")

    store.append = append  # type: ignore[method-assign]
    return store


async def main(argv: list[str]) -> int:
    store = killing(open_store(os.environ["KEEL_CRASH_STORE"]))
    try:
        if argv[0] == "run":
            result = await agent.run("Order a lamp.", store=store, run_id=argv[1])
        else:
            result = await agent.resume(argv[1], store=store)
    except UnknownOutcome as exc:
        print(json.dumps({"error": "UnknownOutcome", "step_key": exc.step_key}))
        return 3
    finally:
        await store.close()
    print(json.dumps({"output": result.output, "replayed": result.replayed_steps}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
