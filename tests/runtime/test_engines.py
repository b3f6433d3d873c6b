"""The notice to another engine after a decision or a cancel (keel.runtime.notify_engine):
sent to the notifier registered for the engine a run's metadata names, and never an error
for the caller, whose decision is already recorded (the engine's poll is the guarantee)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from keel.runtime import _engines, notify_engine, register_engine
from keel.store import ENGINE_KEY, MemoryStore, RunRecord

told: list[str] = []


async def remember(record: RunRecord) -> None:
    """A notifier importable by its ``module:function`` path."""
    told.append(record.run_id)


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    saved = dict(_engines._NOTIFIERS)
    _engines._NOTIFIERS.clear()
    told.clear()
    yield
    _engines._NOTIFIERS.clear()
    _engines._NOTIFIERS.update(saved)


async def _store(**metadata: Any) -> MemoryStore:
    store = MemoryStore()
    now = time.time()
    await store.create_run(RunRecord(run_id="r1", agent="a", status="suspended", input="x",
                                     created_at=now, updated_at=now, metadata=metadata))
    return store


async def test_nothing_registered_sends_nothing_and_reads_nothing() -> None:
    assert await notify_engine(MemoryStore(), "no-such-run") is False


async def test_the_engine_named_by_the_run_is_told_by_its_module_path() -> None:
    register_engine("elsewhere", f"{__name__}:remember")
    store = await _store(**{ENGINE_KEY: "elsewhere"})
    assert await notify_engine(store, "r1") is True
    assert await notify_engine(store, "r1") is True  # the loaded notifier is kept
    assert told == ["r1", "r1"]
    assert _engines._NOTIFIERS["elsewhere"] is remember


async def test_runs_of_keel_or_of_unknown_engines_and_unknown_runs_are_not_told() -> None:
    register_engine("elsewhere", remember)
    assert await notify_engine(await _store(), "r1") is False
    assert await notify_engine(await _store(**{ENGINE_KEY: "other"}), "r1") is False
    assert await notify_engine(await _store(**{ENGINE_KEY: "elsewhere"}), "nope") is False
    assert told == []


async def test_a_notifier_that_cannot_load_or_fails_changes_nothing_for_the_caller() -> None:
    register_engine("gone", "keel_no_such_module:notify")
    register_engine("broken", f"{__name__}:no_such_function")

    async def fails(record: RunRecord) -> None:
        raise ConnectionError("the engine's server is down")

    register_engine("down", fails)
    for engine in ("gone", "broken", "down"):
        assert await notify_engine(await _store(**{ENGINE_KEY: engine}), "r1") is False
