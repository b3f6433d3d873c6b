"""A multi-step agent whose tools change an outside system (a separate SQLite file), run in a
child process that SIGKILLs itself at a chosen point. Used by test_sigkill.py.

    python crash_agent.py run RUN_ID
    python crash_agent.py resume RUN_ID

The turns: a read-only stock check, an idempotent reservation, a charge (not idempotent,
with a reconcile hook, exempt from approval), a notification (not idempotent, no reconcile),
then the answer. Environment: see ``_child`` (store URL, outside system, kill point,
durability mode). Kill points: ``model:N`` (inside turn N's model call),
``tool:NAME:before`` / ``tool:NAME:after`` (inside the tool, before / after its effect is
committed), ``append:KEY:PHASE`` (right after that journal entry is committed), ``none``.

Exit codes: 0 completed, 3 UnknownOutcome, 5 the run is leased by another live process or
already finished (the last line of stdout is JSON in each case).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from _child import (
    configure,
    die_if,
    durability,
    effect,
    executing,
    note_call,
    open_killing_store,
    reconcile_from_outside,
)

from keel import Agent, Budget, RunLeased, StoreError, ToolContext, UnknownOutcome, tool
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.testing import FunctionModel, ScriptedModel, call

AGENT = "orders"
SCRIPT: list[Any] = [
    ["Check the stock first.", call("stock", {"item": "lamp"})],
    ["Reserve it.", call("reserve", {"item": "lamp"})],
    call("charge", {"amount": 40}),
    call("notify", {"message": "your lamp is on its way"}),
    "Order placed.",
]


@tool
def stock(item: str, ctx: ToolContext) -> int:
    """How many are in stock (read-only: no effect outside, safe to repeat)."""
    with executing(ctx.step_key):
        die_if("tool:stock:before")
        die_if("tool:stock:after")
    return 3


@tool(risk="write", idempotent=True)
def reserve(item: str, ctx: ToolContext) -> str:
    """Reserve stock (idempotent: the outside system dedupes on the idempotency key)."""
    with executing(ctx.step_key):
        effect("reserve", "reserve", ctx, item, dedupe=True)
    return f"reserved {item}"


@tool(risk="irreversible", reconcile=reconcile_from_outside("charge"), approval=False)
def charge(amount: int, ctx: ToolContext) -> str:
    """Charge the card (not idempotent; a reconcile hook asks the payment system)."""
    with executing(ctx.step_key):
        effect("charge", "charge", ctx, str(amount))
    return f"charged {amount}"


@tool(risk="write", idempotent=False)
def notify(message: str, ctx: ToolContext) -> str:
    """Send a message (not idempotent, no way to ask whether it was sent)."""
    with executing(ctx.step_key):
        effect("notify", "notify", ctx, message)
    return "sent"


scripted = ScriptedModel(SCRIPT, record_requests=False)


async def model_fn(messages: list[Message], tools: list[ToolSpec],
                   settings: ModelSettings) -> ModelResponse:
    turn = sum(1 for m in messages if m.role == "assistant")
    key = f"{AGENT}/turn:{turn}/model"
    note_call(key, "start")
    die_if(f"model:{turn}")
    response = await scripted.request(messages, tools, settings)
    note_call(key, "end")
    return response


def build_agent() -> Agent[str]:
    return Agent(AGENT, model=FunctionModel(model_fn), tools=[stock, reserve, charge, notify],
                 budget=Budget.unlimited(), durability=durability())


async def main(argv: list[str]) -> int:
    configure()
    agent = build_agent()
    store = open_killing_store()
    try:
        if argv[0] == "run":
            result = await agent.run("Order a lamp.", store=store, run_id=argv[1])
        else:
            result = await agent.resume(argv[1], store=store)
    except UnknownOutcome as exc:
        print(json.dumps({"error": "UnknownOutcome", "step_key": exc.step_key}))
        return 3
    except (RunLeased, StoreError) as exc:  # another process continues (or finished) the run
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 5
    finally:
        await store.close()
    print(json.dumps({"output": result.output, "replayed": result.replayed_steps}))
    return 0


def main_sync(argv: list[str]) -> int:
    return asyncio.run(main(argv))


if __name__ == "__main__":
    sys.exit(main_sync(sys.argv[1:]))
