"""Approval gate: a refund over 100 waits for a person, then runs exactly once.

``agent`` looks up an order (read-only, runs at once) and then calls ``refund``, an
``irreversible`` tool. Refunds of 100 or less run straight away; above that the run suspends
(status ``suspended``, the process may exit) until a reviewer decides with
``keel approvals approve|deny``. The decision resumes the run from its journal, in this process
or any other: the lookup is not repeated and the refund runs once, with the arguments the
reviewer approved. Runs offline on a scripted model (no LLM is called):

    keel run examples/approval_gate.py:agent "Order A-1042 never arrived; refund me."
    keel approvals list
    keel approvals approve ap-... --comment "carrier confirmed the loss"
    keel resume RUN_ID

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to try it on a real model.
"""

from __future__ import annotations

import os

from keel import Agent, ApprovalPolicy, ApprovalRule, tool
from keel.testing import ScriptedModel, call

ORDERS = {"A-1042": {"amount": 249.0, "status": "lost by carrier"}}


@tool(risk="read")
def lookup_order(order_id: str) -> dict[str, object]:
    """Look up an order's amount and delivery status."""
    order = ORDERS.get(order_id)
    if order is None:
        raise ValueError(f"no order {order_id!r}")
    return {"order_id": order_id, **order}


@tool(risk="write", idempotent=False)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (money leaves the company)."""
    return f"refunded {amount:.2f} for {order_id}"


SCRIPT = [
    call("lookup_order", {"order_id": "A-1042"}),
    call("refund", {"order_id": "A-1042", "amount": 249.0}),
    "I refunded 249.00 for order A-1042. Sorry it never arrived.",
]

INPUT = "Order A-1042 never arrived; please refund me."
#: `keel demo` plays the reviewer: it approves the pending refund, then resumes the run.
REVIEW = {"approve": True, "comment": "carrier confirmed the loss", "by": "demo reviewer"}

agent = Agent(
    "refunds",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(SCRIPT),
    instructions="You handle refunds. Look the order up before refunding it.",
    tools=[lookup_order, refund],
    approval=ApprovalPolicy(rules=(ApprovalRule("refund", lambda a: a["amount"] > 100,
                                                "refunds over 100 need a person"),)),
)

if __name__ == "__main__":
    import asyncio

    from keel import ApprovalRequired, decide_approval, open_store
    from keel.runtime import default_store_url

    async def main() -> None:
        store = open_store(default_store_url())  # .keel/runs.db, or KEEL_STORE
        try:
            await agent.run(INPUT, store=store)
        except ApprovalRequired as waiting:
            print(f"suspended: {waiting.message}")
            for approval_id in waiting.approval_ids:
                await decide_approval(approval_id, store=store, approve=True, by="you",
                                      comment=str(REVIEW["comment"]))
            result = await agent.resume(waiting.run_id or "", store=store)
            print(result.output)
        finally:
            await store.close()

    asyncio.run(main())
