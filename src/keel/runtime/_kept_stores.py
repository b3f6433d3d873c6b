"""SQLite stores opened from a URL (or the default, ``.keel/runs.db``) stay open for the process.

Opening a SQLite store checks the file and prepares the connection: about two milliseconds,
more than a whole short run. ``agent.run_sync(...)`` in a loop or a web handler without
``store=`` would pay it on every run, so the store is kept and lent to the next run that
names the same file.

What a kept store is tied to
    An SQLite store holds one ``sqlite3`` connection (usable from any thread) and a thread
    lock: nothing of an event loop, so the store outlives the ``asyncio.run`` of each
    ``run_sync``. What is tied to a loop is the lease keeper of the store (its renewal task
    and the tasks it may cancel), so a store is kept per thread: runs on one thread's loops
    share it, runs on another thread get their own. Stores of other kinds (Postgres pools
    belong to one event loop; ``memory:`` is a fresh store each time by design) are opened
    and closed around each run, as before.

When it is opened again
    The key is the URL, the working directory (a relative path names another file once the
    directory changes) and the thread. A store whose file was deleted or replaced since is
    closed when its last run ends and a new one is opened. At most :data:`MAX_KEPT` are kept;
    the least recently used beyond that, and those of threads that have ended, are closed
    once no run uses them.

Process life
    Nothing is opened at import: the first run that needs a store opens it. Kept stores are
    closed at interpreter exit (``atexit``). A forked child does not use its parent's
    connections (SQLite forbids carrying one across ``fork``): it forgets them, without
    closing them, and opens its own.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.store import RunStore, open_store

if TYPE_CHECKING:  # imported when a store is opened: importing keel must not load sqlite3
    from keel.store import SQLiteStore

#: The most stores kept open at once (per process).
MAX_KEPT = 8


@dataclass(slots=True, eq=False)
class Kept:
    """One kept store and who is using it."""

    store: SQLiteStore
    thread: threading.Thread
    users: int = 0
    file: tuple[int, int] | None = None  # (device, inode) once the file exists
    retired: bool = False  # closed when its last user leaves


_Key = tuple[str, str, int]
_kept: OrderedDict[_Key, Kept] = OrderedDict()
_lock = threading.Lock()
_abandoned: list[Kept] = []  # a forked child's copies of its parent's stores: never touched
_hooked = False


def _file_id(store: SQLiteStore) -> tuple[int, int] | None:
    try:
        st = os.stat(store.path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _usable(kept: Kept) -> bool:
    if kept.retired or kept.thread is not threading.current_thread():
        return False
    return kept.file is None or _file_id(kept.store) == kept.file


async def borrow(url: str) -> tuple[RunStore, Kept | None]:
    """The store for ``url``: a kept one (give it back with :func:`give_back`), or a store
    of another kind opened for this run alone (``None`` as the second item)."""
    key = (url, os.getcwd(), threading.get_ident())
    stale: list[Kept] = []
    with _lock:
        kept = _kept.get(key)
        if kept is not None:
            if _usable(kept):
                kept.users += 1
                _kept.move_to_end(key)
                return kept.store, kept
            del _kept[key]
            kept.retired = True
            stale.append(kept)
    await _close_unused(stale)
    store = open_store(url)
    from keel.store import SQLiteStore

    if not isinstance(store, SQLiteStore) or store.path.name == ":memory:":
        return store, None
    kept = Kept(store=store, thread=threading.current_thread(), users=1)
    with _lock:
        _hook()
        if key in _kept:  # another run on this thread got there first (a nested loop)
            _kept[key].retired = True
            stale.append(_kept.pop(key))
        _kept[key] = kept
        stale.extend(_evict())
    await _close_unused(stale)
    return store, kept


async def give_back(store: RunStore, kept: Kept | None) -> None:
    """End one run's use of a store from :func:`borrow`."""
    if kept is None:
        await store.close()
        return
    with _lock:
        kept.users -= 1
        if kept.file is None:
            kept.file = _file_id(kept.store)
        done = kept.retired and kept.users <= 0
    if done:
        await kept.store.close()


def _evict() -> list[Kept]:
    """Retire the kept stores of ended threads and those beyond :data:`MAX_KEPT` (hold
    ``_lock``); returns them."""
    out: list[Kept] = []
    for key, kept in list(_kept.items()):
        if not kept.thread.is_alive() or len(_kept) > MAX_KEPT:
            del _kept[key]
            kept.retired = True
            out.append(kept)
    return out


async def _close_unused(stores: list[Kept]) -> None:
    for kept in stores:
        if kept.users <= 0:
            await kept.store.close()


def kept_stores() -> list[SQLiteStore]:
    """The stores kept open now, least recently used first (for tests and diagnostics)."""
    with _lock:
        return [kept.store for kept in _kept.values()]


def close_kept() -> None:
    """Close every kept store (at interpreter exit; tests). Runs still using one fail on
    their next write, as with any closed store."""
    with _lock:
        stores = list(_kept.values())
        _kept.clear()
    for kept in stores:
        kept.retired = True
        coro = kept.store.close()
        try:
            coro.send(None)  # an SQLite store closes without waiting
        except StopIteration:
            continue
        coro.close()


def _hook() -> None:
    global _hooked
    if _hooked:
        return
    _hooked = True
    atexit.register(close_kept)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_in_child)


def _forget_in_child() -> None:
    global _lock
    _abandoned.extend(_kept.values())
    _kept.clear()
    _lock = threading.Lock()
