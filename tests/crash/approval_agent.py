"""An agent behind approval gates, run in a child process that SIGKILLs itself at a chosen
point. Used by test_sigkill_approvals.py.

    python approval_agent.py run RUN_ID
    python approval_agent.py resume RUN_ID
    python approval_agent.py decide RUN_ID APPROVAL_ID     (decide as the reviewer would)

The turns: a read-only lookup; a refund (irreversible: it waits for approval); a turn with
a second lookup and two payouts in parallel (each waits for its own approval); the answer.
The reviewer (:data:`REVIEWER`) approves the refund with an edited amount (30, not 40),
approves the payout to alice and denies the payout to bob. Gated calls are labelled by
their step: ``refund#0``, ``wire#0`` (alice), ``wire#1`` (bob).

Kill points (besides ``none``): ``model:N``, ``tool:lookup:ORDER:before|after``,
``tool:refund:before|after``, ``tool:wire:TO:before|after`` (around the effect),
``append:KEY:PHASE`` (right after that journal entry is committed),
``put_task:LABEL`` (right after the approval task is stored),
``suspend:LABELS:before|after`` (around ``suspend_run``, LABELS joined by ``+``),
``decided:LABEL`` (``decide`` only: right after the decision is committed).
``KEEL_CRASH_DECIDE_INLINE=1`` makes the reviewer decide each request on a second store
connection right after its task is stored, before the run suspends: the run finds every
decision in when it parks, and goes on in the same process.

Exit codes: 0 completed or decided, 4 suspended (waiting for approvals), 3 UnknownOutcome;
the last line of stdout is JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
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
    store_url,
)

from keel import Agent, ApprovalRequired, Budget, ToolContext, UnknownOutcome, tool
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.runtime import decide_approval
from keel.runtime._approvals import approval_id
from keel.store import HumanTask, RunStore, open_store
from keel.testing import FunctionModel, ScriptedModel, call

AGENT = "shop"
SCRIPT: list[Any] = [
    ["Let me look the order up.", call("lookup", {"order": 7})],
    ["Order 7 was paid twice; refunding 40.", call("refund", {"order": 7, "amount": 40})],
    ["Now the payouts.", call("lookup", {"order": 8}), call("wire", {"to": "alice", "amount": 10}),
     call("wire", {"to": "bob", "amount": 20})],
    "All done.",
]
GATES = {  # label -> the gate's step key
    "refund#0": f"{AGENT}/turn:1/tool:refund#0/approval",
    "wire#0": f"{AGENT}/turn:2/tool:wire#0/approval",
    "wire#1": f"{AGENT}/turn:2/tool:wire#1/approval",
}
#: label -> (approve, comment, edited arguments): what the reviewer decides.
REVIEWER: dict[str, tuple[bool, str, dict[str, Any] | None]] = {
    "refund#0": (True, "only the duplicate part", {"order": 7, "amount": 30}),
    "wire#0": (True, "", None),
    "wire#1": (False, "bob is not a customer", None),
}


def labels(run_id: str) -> dict[str, str]:
    """approval id -> label, for this run."""
    return {approval_id(run_id, key): label for label, key in GATES.items()}


@tool
def lookup(order: int, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up (read-only)."""
    with executing(ctx.step_key):
        die_if(f"tool:lookup:{order}:before")
        die_if(f"tool:lookup:{order}:after")
    return {"order": order, "paid": 2}


@tool(risk="irreversible", reconcile=reconcile_from_outside("refund"))
def refund(order: int, amount: int, ctx: ToolContext) -> str:
    """Refund money to the customer (irreversible: needs approval)."""
    with executing(ctx.step_key):
        effect("refund", "refund", ctx, f"{order}:{amount}")
    return f"refunded {amount}"


@tool(risk="irreversible", reconcile=reconcile_from_outside("wire"))
def wire(to: str, amount: int, ctx: ToolContext) -> str:
    """Pay money out (irreversible: needs approval)."""
    with executing(ctx.step_key):
        effect("wire", f"wire:{to}", ctx, f"{to}:{amount}")
    return f"sent {amount} to {to}"


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
    return Agent(AGENT, model=FunctionModel(model_fn), tools=[lookup, refund, wire],
                 budget=Budget.unlimited(), durability=durability())


async def decide(store: RunStore, task_id: str, label: str) -> None:
    approve, comment, edited = REVIEWER[label]
    await decide_approval(task_id, store=store, approve=approve, by="ann", comment=comment,
                          edited_args=edited)


async def main(argv: list[str]) -> int:
    configure()
    run_id = argv[1]
    names = labels(run_id)

    async def decide_inline(task: HumanTask) -> None:
        async with open_store(store_url()) as reviewer:  # another connection
            if (await reviewer.get_task(task.task_id)).status != "resolved":
                await decide(reviewer, task.task_id, names[task.task_id])

    inline = os.environ.get("KEEL_CRASH_DECIDE_INLINE") == "1"
    store = open_killing_store(lambda task_id: names.get(task_id, task_id),
                               decide_inline if inline else None)
    try:
        if argv[0] == "decide":
            await decide(store, argv[2], names[argv[2]])
            die_if(f"decided:{names[argv[2]]}")
            print(json.dumps({"decided": argv[2]}))
            return 0
        agent = build_agent()
        try:
            if argv[0] == "run":
                result = await agent.run("Sort out orders 7 and 8.", store=store, run_id=run_id)
            else:
                result = await agent.resume(run_id, store=store)
        except ApprovalRequired as exc:
            print(json.dumps({"waiting": list(exc.approval_ids)}))
            return 4
        except UnknownOutcome as exc:
            print(json.dumps({"error": "UnknownOutcome", "step_key": exc.step_key}))
            return 3
    finally:
        await store.close()
    print(json.dumps({"output": result.output, "replayed": result.replayed_steps}))
    return 0


def main_sync(argv: list[str]) -> int:
    return asyncio.run(main(argv))


if __name__ == "__main__":
    sys.exit(main_sync(sys.argv[1:]))
