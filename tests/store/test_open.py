"""open_store: from a URL or a path to a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.core import UserError
from keel.store import MemoryStore, RunStore, open_store
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_run


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _use(store: RunStore) -> None:
    async with store:
        await store.create_run(sample_run())
        assert [r.run_id for r in await store.list_runs()] == ["run-1"]


@pytest.mark.parametrize("url", ["memory:", "memory", ":memory:"])
async def test_memory(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, MemoryStore)
    await _use(store)


async def test_sqlite_url_with_a_relative_path_is_relative_to_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "rel.db"
    await _use(store)
    assert (tmp_path / "rel.db").is_file()


async def test_sqlite_url_with_a_relative_path_in_a_new_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///.keel/runs.db")
    assert isinstance(store, SQLiteStore)
    await _use(store)
    assert (tmp_path / ".keel" / "runs.db").is_file()


async def test_sqlite_url_with_an_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "path.db"
    assert target.is_absolute()
    store = open_store(f"sqlite:///{target}")  # sqlite:////tmp/.../abs/path.db
    assert isinstance(store, SQLiteStore)
    assert store.path == target
    await _use(store)
    assert target.is_file()


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
async def test_a_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            relative: bool) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("plain.db" if relative else str(tmp_path / "plain.db"))
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "plain.db"
    await _use(store)
    assert (tmp_path / "plain.db").is_file()


async def test_opening_does_not_touch_the_disk(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "later" / "runs.db"))
    await store.close()
    assert _names(tmp_path) == []


@pytest.mark.parametrize("url", ["mysql://x", "https://example.com/runs.db", "sqlite://"])
def test_an_unsupported_url_is_a_user_error(url: str) -> None:
    with pytest.raises(UserError, match=r"cannot open run store .*use 'memory:'"):
        open_store(url)
