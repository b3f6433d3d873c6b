"""examples/supervisor.py: the editor asks both workers at once and sees only their answers."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from keel import MemoryStore
from keel.guard import undelimit
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "supervisor.py"


async def test_the_editor_delegates_to_both_workers_and_synthesizes(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    assert "about 10% cheaper" in result.output
    last = example.editor.model.requests[-1]
    answers = {p.tool_name: undelimit(p.content) for m in last for p in m.tool_results}
    assert answers == {
        "ask_researcher": "Heat pumps deliver about 3 kWh of heat per kWh of electricity (COP 3).",
        "ask_analyst": "Heat from a heat pump costs 0.10 per kWh; from a gas boiler 0.111."}
    seen = "".join(p.content for m in last for p in m.tool_results)
    assert "heat_cost" not in seen and "search_notes" not in seen
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert "desk/editor/turn:0/tool:ask_analyst#0/analyst/turn:0/tool:heat_cost#1" in keys
    assert "desk/editor/turn:0/tool:ask_researcher#0/researcher/turn:0/tool:search_notes#0" in keys
    assert (await replay_run(example.flow, result.run_id, store=store)).identical
