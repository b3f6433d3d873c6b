"""Test-side helpers of the SIGKILL tests: what a test reads back after a kill (the run,
its journal and tasks from the store; effects and step executions from the outside system),
and the harness that starts children through the fork server."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from keel.core import RunNotFound
from keel.store import HumanTask, JournalEntry, RunRecord, TaskFilter, open_store
from tests.crash._forkserver import Finished, ForkServer, Spawned

POSTGRES_URL = os.environ.get("KEEL_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Snapshot:
    """What the store and the outside system hold at one moment."""

    record: RunRecord | None
    journal: list[JournalEntry]
    tasks: list[HumanTask]
    effects: list[tuple[str, str, str]]  # (tool, idempotency key, detail)
    starts: Counter[str]  # step key -> executions begun
    ends: Counter[str]  # step key -> executions that returned

    @property
    def status(self) -> str | None:
        return None if self.record is None else self.record.status

    def entries(self) -> list[tuple[str, str]]:
        return [(e.key, e.phase) for e in self.journal]

    def results(self) -> set[str]:
        return {e.key for e in self.journal if e.phase == "result"}

    def effect_count(self, tool: str) -> int:
        return sum(1 for t, _, _ in self.effects if t == tool)

    def in_flight(self) -> set[str]:
        """Steps whose execution was interrupted (begun, never returned)."""
        return {k for k, n in self.starts.items() if n > self.ends[k]}

    def lost(self) -> set[str]:
        """Steps that finished executing but whose result is not in the journal."""
        return {k for k, n in self.ends.items() if n and k not in self.results()}


class Harness:
    """One test's world: a store URL, an outside system, the fork server, a run id."""

    def __init__(self, forker: ForkServer | None, store_url: str, tmp_path: Path, module: str,
                 run_id: str = "run-1") -> None:
        self.forker = forker
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.module = module
        self.run_id = run_id
        self.outside = tmp_path / "outside.db"

    def env(self, kill: str = "none", **extra: str) -> dict[str, str]:
        return {**os.environ, "KEEL_CRASH_STORE": self.store_url,
                "KEEL_CRASH_EFFECTS": str(self.outside), "KEEL_CRASH_KILL": kill, **extra}

    def spawn(self, *argv: str, kill: str = "none", **extra: str) -> Spawned:
        assert self.forker is not None
        return self.forker.spawn(self.module, list(argv), self.env(kill, **extra),
                                 self.tmp_path)

    def child(self, *argv: str, kill: str = "none", **extra: str) -> Finished:
        assert self.forker is not None
        return self.forker.wait(self.spawn(*argv, kill=kill, **extra))

    async def snapshot(self) -> Snapshot:
        async with open_store(self.store_url) as store:
            try:
                record: RunRecord | None = await store.get_run(self.run_id)
                journal = await store.read_journal(self.run_id)
            except RunNotFound:
                record, journal = None, []
            tasks = await store.list_tasks(TaskFilter(run_id=self.run_id))
        effects: list[tuple[str, str, str]] = []
        starts: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        if self.outside.exists():
            db = sqlite3.connect(self.outside, timeout=30)
            try:
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'effects'").fetchone():
                    effects = db.execute("SELECT tool, idem, detail FROM effects "
                                         "ORDER BY rowid").fetchall()
                    for key, phase in db.execute("SELECT key, phase FROM calls"):
                        (starts if phase == "start" else ends)[key] += 1
            finally:
                db.close()
        return Snapshot(record, journal, tasks, effects, starts, ends)


def reexecuted(before: Snapshot, after: Snapshot) -> set[str]:
    """Steps that began executing before the kill and again after it."""
    return {k for k, n in before.starts.items() if after.starts[k] > n}


def check_journal_only_grew(before: Snapshot, after: Snapshot) -> None:
    assert after.entries()[: len(before.journal)] == before.entries()
    assert len(set(after.entries())) == len(after.journal), "a (key, phase) was recorded twice"

