"""The step allowance with nested steps: a supervisor's delegation is a tool step whose work
is its worker's model requests and tool calls. Counting the delegation and the first nested
step both against an allowance of one paused before the nested step on every execution, so
the run never moved (found by the Temporal parity test of a supervisor). Now the first new
step nested in a counted step uses its parent's unit: every execution runs exactly one new
model request or tool call that does work, and the run finishes with the same journal as
without an allowance."""

from __future__ import annotations

from collections import Counter
from typing import Any

from keel import Agent, MemoryStore, tool
from keel.patterns import Supervisor
from keel.runtime import Launch, Paused, execute
from keel.testing import ScriptedModel, call

LEAVES: list[str] = []


@tool(risk="read")
def note(topic: str) -> str:
    """A note on a topic."""
    LEAVES.append(f"note:{topic}")
    return f"notes on {topic}"


def _desk() -> Supervisor:
    a = Agent("a", model=ScriptedModel([call("note", {"topic": "x"}), "a done"]), tools=[note])
    b = Agent("b", model=ScriptedModel([call("note", {"topic": "y"}), "b done"]), tools=[note])
    lead = Agent("lead", model=ScriptedModel([
        [call("ask_a", {"task": "x?"}), call("ask_b", {"task": "y?"})], "both done"]))
    return Supervisor("desk", lead=lead, workers=[a, b])


def _leaf_results(journal: list[Any]) -> list[str]:
    """Results of steps that did work (not the delegations, which only contain work)."""
    return [e.key for e in journal if e.phase == "result" and e.kind in ("model", "tool")
            and not e.key.rsplit("/", 1)[-1].startswith(("tool:ask_a", "tool:ask_b"))]


async def test_nested_steps_use_their_parents_unit_and_the_run_moves() -> None:
    LEAVES.clear()
    whole = MemoryStore()
    expected = await execute(_desk(), whole, Launch(input="go", run_id="w"))
    LEAVES.clear()
    store = MemoryStore()
    done = 0
    for n in range(40):
        launch = (Launch(input="go", run_id="s", step_allowance=1) if n == 0
                  else Launch(resume_id="s", step_allowance=1))
        before = _leaf_results(await store.read_journal("s")) if n else []
        try:
            result = await execute(_desk(), store, launch)
        except Paused:
            after = _leaf_results(await store.read_journal("s"))
            assert len(after) == len(before) + 1  # exactly one step with work, every time
            done += 1
            continue
        break
    else:
        raise AssertionError("the run never finished")
    assert result.output == expected.output == "both done"
    assert Counter(LEAVES) == {"note:x": 1, "note:y": 1}  # each tool once, never again
    full = Counter((e.key, e.phase) for e in await whole.read_journal("w"))
    assert Counter((e.key, e.phase) for e in await store.read_journal("s")) == full
    # 8 steps with work (2 lead requests, 2 x (2 requests + 1 call) by the workers): 7
    # executions paused after one each, the 8th ran the last and finished
    assert done == 7
