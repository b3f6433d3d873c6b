"""examples/marketplace.py runs offline and shows what its docstring claims."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.runtime import replay_run
from tests.examples.conftest import live_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "marketplace.py"


async def test_the_failed_award_goes_to_the_careful_translator(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    market = result.output
    assert [b.bidder for b in market.bids] == ["fast", "careful"]
    assert market.discarded[0]["bidder"] == "boastful"
    assert "outside 0..1" in market.discarded[0]["reason"]
    assert [(a.bidder, a.ok) for a in market.attempts] == [("fast", False), ("careful", True)]
    assert market.winner == "careful" and "«" in market.output
    journal = {e.key: e.data for e in await store.read_journal(result.run_id)
               if e.phase == "result"}
    assert journal["translate/award:0/outcome"]["reason"] == "verify() rejected the result"
    assert (await replay_run(example.flow, result.run_id, store=store)).identical


def test_it_follows_keel_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")
    module = live_example(EXAMPLE)
    assert all(b.model == "openai:gpt-4o-mini" for b in module.flow.bidders)
