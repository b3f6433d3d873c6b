"""The SQLite memory backend, the embedded default: one file (``.keel/memory.db`` beside the
default run store ``.keel/runs.db``, or any path), vectors as float32 blobs, cosine computed
in this process with numpy over the user's live rows.

Calls run synchronously on the calling thread, as the SQLite run store's do: a search of a
user with 10,000 items reads ~10 MB of vectors and takes milliseconds (docs/context.md has
the figure). The file is in WAL mode, so several processes may share it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.context._memory_base import (
    ITEM_COLUMNS,
    MAX_TEXT_CHARS,
    MEMORY_SCHEMA_VERSION,
    Candidates,
    Clock,
    MemoryBackend,
    MemoryItem,
    Ranking,
    check_tenant,
    item_from_row,
)
from keel.context._memory_cache import UserVectors, VectorCache
from keel.core import ConfigError, StoreError, use_wal
from keel.models import Embedder

if TYPE_CHECKING:
    import sqlite3

    from keel.context._memory_base import Vectors

#: Where the memories live unless a path is given (beside the default run store).
DEFAULT_MEMORY_PATH = ".keel/memory.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keel_memory (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    importance REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    source_run TEXT,
    embedding BLOB NOT NULL,
    PRIMARY KEY (tenant, user_id, id)
);
CREATE INDEX IF NOT EXISTS keel_memory_expiry ON keel_memory (expires_at)
    WHERE expires_at IS NOT NULL;
"""


class SQLiteMemory(MemoryBackend):
    """Long-term memory in an SQLite file (``":memory:"`` for a private in-memory one).
    The options are :class:`MemoryBackend`'s.

    The vectors of recently searched users are cached in process, up to
    :attr:`cache_bytes` (64 MB) of vectors; the cache is dropped whenever another connection
    (another process) has written to the file, and a user's part whenever this backend
    writes to that user."""

    cache_bytes: int = 64 * 2**20

    def __init__(self, path: str | Path = DEFAULT_MEMORY_PATH, *,
                 embedder: Embedder | None = None, clock: Clock = time.time,
                 ranking: Ranking | None = None, reembed: bool = False,
                 max_chars: int = MAX_TEXT_CHARS) -> None:
        if not isinstance(path, str | Path) or not str(path):
            raise ConfigError("path", f"must be a file path (or ':memory:'), not {path!r}")
        super().__init__(embedder=embedder, clock=clock, ranking=ranking, reembed=reembed,
                         max_chars=max_chars)
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._cache = VectorCache(self.cache_bytes)

    @classmethod
    def beside(cls, run_store: str | Path, *, embedder: Embedder | None = None,
               clock: Clock = time.time, ranking: Ranking | None = None,
               reembed: bool = False, max_chars: int = MAX_TEXT_CHARS) -> SQLiteMemory:
        """A memory file ``memory.db`` in the folder of the SQLite run store file
        ``run_store`` (``.keel/runs.db`` gives ``.keel/memory.db``)."""
        if not isinstance(run_store, str | Path) or not str(run_store) \
                or str(run_store) == ":memory:":
            raise ConfigError("run_store", f"must be the path of an SQLite run store file, "
                                           f"not {run_store!r}")
        return cls(Path(run_store).with_name("memory.db"), embedder=embedder, clock=clock,
                   ranking=ranking, reembed=reembed, max_chars=max_chars)

    # ---- opening

    @property
    def db(self) -> sqlite3.Connection:
        self._check_open()
        if self._db is None:
            raise StoreError("the memory store is not open yet; use `async with` or "
                             "`await memory.open()`")
        return self._db

    async def _open(self) -> tuple[str, int] | None:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            import sqlite3  # not when keel is imported (keel.context is, for its defaults)

            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                if self.path != ":memory:":
                    use_wal(db)
                    db.execute("PRAGMA synchronous = NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                db.close()
                raise StoreError(f"{self.path} is not a keel memory file SQLite can open "
                                 f"({exc}); give another path.") from exc
            self._db = db
        meta = dict(self.db.execute("SELECT key, value FROM keel_memory_meta").fetchall())
        version = int(meta.get("schema_version", MEMORY_SCHEMA_VERSION))
        if version > MEMORY_SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer keel (memory schema "
                             f"{version}, this keel reads {MEMORY_SCHEMA_VERSION}); upgrade "
                             "keel.")
        if "embedder" not in meta:
            return None
        return str(meta["embedder"]), int(meta["dim"])

    async def _set_meta(self, name: str, dim: int) -> None:
        rows = [("schema_version", str(MEMORY_SCHEMA_VERSION)), ("embedder", name),
                ("dim", str(dim))]
        self.db.executemany("INSERT INTO keel_memory_meta (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", rows)

    # ---- writes

    async def _insert(self, item: MemoryItem, vector: Vectors) -> MemoryItem:
        tenant = check_tenant(item.tenant)
        cur = self.db.execute(
            f"INSERT INTO keel_memory ({ITEM_COLUMNS}, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (item.id, tenant, item.user, item.kind, item.text, item.importance,
             item.created_at, item.updated_at, item.expires_at, item.source_run,
             vector[0].tobytes()))
        self._forget_cached(tenant, item.user)
        if cur.rowcount:
            return item
        existing = await self._get(tenant, item.user, item.id)
        assert existing is not None  # the conflict was on this very key
        return existing

    async def _replace(self, item: MemoryItem, vector: Vectors | None) -> None:
        sets = "text = ?, importance = ?, updated_at = ?, expires_at = ?"
        args: list[Any] = [item.text, item.importance, item.updated_at, item.expires_at]
        if vector is not None:
            sets += ", embedding = ?"
            args.append(vector[0].tobytes())
        self.db.execute(f"UPDATE keel_memory SET {sets} WHERE tenant = ? AND user_id = ? "
                        "AND id = ?", (*args, check_tenant(item.tenant), item.user, item.id))
        self._forget_cached(check_tenant(item.tenant), item.user)

    async def _delete(self, tenant: str, user: str, item_id: str | None) -> int:
        if item_id is None:
            cur = self.db.execute("DELETE FROM keel_memory WHERE tenant = ? AND user_id = ?",
                                  (tenant, user))
        else:
            cur = self.db.execute("DELETE FROM keel_memory WHERE tenant = ? AND user_id = ? "
                                  "AND id = ?", (tenant, user, item_id))
        self._forget_cached(tenant, user)
        return cur.rowcount

    async def _set_vectors(self, rows: Sequence[tuple[str, str, str]],
                           vectors: Vectors) -> None:
        with self._transaction():
            self.db.executemany(
                "UPDATE keel_memory SET embedding = ? WHERE tenant = ? AND user_id = ? "
                "AND id = ?", [(v.tobytes(), t, u, i) for (t, u, i), v
                               in zip(rows, vectors, strict=True)])
        self._forget_cached()

    async def _purge(self, now: float) -> int:
        cur = self.db.execute("DELETE FROM keel_memory WHERE expires_at IS NOT NULL AND "
                              "expires_at <= ?", (now,))
        self._forget_cached()
        return cur.rowcount

    def _transaction(self) -> _Commit:
        self.db.execute("BEGIN IMMEDIATE")
        return _Commit(self.db)

    # ---- reads

    async def _get(self, tenant: str, user: str, item_id: str) -> MemoryItem | None:
        row = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM keel_memory WHERE tenant = ? AND "
                              "user_id = ? AND id = ?", (tenant, user, item_id)).fetchone()
        return None if row is None else item_from_row(row)

    async def _list(self, tenant: str, user: str, now: float | None) -> list[MemoryItem]:
        live = "" if now is None else " AND (expires_at IS NULL OR expires_at > ?)"
        args: tuple[Any, ...] = (tenant, user) if now is None else (tenant, user, now)
        rows = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM keel_memory WHERE tenant = ? AND "
                               f"user_id = ?{live} ORDER BY created_at, id", args).fetchall()
        return [item_from_row(r) for r in rows]

    async def _similarities(self, tenant: str, user: str, query: Vectors, now: float,
                            kinds: tuple[str, ...] | None) -> Candidates:
        return self._vectors(tenant, user, len(query)).candidates(query, now, kinds)

    def _vectors(self, tenant: str, user: str, width: int) -> UserVectors:
        """The user's vectors and ranking columns, from the cache when no other connection
        has written to the file since they were read (``PRAGMA data_version``; this
        backend's own writes drop what they change)."""
        import numpy as np

        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        block = self._cache.get((tenant, user), version)
        if block is not None:
            return block
        rows = self.db.execute("SELECT id, updated_at, importance, expires_at, kind, "
                               "embedding FROM keel_memory WHERE tenant = ? AND user_id = ?",
                               (tenant, user)).fetchall()
        blob = b"".join(r[5] for r in rows)
        if len(blob) != 4 * width * len(rows):
            raise StoreError(f"{self.path} holds vectors of another width than {width}; "
                             "reopen it with reembed=True.")
        matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), width)
        block = UserVectors.of(rows, matrix)
        self._cache.put((tenant, user), version, block)
        return block

    def _forget_cached(self, tenant: str | None = None, user: str | None = None) -> None:
        self._cache.drop(None if tenant is None or user is None else (tenant, user))

    async def _fetch(self, tenant: str, user: str, ids: Sequence[str]) -> list[MemoryItem]:
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM keel_memory WHERE tenant = ? AND "
                               f"user_id = ? AND id IN ({marks})",
                               (tenant, user, *ids)).fetchall()
        return [item_from_row(r) for r in rows]

    async def _all_texts(self) -> list[tuple[str, str, str, str]]:
        rows = self.db.execute("SELECT tenant, user_id, id, text FROM keel_memory").fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def _close(self) -> None:
        self._forget_cached()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __repr__(self) -> str:
        return f"<SQLiteMemory {self.path}>"


class _Commit:
    """COMMIT on a clean exit of the ``with``, ROLLBACK otherwise."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


__all__ = ["DEFAULT_MEMORY_PATH", "SQLiteMemory"]
