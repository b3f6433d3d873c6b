"""examples/marketplace.py runs offline and shows what its docstring claims."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.runtime import replay_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "marketplace.py"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    spec = importlib.util.spec_from_file_location("_keel_example_marketplace", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


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
    spec = importlib.util.spec_from_file_location("_keel_example_marketplace_live", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert all(b.model == "openai:gpt-4o-mini" for b in module.flow.bidders)
