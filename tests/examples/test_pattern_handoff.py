"""examples/handoff.py: triage hands to billing with a reason; billing refunds once."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from keel import MemoryStore
from keel.core import ToolCallPart
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "handoff.py"


async def test_triage_hands_to_billing_which_refunds_once(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    assert result.output.startswith("I refunded the duplicate charge of 49.00")
    journal = await store.read_journal(result.run_id)
    [handoff] = [e for e in journal if e.kind == "handoff"]
    assert (handoff.key, handoff.data["from"], handoff.data["to"]) == (
        "desk/hop:0/handoff", "triage", "billing")
    assert handoff.data["reason"] == "double charge of 49.00 on A-1001"
    refunds = [e for e in journal if e.kind == "tool" and e.name == "refund"]
    assert [e.phase for e in refunds] == ["intent", "result"]
    first = example.billing.model.requests[0]
    assert not any(isinstance(p, ToolCallPart) for m in first for p in m.parts)
    assert "billing will sort that out" in first[2].text
    names = sorted(s.name for s in example.flow.members["billing"].tool_plan().specs)
    assert names == ["refund", "transfer_to_human"]  # billing may not hand back to triage
    assert (await replay_run(example.flow, result.run_id, store=store)).identical
