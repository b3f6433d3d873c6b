"""examples/reflection.py: the draft fails two checks, the revision passes, the loop stops."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reflection.py"


async def test_the_revision_passes_every_check_and_the_loop_stops(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    out = result.output
    assert out.stopped == "passed" and out.rounds == 2 and out.best_round == 1
    assert out.best == example.DRAFTS[1] and out.score == pytest.approx((1 + 1 + 0.8) / 3)
    failed = {c.name: c.message for c in out.history[0].checks if not c.passed}
    assert failed == {"json_schema": "(root): 'bullets' is a required property",
                      "calm tone": "do not use exclamation marks"}
    assert len(example.writer.model.requests) == 2
    critiques = [e.key for e in await store.read_journal(result.run_id)
                 if e.kind == "critique" and e.phase == "result"]
    assert critiques == ["blurb/round:0/critique", "blurb/round:1/critique"]
    assert (await replay_run(example.flow, result.run_id, store=store)).identical
