"""The default SQLite store (and one named by URL) stays open across runs of the process:
one store per file, working directory and thread; a changed KEEL_STORE, a replaced file, an
ended thread or a fork gets a new one; the process closes them at exit."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from keel import Agent, StoreError, open_store, tool
from keel.runtime._kept_stores import close_kept, kept_stores
from keel.store._sqlite import SQLiteStore
from keel.testing import ScriptedModel, call


@pytest.fixture(autouse=True)
def _fresh_kept() -> Iterator[None]:
    close_kept()
    yield
    close_kept()


@tool
def lookup(i: int) -> str:
    """Look up item i."""
    return f"item {i}"


def agent() -> Agent[str]:
    return Agent("kept", model=ScriptedModel([call("lookup", {"i": 1}), "done"] * 50),
                 tools=[lookup])


async def run_ids(url: str) -> set[str]:
    store = open_store(url)
    try:
        return {r.run_id for r in await store.list_runs()}
    finally:
        await store.close()


def test_runs_without_store_share_one_open_store(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    monkeypatch.setenv("KEEL_STORE", url)
    a = agent()
    first = a.run_sync("one")
    [store] = kept_stores()
    second = a.run_sync("two")
    assert kept_stores() == [store]  # the same object, still open
    assert store.path == tmp_path / "runs.db"
    # each run sees the other's, and so does anyone else reading the file
    assert {r.run_id for r in asyncio.run(store.list_runs())} == {first.run_id,
                                                                    second.run_id}
    assert asyncio.run(run_ids(url)) == {first.run_id, second.run_id}


def test_a_changed_keel_store_opens_the_new_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    a = agent()
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/one.db")
    first = a.run_sync("one")
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/two.db")
    second = a.run_sync("two")
    assert [s.path.name for s in kept_stores()] == ["one.db", "two.db"]
    assert asyncio.run(run_ids(f"sqlite:///{tmp_path}/one.db")) == {first.run_id}
    assert asyncio.run(run_ids(f"sqlite:///{tmp_path}/two.db")) == {second.run_id}


def test_a_relative_default_follows_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_STORE")
    a = agent()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = a.run_sync("one")
    monkeypatch.chdir(tmp_path / "b")
    second = a.run_sync("two")
    assert [s.path for s in kept_stores()] == [tmp_path / "a/.keel/runs.db",
                                               tmp_path / "b/.keel/runs.db"]
    assert asyncio.run(run_ids(f"{tmp_path}/a/.keel/runs.db")) == {first.run_id}
    assert asyncio.run(run_ids(f"{tmp_path}/b/.keel/runs.db")) == {second.run_id}


def test_a_deleted_store_file_is_opened_afresh(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/store/runs.db")
    a = agent()
    a.run_sync("one")
    [old] = kept_stores()
    shutil.rmtree(tmp_path / "store")
    second = a.run_sync("two")
    [new] = kept_stores()
    assert new is not old
    assert asyncio.run(run_ids(f"sqlite:///{tmp_path}/store/runs.db")) == {second.run_id}


def test_a_url_passed_as_store_is_kept_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/named.db"
    a = agent()
    first = a.run_sync("one", store=url)
    second = a.run_sync("two", store=url)
    assert len(kept_stores()) == 1
    assert asyncio.run(run_ids(url)) == {first.run_id, second.run_id}


def test_memory_urls_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", "memory:")
    agent().run_sync("one")
    assert kept_stores() == []


def test_each_thread_has_its_own_store_closed_after_the_thread_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/runs.db")
    a = agent()
    a.run_sync("main thread")
    [mine] = kept_stores()
    seen: list[SQLiteStore] = []

    def in_thread() -> None:
        a.run_sync("other thread")
        seen.extend(s for s in kept_stores() if s is not mine)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    [theirs] = seen
    monkeypatch.setenv("KEEL_STORE", f"sqlite:///{tmp_path}/other.db")
    a.run_sync("a new file: the ended thread's store is closed")
    assert theirs not in kept_stores() and mine in kept_stores()
    with pytest.raises(StoreError, match="was closed"):
        asyncio.run(theirs.list_runs())
    assert len(asyncio.run(run_ids(f"sqlite:///{tmp_path}/runs.db"))) == 2


def _child(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_STORE"}
    env["PYTHONWARNINGS"] = "error"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


_PRELUDE = """
    import os, sqlite3
    from keel import Agent, tool
    from keel.testing import ScriptedModel, call

    @tool(risk="read")
    def lookup(i: int) -> str:
        return f"item {i}"

    agent = Agent("kept", model=ScriptedModel([call("lookup", {"i": 1}), "done"] * 50),
                  tools=[lookup])
"""


def test_the_process_closes_the_kept_store_at_exit(tmp_path: Path) -> None:
    out = _child(_PRELUDE + """
    agent.run_sync("one")
    agent.run_sync("two")
    assert os.path.exists(".keel/runs.db-wal")  # open: the write-ahead log is still there
    print("ran")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ran" and out.stderr == ""
    # closed cleanly: the last connection folds the log back into the file and removes it
    assert not (tmp_path / ".keel/runs.db-wal").exists()
    with closing(sqlite3.connect(tmp_path / ".keel/runs.db")) as db:
        assert db.execute("SELECT count(*) FROM runs WHERE status = 'completed'"
                          ).fetchone() == (2,)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_store(tmp_path: Path) -> None:
    out = _child(_PRELUDE + """
    from keel.runtime._kept_stores import kept_stores
    agent.run_sync("parent before")
    [parents] = kept_stores()
    pid = os.fork()
    if pid == 0:
        agent.run_sync("child")
        [childs] = kept_stores()
        os._exit(0 if childs is not parents else 3)
    _, status = os.waitpid(pid, 0)
    agent.run_sync("parent after")
    assert kept_stores() == [parents]
    print("child", os.waitstatus_to_exitcode(status))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "child 0"
    with closing(sqlite3.connect(tmp_path / ".keel/runs.db")) as db:
        assert sorted(r[0] for r in db.execute("SELECT input FROM runs")) == [
            '"child"', '"parent after"', '"parent before"']
