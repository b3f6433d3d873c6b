"""What the crash children share: kill points, the outside system, and a store that dies
right after chosen writes are committed.

Environment (read when a child starts, see :func:`configure`):

* ``KEEL_CRASH_STORE``: the run store URL (an SQLite file or ``postgresql://...?schema=``);
* ``KEEL_CRASH_EFFECTS``: the outside system, an SQLite file with two tables: ``effects``
  (one row per effect a tool had: what the tests count) and ``calls`` (a ``start`` row when
  a model request or a tool body begins, an ``end`` row when it returns: how often each step
  key was executed, and which executions a kill interrupted);
* ``KEEL_CRASH_KILL``: the kill point at which the child SIGKILLs itself (``none``);
* ``KEEL_CRASH_DURABILITY``: ``always``, ``balanced`` (default) or ``batched:N``;
* ``KEEL_CRASH_SLOW=1``: sleep a little at every kill point (for kills from outside).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from keel import ToolContext
from keel.runtime import Durability
from keel.store import HumanTask, JournalEntry, RunRecord, RunStore, open_store

_KILL = "none"
_SLOW = False


def configure() -> None:
    global _KILL, _SLOW
    _KILL = os.environ.get("KEEL_CRASH_KILL", "none")
    _SLOW = os.environ.get("KEEL_CRASH_SLOW") == "1"


def die_if(point: str) -> None:
    if _SLOW:
        time.sleep(0.02)  # give an outside killer moments to land in
    if point == _KILL:
        os.kill(os.getpid(), signal.SIGKILL)


def durability() -> Durability:
    mode, _, size = os.environ.get("KEEL_CRASH_DURABILITY", "balanced").partition(":")
    return Durability(mode, int(size)) if size else Durability(mode)  # type: ignore[arg-type]


def store_url() -> str:
    return os.environ["KEEL_CRASH_STORE"]


# ------------------------------------------------------------------------ outside system


def outside() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["KEEL_CRASH_EFFECTS"], isolation_level=None, timeout=30)
    db.execute("PRAGMA synchronous = OFF")  # a SIGKILL keeps what the OS has; no fsync needed
    db.execute("CREATE TABLE IF NOT EXISTS effects (tool TEXT, idem TEXT, detail TEXT)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS dedupe ON effects (tool, idem) "
               "WHERE tool = 'reserve'")
    db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT, phase TEXT, pid INTEGER)")
    return db


def note_call(key: str, phase: str) -> None:
    db = outside()
    try:
        db.execute("INSERT INTO calls VALUES (?, ?, ?)", (key, phase, os.getpid()))
    finally:
        db.close()


@contextmanager
def executing(key: str) -> Iterator[None]:
    """Count one execution of step ``key``; a kill inside leaves it without its end row."""
    note_call(key, "start")
    yield
    note_call(key, "end")


def effect(tool: str, label: str, ctx: ToolContext, detail: str, *,
           dedupe: bool = False) -> None:
    """Change the outside system once, with kill points just before and just after."""
    die_if(f"tool:{label}:before")
    db = outside()
    try:
        verb = "INSERT OR IGNORE" if dedupe else "INSERT"
        db.execute(f"{verb} INTO effects VALUES (?, ?, ?)", (tool, ctx.idempotency_key, detail))
    finally:
        db.close()
    die_if(f"tool:{label}:after")


def reconcile_from_outside(tool: str) -> Callable[[dict[str, Any], ToolContext], Any]:
    """A reconcile hook that asks the outside system whether the call took effect."""

    async def reconcile(args: dict[str, Any], ctx: ToolContext) -> Any:
        db = outside()
        try:
            row = db.execute("SELECT detail FROM effects WHERE tool = ? AND idem = ?",
                             (tool, ctx.idempotency_key)).fetchone()
        finally:
            db.close()
        return None if row is None else f"{tool} {row[0]} (reconciled)"

    return reconcile


# ----------------------------------------------------------------------- the dying store


TaskHook = Callable[[HumanTask], Awaitable[None]]


def killing(store: RunStore, label: Callable[[str], str] = str,
            after_put_task: TaskHook | None = None) -> RunStore:
    """The real store, made to die right after chosen writes are committed:
    ``append:KEY:PHASE`` (a journal entry; also when it rides along in a batch),
    ``put_task:LABEL`` (an approval task), ``suspend:LABELS:before`` / ``:after`` (around
    ``suspend_run``; LABELS are the awaited tasks' labels joined by ``+``). ``label`` maps a
    task id to its label; ``after_put_task`` runs after ``put_task`` and its kill point."""
    inner_append, inner_put, inner_suspend = store.append, store.put_task, store.suspend_run

    def entries_done(entries: Sequence[JournalEntry]) -> None:
        for e in entries:
            die_if(f"append:{e.key}:{e.phase}")

    async def append(run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        await inner_append(run_id, entries, lease=lease)
        entries_done(entries)

    async def put_task(task: HumanTask) -> bool:
        stored = await inner_put(task)
        die_if(f"put_task:{label(task.task_id)}")
        if after_put_task is not None:
            await after_put_task(task)
        return stored

    async def suspend_run(record: RunRecord, entries: Sequence[JournalEntry], *,
                          waiting_on: Collection[str], lease: str | None = None) -> str:
        labels = "+".join(sorted(label(i) for i in waiting_on))
        die_if(f"suspend:{labels}:before")
        status = await inner_suspend(record, entries, waiting_on=waiting_on, lease=lease)
        entries_done(entries)
        die_if(f"suspend:{labels}:after")
        return status

    store.append = append  # type: ignore[method-assign]
    store.put_task = put_task  # type: ignore[method-assign]
    store.suspend_run = suspend_run  # type: ignore[method-assign]
    return store


def open_killing_store(label: Callable[[str], str] = str,
                       after_put_task: TaskHook | None = None) -> RunStore:
    return killing(open_store(store_url()), label, after_put_task)
