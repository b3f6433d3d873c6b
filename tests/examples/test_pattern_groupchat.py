"""examples/group_chat.py runs offline and shows what its docstring claims."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from keel import MemoryStore
from keel.runtime import replay_run
from tests.examples.conftest import live_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "group_chat.py"


async def test_the_editor_approves_after_two_rounds(example: ModuleType) -> None:
    store = MemoryStore()
    result = await example.flow.run(example.INPUT, store=store)
    chat = result.output
    assert chat.speakers == ["writer", "checker", "editor"] * 2
    assert chat.stopped_by == "keyword" and chat.final.endswith("APPROVED")
    seen = [m.text for m in example.checker.model.requests[0]]
    assert any(text.startswith("[writer]: Draft: keel 1.0") for text in seen)
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert "launch/turn:5/stop" in keys and "launch/turn:6/select" not in keys
    assert (await replay_run(example.flow, result.run_id, store=store)).identical


def test_it_follows_keel_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")
    module = live_example(EXAMPLE)
    assert all(peer.model == "openai:gpt-4o-mini" for peer in module.flow.peers)
