"""SQLiteStore beyond the conformance suite: files, durability and several writers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from keel.core import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    StoreError,
    StoreVersionError,
    TaskNotFound,
    UserError,
)
from keel.store import SCHEMA_VERSION, RunFilter, RunRecord
from keel.store import _sqlite_schema as schema
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_entry, sample_run
from keel.testing._store_conformance_fleet import sample_task


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection that commits on success and is always closed."""
    with closing(sqlite3.connect(path)) as conn, conn:
        yield conn


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def fill(path: Path, runs: int = 3, entries: int = 4) -> None:
    async with SQLiteStore(path) as store:
        for r in range(runs):
            await store.create_run(sample_run(f"run-{r}", created_at=1.0 + r))
            await store.append(f"run-{r}", [sample_entry(i) for i in range(entries)])


# ------------------------------------------------------------------------ persistence


async def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    record = sample_run("run-1", input={"q": "héllo"})
    entries = [sample_entry(0, "k", "intent"), sample_entry(1, "k", "result"), sample_entry(2)]
    async with SQLiteStore(path) as store:
        await store.create_run(record)
        await store.create_run(sample_run("run-2", created_at=record.created_at + 1))
        await store.append("run-1", entries[:2])
        await store.append("run-1", entries[2:])
        done = record.with_status("completed", output={"a": 1}, updated_at=99.0)
        await store.update_run(done)
    async with SQLiteStore(path) as again:
        assert await again.get_run("run-1") == done
        assert await again.read_journal("run-1") == entries
        assert [r.run_id for r in await again.list_runs()] == ["run-2", "run-1"]
        await again.append("run-2", [sample_entry(0)])
    async with SQLiteStore(path) as third:
        assert await third.read_journal("run-2") == [sample_entry(0)]


async def test_wal_mode_and_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.create_run(sample_run())
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with raw(path) as conn:  # WAL is a property of the file, seen by every connection
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        meta = conn.execute("SELECT key, value FROM keel_meta").fetchall()
        assert meta == [("schema_version", str(SCHEMA_VERSION))]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                              "type = 'index' AND tbl_name = 'runs'")}
        assert {"runs_by_status", "runs_by_agent", "runs_by_created"} <= indexes


async def test_opening_is_lazy_and_parents_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.db"
    store = SQLiteStore(path)
    assert store.path == path
    await store.close()
    assert not (tmp_path / "a").exists(), "a store that was never used touched the disk"
    async with SQLiteStore(path) as store:
        assert await store.list_runs() == []
    assert path.is_file()


async def test_an_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.touch()
    async with SQLiteStore(path) as store:
        await store.create_run(sample_run())
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


async def test_a_relative_path_is_fixed_when_the_store_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("rel.db")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    async with store:
        await store.create_run(sample_run())
    assert store.path == tmp_path / "rel.db"
    assert (tmp_path / "rel.db").is_file()
    assert files_in(tmp_path / "elsewhere") == []


async def test_close_is_idempotent_and_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    await store.create_run(sample_run())
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="was closed"):
        await store.get_run("run-1")


# --------------------------------------------------------------------------- bad files

BAD_CONTENT = {
    "text": b"run_id,status\nr1,running\n" * 40,
    "random": random.Random(7).randbytes(8192),
    "short": b"SQLite",
    "header-then-garbage": b"SQLite format 3\x00" + random.Random(8).randbytes(3 * 4096 - 16),
}


@pytest.mark.parametrize("eager", [True, False], ids=["async-with", "first-call"])
@pytest.mark.parametrize("kind", sorted(BAD_CONTENT))
async def test_a_file_that_is_not_a_keel_database_is_refused_untouched(
        tmp_path: Path, kind: str, eager: bool) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(BAD_CONTENT[kind])
    store = SQLiteStore(path)
    first_use = store.__aenter__ if eager else store.list_runs
    try:
        with pytest.raises(StoreError) as info:
            await first_use()
    finally:
        await store.close()
    message = str(info.value)
    assert str(path) in message
    if kind == "header-then-garbage":
        assert "damaged" in message or "not a keel run store" in message
    else:
        assert "is not a keel run store (not an SQLite database)" in message
        assert "point keel at another file" in message
    assert path.read_bytes() == BAD_CONTENT[kind], "a refused file was modified"
    assert files_in(tmp_path) == ["runs.db"]


def _other_programs_db(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")


def _keel_meta_without_version(path: Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE keel_meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO keel_meta VALUES ('owner', 'someone')")


@pytest.mark.parametrize("make", [_other_programs_db, _keel_meta_without_version])
async def test_an_sqlite_database_of_another_program_is_refused_untouched(
        tmp_path: Path, make: object) -> None:
    path = tmp_path / "runs.db"
    assert callable(make)
    make(path)
    before = path.read_bytes()
    store = SQLiteStore(path)
    with pytest.raises(StoreVersionError, match=r"not a keel run store.*point keel at another"):
        await store.create_run(sample_run())
    await store.close()
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["runs.db"]


async def test_a_store_from_a_newer_keel_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path)
    newer = SCHEMA_VERSION + 1
    with raw(path) as conn:
        conn.execute("UPDATE keel_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    before = path.read_bytes()
    with pytest.raises(StoreVersionError) as info:
        async with SQLiteStore(path):
            pass
    assert str(info.value) == (
        f"{path} was written by a newer keel (schema {newer}, this keel reads up to "
        f"{SCHEMA_VERSION}); upgrade keel-agents (pip install -U keel-agents).")
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["runs.db"]


async def test_a_keel_store_with_garbage_pages_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path, runs=20, entries=20)
    data = bytearray(path.read_bytes())
    data[4096:] = random.Random(9).randbytes(len(data) - 4096)  # keep page 1 (the schema)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"damaged.*restore it from a backup"):
        async with SQLiteStore(path) as store:
            await store.read_journal("run-3")
    assert path.read_bytes() == bytes(data)


async def test_a_damaged_journal_page_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path, runs=5, entries=200)
    with raw(path) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'journal'"
                               ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start:start + page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))
    async with SQLiteStore(path) as store:
        assert (await store.get_run("run-0")).run_id == "run-0"
        with pytest.raises(StoreError, match="damaged"):
            await store.read_journal("run-0")


async def test_missing_keel_tables_are_reported_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path)
    with raw(path) as conn:
        conn.execute("DROP TABLE journal")
    with pytest.raises(StoreError, match="journal table is missing"):
        async with SQLiteStore(path):
            pass


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        async with SQLiteStore(tmp_path):
            pass


async def test_unreadable_json_names_the_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path, runs=2)
    with raw(path) as conn:
        conn.execute("UPDATE runs SET metadata = '{broken' WHERE run_id = 'run-0'")
        conn.execute("UPDATE journal SET data = 'nope' WHERE run_id = 'run-1' AND seq = 2")
    async with SQLiteStore(path) as store:
        with pytest.raises(StoreError, match=r"run 'run-0' .*unreadable JSON in its metadata"):
            await store.get_run("run-0")
        with pytest.raises(StoreError, match="run 'run-0'"):
            await store.list_runs()
        with pytest.raises(StoreError, match=r"run 'run-1' .*unreadable JSON in its journal "
                                             r"entry for step 'agent/turn:2/model'"):
            await store.read_journal("run-1")


# ------------------------------------------------------------------------ JSON values


async def test_values_json_cannot_hold(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        loop: list[object] = []
        loop.append(loop)
        with pytest.raises(StoreError, match=r"the input of run 'run-1'.*not JSON-able"):
            await store.create_run(sample_run(input=loop))
        await store.create_run(sample_run())
        with pytest.raises(StoreError, match="entry for step 'k' of run 'run-1'"):
            await store.append("run-1", [sample_entry(0), sample_entry(1, "k", data=loop)])
        assert await store.read_journal("run-1") == []
        # Anything else JSON has no type for is stored as its str().
        await store.append("run-1", [sample_entry(0, data={"path": tmp_path, "t": (1, 2)})])
        (entry,) = await store.read_journal("run-1")
        assert entry.data == {"path": str(tmp_path), "t": [1, 2]}


@pytest.mark.parametrize("size", [2, 32, 33, 500])
async def test_batches_of_any_size_are_atomic(tmp_path: Path, size: int) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run())
        await store.append("run-1", [sample_entry(0, "first")])
        batch = [sample_entry(i) for i in range(1, size)]
        with pytest.raises(StoreError, match="nothing of this batch"):
            await store.append("run-1", [*batch, sample_entry(size, "first")])
        with pytest.raises(RunNotFound):
            await store.append("run-2", batch)
        assert [e.key for e in await store.read_journal("run-1")] == ["first"]
        await store.append("run-1", batch)
        assert await store.read_journal("run-1") == [sample_entry(0, "first"), *batch]


async def test_errors_name_the_clashing_step(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run())
        await store.append("run-1", [sample_entry(0, "s/tool:refund#0", "intent")])
        with pytest.raises(StoreError, match=r"already has the intent entry for step "
                                             r"'s/tool:refund#0'.*nothing of this batch"):
            await store.append("run-1", [sample_entry(1, "x"),
                                         sample_entry(2, "s/tool:refund#0", "intent")])
        with pytest.raises(StoreError, match=r"the result entry for step 'y'"):
            await store.append("run-1", [sample_entry(1, "y"), sample_entry(2, "y")])
        with pytest.raises(StoreError, match="already exists"):
            await store.create_run(sample_run())
        with pytest.raises(ConfigError, match="'limit'"):
            await store.list_runs(RunFilter(limit=-1))
        with pytest.raises(ConfigError, match="'offset'"):
            await store.list_runs(RunFilter(offset=-1))
        assert isinstance(StoreError("x"), UserError)


# --------------------------------------------------------------------- several writers


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        await one.create_run(sample_run("a"))
        await two.create_run(sample_run("b"))
        await asyncio.gather(
            *(one.append("a", [sample_entry(i)]) for i in range(50)),
            *(two.append("b", [sample_entry(i)]) for i in range(50)),
            *(two.append("a", [sample_entry(i, f"from-two-{i}")]) for i in range(50)))
        assert len(await one.read_journal("b")) == 50
        assert len(await two.read_journal("a")) == 100


def _hammer(path: Path, run_id: str, n: int) -> int:
    async def work() -> int:
        async with SQLiteStore(path) as store:
            await store.create_run(sample_run(run_id))
            for i in range(n):
                if i % 3:
                    await store.append(run_id, [sample_entry(i)])
                else:
                    await store.append(run_id, [sample_entry(i, f"t{i}", "intent"),
                                                sample_entry(i, f"t{i}", "result")])
            return len(await store.read_journal(run_id))

    return asyncio.run(work())


def test_two_threads_with_their_own_stores_append_at_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_hammer, path, f"run-{t}", 300) for t in range(2)]
        counts = [f.result(timeout=120) for f in futures]
    assert counts == [400, 400]


_WRITER = r"""
import asyncio, sys
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_entry, sample_run

async def main(path, run_id, n):
    store = SQLiteStore(path)
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go" so both writers open the fresh file at once
    async with store:
        await store.create_run(sample_run(run_id))
        for i in range(n):
            if i % 2:
                await store.append(run_id, [sample_entry(i)])
            else:
                await store.append(run_id, [sample_entry(i, f"t{i}", "intent"),
                                            sample_entry(i, f"t{i}", "result")])
    print("done", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
def test_two_processes_append_to_one_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "runs.db"
    with ExitStack() as stack:
        procs = [stack.enter_context(subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"proc-{k}", "400"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for k in range(2)]
        for proc in procs:
            stack.callback(_kill_if_running, proc)
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out == "done\n", err
    counts = asyncio.run(_journal_sizes(path, ["proc-0", "proc-1"]))
    assert counts == [600, 600]


def _kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _journal_sizes(path: Path, run_ids: list[str]) -> list[int]:
    async with SQLiteStore(path) as store:
        return [len(await store.read_journal(r)) for r in run_ids]


# -------------------------------------------------------------------------- SIGKILL

_VICTIM = r"""
import asyncio, sys
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_entry

async def main(path):
    store = SQLiteStore(path)
    i = 0
    while True:
        if i % 2:
            await store.append("victim", [sample_entry(2 * i, f"step:{i}")])
        else:
            await store.append("victim", [sample_entry(2 * i, f"step:{i}", "intent"),
                                          sample_entry(2 * i + 1, f"step:{i}", "result")])
        sys.stdout.write(f"{i}\n")  # the append returned
        sys.stdout.flush()
        i += 1

asyncio.run(main(sys.argv[1]))
"""


def _read_acks(proc: subprocess.Popen[bytes], want: int, timeout: float) -> list[int]:
    """Read acknowledgement lines until ``want`` arrived; kill the child the moment they
    have (so it dies in or right after an append)."""
    assert proc.stdout is not None
    acks: list[int] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while len(acks) < want and time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                continue
            chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acks += [int(line) for line in lines]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rest = proc.stdout.read()
    acks += [int(line) for line in (buffer + rest).split(b"\n") if line]
    return acks


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
async def test_a_returned_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.create_run(sample_run("victim"))
    acks = await asyncio.to_thread(_sigkill_writer, path)
    assert len(acks) >= 200, "the child did not get going"
    async with SQLiteStore(path) as store:
        journal = await store.read_journal("victim")
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    steps = [int(e.key.split(":")[1]) for e in journal]
    last = max(acks)
    assert set(range(last + 1)) <= set(steps), "an append that returned was lost"
    expected = []  # every append is whole: intent and result together, in order
    for i in range(max(steps) + 1):
        expected += [(f"step:{i}", "result")] if i % 2 else [
            (f"step:{i}", "intent"), (f"step:{i}", "result")]
    assert [(e.key, e.phase) for e in journal] == expected


def _sigkill_writer(path: Path) -> list[int]:
    with subprocess.Popen([sys.executable, "-c", _VICTIM, str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        acks = _read_acks(proc, want=300, timeout=60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, err
    return acks


async def test_unknown_run_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path, runs=1)
    async with SQLiteStore(path) as store:
        with pytest.raises(RunNotFound, match="keel runs list"):
            await store.append("run-9", [sample_entry(0)])


# ------------------------------------------------------------- schema 2 and upgrades

#: Schema 1 as keel 1 wrote it (copied from that release's _sqlite.py; never edit).
V1_DDL = """
CREATE TABLE IF NOT EXISTS keel_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
CREATE TABLE IF NOT EXISTS runs (
        run_id         TEXT PRIMARY KEY,
        agent          TEXT NOT NULL,
        status         TEXT NOT NULL,
        target         TEXT,
        input          TEXT NOT NULL,
        output         TEXT NOT NULL,
        error          TEXT,
        usage          TEXT NOT NULL,
        metadata       TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        schema_version INTEGER NOT NULL
    );
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_agent ON runs (agent, created_at, run_id);
CREATE TABLE IF NOT EXISTS journal (
        id             INTEGER PRIMARY KEY,
        run_id         TEXT NOT NULL REFERENCES runs (run_id),
        seq            INTEGER NOT NULL,
        key            TEXT NOT NULL,
        phase          TEXT NOT NULL,
        kind           TEXT NOT NULL,
        name           TEXT NOT NULL,
        input_hash     TEXT NOT NULL,
        data           TEXT NOT NULL,
        created_at     REAL NOT NULL,
        latency_ms     REAL NOT NULL,
        schema_version INTEGER NOT NULL,
        UNIQUE (run_id, key, phase)
    );
INSERT OR IGNORE INTO keel_meta (key, value) VALUES ('schema_version', '1');
"""

V1_RUNS = [
    sample_run("old-done", status="completed", output={"answer": "shipped"},
               usage={"input_tokens": 3}, updated_at=1_700_000_100.0, schema_version=1),
    sample_run("old-susp", status="suspended", target=None, created_at=1_700_000_001.0,
               error={"type": "ModelError"}, schema_version=1),
]
V1_ENTRIES = [sample_entry(0, "k", "intent", schema_version=1),
              sample_entry(1, "k", "result", schema_version=1),
              sample_entry(2, data=["caf\u00e9", {"n": None}], schema_version=1)]


def make_v1_store(path: Path) -> None:
    """A real schema-1 file with two runs and a journal, in WAL mode like keel 1 left it."""
    with raw(path) as conn:
        conn.executescript(V1_DDL)
        for r in V1_RUNS:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.run_id, r.agent, r.status, r.target, json.dumps(r.input),
                 json.dumps(r.output), None if r.error is None else json.dumps(r.error),
                 json.dumps(r.usage), json.dumps(r.metadata), r.created_at, r.updated_at, 1))
        conn.executemany(
            "INSERT INTO journal (run_id, seq, key, phase, kind, name, input_hash, data, "
            "created_at, latency_ms, schema_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [("old-done", e.seq, e.key, e.phase, e.kind, e.name, e.input_hash,
              json.dumps(e.data), e.created_at, e.latency_ms, 1) for e in V1_ENTRIES])
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")


def layout(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index of the file, with its SQL (whitespace folded)."""
    with raw(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                            "ORDER BY name").fetchall()
    return [(t, n, " ".join(sql.split())) for t, n, sql in rows]


def meta_version(path: Path) -> str:
    with raw(path) as conn:
        return str(conn.execute("SELECT value FROM keel_meta").fetchone()[0])


async def test_a_version_1_store_is_upgraded_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    make_v1_store(path)
    assert meta_version(path) == "1"
    async with SQLiteStore(path) as store:
        for want in V1_RUNS:
            got = await store.get_run(want.run_id)
            assert got == want, "an upgraded run changed"
            assert got.lease_owner is None and got.cancel_requested is False
        assert await store.read_journal("old-done") == V1_ENTRIES
        assert [r.run_id for r in await store.list_runs()] == ["old-susp", "old-done"]
        # the new half of the seam works on the old rows
        await store.put_task(sample_task("t", "old-susp"))
        await store.resolve_task("t", {"ok": True}, by="ann",
                                 entry=sample_entry(0, "t/approval"))
        claimed = await store.claim_runs("w1", 60)
        assert [r.run_id for r in claimed] == ["old-susp"]
        await store.append("old-susp", [sample_entry(1)], lease="w1")
    assert meta_version(path) == str(SCHEMA_VERSION) == "6"
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    assert layout(path) == layout(fresh), "an upgraded file differs from a new one"
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_a_failed_upgrade_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs.db"
    make_v1_store(path)
    before = layout(path)
    failing = (*schema.UPGRADES[1], "INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setitem(schema.UPGRADES, 1, failing)
    with pytest.raises(StoreError, match="no_such_table"):
        async with SQLiteStore(path):
            pass
    assert layout(path) == before and meta_version(path) == "1", "half an upgrade was kept"
    monkeypatch.undo()
    async with SQLiteStore(path) as store:  # the real upgrade still goes through
        assert await store.read_journal("old-done") == V1_ENTRIES
    assert meta_version(path) == str(SCHEMA_VERSION)


async def test_a_damaged_version_1_store_is_refused_not_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    make_v1_store(path)
    with raw(path) as conn:
        conn.execute("DROP TABLE journal")
    with pytest.raises(StoreError, match="journal table is missing"):
        async with SQLiteStore(path):
            pass
    assert meta_version(path) == "1"


async def test_a_version_2_store_without_its_task_table_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await fill(path)
    with raw(path) as conn:
        conn.execute("DROP TABLE tasks")
    with pytest.raises(StoreError, match="tasks table is missing"):
        async with SQLiteStore(path):
            pass


def test_stores_opening_one_old_file_at_once_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    make_v1_store(path)

    def open_and_read(n: int) -> int:
        async def work() -> int:
            async with SQLiteStore(path) as store:
                await store.append("old-susp", [sample_entry(n, f"t{n}")])
                return len(await store.read_journal("old-done"))
        return asyncio.run(work())

    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(open_and_read, range(8)))
    assert counts == [3] * 8
    assert meta_version(path) == str(SCHEMA_VERSION)
    assert asyncio.run(_journal_sizes(path, ["old-susp"])) == [8]


async def test_schema_4_layout_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        conn = store._conn
        assert conn is not None
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert columns[-7:] == ["lease_owner", "lease_expires_at", "deadline_at",
                                "cancel_requested", "tenant", "user", "conversation"]
        task_columns = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
        # HumanTask.by is stored in the column keel 0.1 named resolved_by (schema unchanged)
        fields = {f.name for f in dataclasses.fields(sample_task())} - {"by"}
        assert task_columns == fields | {"resolved_by"}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index'")}
        assert {"runs_runnable", "runs_by_lease_owner", "runs_by_tenant",
                "runs_by_conversation", "tasks_by_created",
                "tasks_by_status",
                "tasks_by_kind", "tasks_by_queue", "tasks_by_run"} <= indexes

        def plan(sql: str, *params: object) -> str:
            return " / ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

        claim = plan("SELECT run_id FROM runs WHERE status = 'running' AND (lease_owner IS "
                     "NULL OR coalesce(lease_expires_at, 0) <= ?) ORDER BY updated_at, run_id "
                     "LIMIT 1", 1.0)
        assert "runs_runnable" in claim and "TEMP B-TREE" not in claim, claim
        renew = plan("UPDATE runs SET lease_expires_at = 1 WHERE lease_owner = ?", "w")
        assert "runs_by_lease_owner" in renew, renew
        tasks = plan("SELECT task_id FROM tasks WHERE kind = ? AND status = ? "
                     "ORDER BY created_at, task_id", "approval", "open")
        assert "tasks_by_kind" in tasks and "TEMP B-TREE" not in tasks, tasks
        tenant = plan("SELECT run_id FROM runs WHERE tenant = ? ORDER BY created_at DESC, "
                      "run_id DESC LIMIT 50", "acme")
        assert "runs_by_tenant" in tenant and "TEMP B-TREE" not in tenant, tenant
        thread = plan("SELECT run_id FROM runs WHERE conversation = ? ORDER BY created_at "
                      "DESC, run_id DESC LIMIT 50", "c-1")
        assert "runs_by_conversation" in thread and "TEMP B-TREE" not in thread, thread


async def test_leases_tasks_and_deadlines_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.create_run(sample_run(deadline_at=1_800_000_000.25))
        leased = await store.acquire_lease("run-1", "w1", 600)
        await store.request_cancel("run-1")
        await store.put_task(sample_task("t", "run-1"))
        claimed = await store.claim_task("t", "ann")
    async with SQLiteStore(path) as again:
        got = await again.get_run("run-1")
        assert got == dataclasses.replace(leased, cancel_requested=True)
        assert got.deadline_at == 1_800_000_000.25
        assert await again.get_task("t") == claimed
        assert await again.renew_leases("w1", 600) == {"run-1"}


# ------------------------------------------------------------- leases: the fast path


async def test_fenced_single_appends(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run())
        await store.acquire_lease("run-1", "w1", 0.01)
        await asyncio.sleep(0.05)
        # expired but not taken over: the holder may still write
        await store.append("run-1", [sample_entry(0)], lease="w1")
        with pytest.raises(StoreError, match=r"already has the result entry for step "
                                             r"'agent/turn:0/model'") as info:
            await store.append("run-1", [sample_entry(0)], lease="w1")
        assert not isinstance(info.value, LeaseLost)
        with pytest.raises(LeaseLost, match=r"run-1: this worker \(w2\) no longer holds.*"
                                            r"worker w1 does"):
            await store.append("run-1", [sample_entry(1)], lease="w2")
        with pytest.raises(RunNotFound, match="keel runs list"):
            await store.append("nope", [sample_entry(1)], lease="w1")
        await store.release_lease("run-1", "w1")
        with pytest.raises(LeaseLost, match="no worker does"):
            await store.append("run-1", [sample_entry(1)], lease="w1")
        with pytest.raises(LeaseLost):
            await store.append("run-1", [sample_entry(1), sample_entry(2)], lease="w1")
        assert await store.read_journal("run-1") == [sample_entry(0)]


# ---------------------------------------------------------------------- bad input


async def test_bad_arguments_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run(status="suspended"))
        await store.create_run(sample_run("other", status="completed", updated_at=1.0))
        for seconds in (0, -1, math.nan, math.inf, "60", True):
            with pytest.raises(ConfigError, match="'seconds'"):
                await store.acquire_lease("run-1", "w1", seconds)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="'seconds'"):
            await store.claim_runs("w1", -5)
        with pytest.raises(ConfigError, match="'seconds'"):
            await store.renew_leases("w1", math.nan)
        with pytest.raises(ConfigError, match=r"'agents'.*\['support'\]"):
            await store.claim_runs("w1", 60, agents="support")
        with pytest.raises(ConfigError, match="'limit'"):
            await store.claim_runs("w1", 60, limit=2.5)  # type: ignore[arg-type]
        assert await store.claim_runs("w1", 60, limit=-1) == []
        assert await store.claim_runs("w1", 60, agents=[]) == []
        with pytest.raises(ConfigError, match="'statuses'"):
            await store.prune_runs(before=2e9, statuses="completed")
        with pytest.raises(UserError, match="unknown run status 'done'"):
            await store.prune_runs(before=2e9, statuses=["completed", "done"])
        with pytest.raises(ConfigError, match="'waiting_on'"):
            await store.suspend_run(sample_run(), [], waiting_on="t1")
        with pytest.raises(ConfigError, match="'before'"):
            await store.prune_runs(before=None)  # type: ignore[arg-type]
        assert await store.prune_runs(before=2e9, statuses=[]) == 0
        assert {r.run_id for r in await store.list_runs()} == {"run-1", "other"}
        got = await store.get_run("run-1")
        assert got.status == "suspended" and got.lease_owner is None


async def test_task_payloads_json_cannot_hold(tmp_path: Path) -> None:
    loop: list[object] = []
    loop.append(loop)
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run(status="suspended"))
        with pytest.raises(StoreError, match=r"the data of task 't'.*not JSON-able"):
            await store.put_task(sample_task("t", "run-1", data=loop))
        await _raises_task_not_found(store, "t")
        await store.put_task(sample_task("t", "run-1"))
        with pytest.raises(StoreError, match=r"the resolution of 't'.*not JSON-able"):
            await store.resolve_task("t", loop, by="ann",
                                     entry=sample_entry(0, "t/approval"))
        with pytest.raises(StoreError, match=r"entry for step 'bad'.*not JSON-able"):
            await store.resolve_task("t", {}, by="ann",
                                     entry=sample_entry(0, "bad", data=loop))
        assert (await store.get_task("t")).status == "open"
        assert await store.read_journal("run-1") == []
        assert (await store.get_run("run-1")).status == "suspended"


async def _raises_task_not_found(store: SQLiteStore, task_id: str) -> None:
    with pytest.raises(TaskNotFound, match="keel approvals list"):
        await store.get_task(task_id)


async def test_resolve_task_refuses_a_close_record_of_another_run(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        await store.create_run(sample_run("a", status="suspended"))
        await store.create_run(sample_run("b", status="suspended"))
        await store.put_task(sample_task("t", "a"))
        close = sample_run("b", status="completed", output="hijacked")
        with pytest.raises(StoreError, match=r"belongs to run 'a'.*is run 'b'"):
            await store.resolve_task("t", {}, by="ann", close=close)
        assert (await store.get_run("b")).status == "suspended"
        assert (await store.get_task("t")).status == "open"


async def test_unreadable_task_json_names_the_task(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(path) as store:
        await store.create_run(sample_run(status="suspended"))
        await store.put_task(sample_task("t", "run-1"))
    with raw(path) as conn:
        conn.execute("UPDATE tasks SET data = '{oops' WHERE task_id = 't'")
    async with SQLiteStore(path) as store:
        with pytest.raises(StoreError, match=r"task 't' .*unreadable JSON in its data"):
            await store.get_task("t")
        with pytest.raises(StoreError, match="task 't'"):
            await store.claim_task("t", "ann")
    with raw(path) as conn:
        assert conn.execute("SELECT status FROM tasks").fetchone() == ("open",)


# ------------------------------------------------------------ several processes race

_RACER = r"""
import asyncio, json, sys
from keel.core import RunLeased, TaskConflict
from keel.store._sqlite import SQLiteStore
from keel.testing._store_conformance import sample_entry

def barrier(name):
    print(name, flush=True)
    sys.stdin.readline()  # "go": every racer starts the phase at once

async def main(path, owner, tasks, hot):
    won = {"claimed": [], "resolved": [], "leased": []}
    async with SQLiteStore(path) as store:
        barrier("claim")
        while batch := await store.claim_runs(owner, 60, agents=["worker"], limit=3):
            won["claimed"] += [r.run_id for r in batch]
        barrier("resolve")
        for i in range(tasks):
            try:  # a key of its own: only the task's state can stop a second decision
                await store.resolve_task(f"t{i}", {"by": owner}, by=owner,
                                         entry=sample_entry(i, f"h/{i}/{owner}", data=owner))
                won["resolved"].append(f"t{i}")
            except TaskConflict:
                pass
        barrier("lease")
        for i in range(hot):
            try:
                await store.acquire_lease(f"hot-{i}", owner, 60)
                won["leased"].append(f"hot-{i}")
            except RunLeased:
                pass
    print(json.dumps(won), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def _racecourse(path: Path, runs: int, tasks: int, hot: int) -> None:
    async with SQLiteStore(path) as store:
        for i in range(runs):
            await store.create_run(sample_run(f"w-{i:03d}", agent="worker",
                                              created_at=1_700_000_000.0 + i))
        await store.create_run(sample_run("humans", agent="humans", status="suspended"))
        for i in range(tasks):
            await store.put_task(sample_task(f"t{i}", "humans"))
        for i in range(hot):  # big records: a wide window between reading and writing
            await store.create_run(sample_run(f"hot-{i}", agent="hot", status="suspended",
                                              input={"doc": "x" * 300_000}))


@pytest.mark.slow
def test_processes_racing_on_one_file_never_both_win(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    runs, tasks, hot, racers = 300, 40, 40, 4
    asyncio.run(_racecourse(path, runs, tasks, hot))
    with ExitStack() as stack:
        procs = [stack.enter_context(subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), f"p{k}", str(tasks), str(hot)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for k in range(racers)]
        for proc in procs:
            stack.callback(_kill_if_running, proc)
        for phase in ("claim", "resolve", "lease"):
            _all_reach(procs, phase)
        results = [proc.communicate(timeout=120) for proc in procs]
    won = {}
    for k, (proc, (out, err)) in enumerate(zip(procs, results, strict=True)):
        assert proc.returncode == 0, err
        won[f"p{k}"] = json.loads(out)
    asyncio.run(_check_race(path, won, runs, tasks, hot))


def _all_reach(procs: list[subprocess.Popen[str]], phase: str) -> None:
    """Wait until every racer is at ``phase``, then let them all go."""
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"{phase}\n", proc.communicate(timeout=60)[1]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


async def _check_race(path: Path, won: dict[str, dict[str, list[str]]], runs: int,
                      tasks: int, hot: int) -> None:
    for what, total in (("claimed", runs), ("resolved", tasks), ("leased", hot)):
        every = [x for w in won.values() for x in w[what]]
        twice = sorted({x for x in every if every.count(x) > 1})
        assert not twice, f"{what}: won by two racers: {twice}"
        assert len(every) == total, f"{what}: {len(every)} of {total} were won"
    async with SQLiteStore(path) as store:
        for owner, w in won.items():
            for run_id in w["claimed"] + w["leased"]:
                assert (await store.get_run(run_id)).lease_owner == owner
            for task_id in w["resolved"]:
                assert (await store.get_task(task_id)).by == owner
        winners = {t: o for o, w in won.items() for t in w["resolved"]}
        journal = await store.read_journal("humans")
        assert sorted(e.key for e in journal) == sorted(f"h/{t[1:]}/{o}"
                                                        for t, o in winners.items())
        run: RunRecord = await store.get_run("humans")
        assert run.status == "running"
