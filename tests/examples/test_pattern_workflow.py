"""examples/workflow.py: parse, fan out, gate, branch to the reviewing agent."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import Budget, MemoryStore
from keel.patterns import GateFailed, WorkflowError
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflow.py"


async def test_a_large_refund_goes_to_the_reviewer(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    assert result.output.startswith("Approved") and "249.00" in result.output
    done = {e.key: e.data for e in await store.read_journal(result.run_id)
            if e.phase == "result"}
    assert done["refunds/parse_request"] == {"email": "ana@example.com", "order_id": 1001}
    assert done["refunds/gather/order"]["value"]["amount"] == 249.0
    assert done["refunds/gather/join"]["past_refunds"] == 0
    assert done["refunds/order_exists"] == {"passed": True, "reason": ""}
    assert done["refunds/amount/route"] == "then"
    assert "refunds/amount/then/turn:0/model" in done
    assert (await replay_run(example.flow, result.run_id, store=store)).identical


async def test_small_refunds_are_automatic_and_unknown_orders_stop_at_the_gate(
        example: ModuleType) -> None:
    store = MemoryStore()
    small = await example.flow.run("bo@example.com: kettle 1002 leaks", store=store)
    assert small.output == "Refund of 39.00 for your kettle is on its way."
    assert example.reviewer.model.requests == []
    with pytest.raises(GateFailed, match="order_exists"):
        await example.flow.run("bo@example.com: order 9999?", store=store)
    with pytest.raises(WorkflowError, match="'parse_request' failed"):
        await example.flow.run("no order here", store=store)


def test_the_worst_case_is_known_up_front(example: ModuleType) -> None:
    assert example.flow.worst_case_budget() == Budget(
        max_steps=9, max_tokens=20_000, max_cost_usd=0.05, max_wall_seconds=90.0)
