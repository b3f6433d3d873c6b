"""The corpus index on disk: one SQLite database (a file of its own, or the run store's
SQLite file: every table is prefixed ``rag_``) holding the documents, their chunks and each
chunk's embedding as a float32 blob, with the embedder's name and dimension.

Schema version 1::

    rag_meta(key PRIMARY KEY, value)             schema_version, embedder, dimension, generation
    rag_documents(id PRIMARY KEY, title, kind, source, metadata JSON, fingerprint)
    rag_chunks(id PRIMARY KEY, doc_id, position, text, title, metadata JSON, vector BLOB)

The search structures (BM25 and the embedding matrix) are rebuilt in memory from it."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from keel.core import UserError, use_wal
from keel.patterns._rag_chunk import Chunk
from keel.patterns._rag_ingest import Document

__all__ = ["SCHEMA_VERSION", "CorpusError", "IndexStorage", "StoredDocument"]

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rag_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rag_documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    metadata TEXT NOT NULL, fingerprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rag_chunks (
    id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
    title TEXT NOT NULL, metadata TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS rag_chunks_doc ON rag_chunks (doc_id, position);
"""


class CorpusError(UserError):
    """The corpus index cannot be used as asked: the file is damaged or not a keel corpus,
    it was written by a newer keel, or it was embedded by another embedder or dimension
    than the one given now. The message names the fix (usually: re-index)."""


@dataclass(frozen=True, kw_only=True)
class StoredDocument:
    """What the index keeps of a document besides its chunks."""

    id: str
    fingerprint: str


class IndexStorage:
    """The SQLite side of a corpus. One connection, used under one lock; ``path=None`` keeps
    the database in memory."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.where = ":memory:" if path is None else os.fspath(path)
        self._lock = threading.Lock()
        try:
            if path is not None:
                Path(self.where).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.where, check_same_thread=False,
                                         isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise CorpusError(f"cannot open the corpus index {self.where}: {exc}") from exc
        try:
            self._prepare()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CorpusError(f"{self.where} is not a usable keel corpus index ({exc}); "
                              "delete the file and add the documents again") from exc

    def _prepare(self) -> None:
        conn = self._conn
        if self.where != ":memory:":
            use_wal(conn, timeout=5.0)
        conn.executescript(_SCHEMA)
        for table, columns in (("rag_documents", 6), ("rag_chunks", 7)):
            found = len(conn.execute(f"PRAGMA table_info({table})").fetchall())
            if found != columns:
                raise sqlite3.DatabaseError(f"table {table} has {found} columns, not "
                                            f"{columns}")
        version = self.meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise CorpusError(f"{self.where} holds a corpus index of schema version "
                              f"{version}; this keel reads version {SCHEMA_VERSION}. "
                              "Upgrade keel, or delete the file and re-index")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.ProgrammingError as exc:
                raise CorpusError(f"the corpus index {self.where} is closed") from exc
            except sqlite3.DatabaseError as exc:
                raise CorpusError(f"the corpus index {self.where} failed ({exc}); if the "
                                  "file is damaged, delete it and re-index") from exc

    def meta(self, key: str) -> str | None:
        with self._locked() as conn:
            row = conn.execute("SELECT value FROM rag_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._locked() as conn:
            conn.execute("INSERT INTO rag_meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    def documents(self) -> dict[str, StoredDocument]:
        with self._locked() as conn:
            rows = conn.execute("SELECT id, fingerprint FROM rag_documents").fetchall()
        return {row[0]: StoredDocument(id=row[0], fingerprint=row[1]) for row in rows}

    def vectors_of(self, doc_ids: Sequence[str], dim: int) -> dict[str, npt.NDArray[np.float32]]:
        """The stored vectors of the chunks of ``doc_ids``, by chunk id."""
        out: dict[str, npt.NDArray[np.float32]] = {}
        with self._locked() as conn:
            for doc_id in doc_ids:
                for chunk_id, blob in conn.execute(
                        "SELECT id, vector FROM rag_chunks WHERE doc_id = ?", (doc_id,)):
                    out[chunk_id] = self._vector(chunk_id, blob, dim)
        return out

    def _vector(self, chunk_id: str, blob: bytes, dim: int) -> npt.NDArray[np.float32]:
        if not isinstance(blob, bytes) or len(blob) != dim * 4:
            raise CorpusError(f"{self.where}: the vector of chunk {chunk_id!r} is damaged "
                              f"(not {dim} float32 values); delete the file and re-index")
        return np.frombuffer(blob, dtype=np.float32)

    def load(self, dim: int | None) -> tuple[list[Chunk], npt.NDArray[np.float32]]:
        """Every chunk, in document and position order, and their vectors as one matrix."""
        chunks: list[Chunk] = []
        rows: list[npt.NDArray[np.float32]] = []
        with self._locked() as conn:
            cursor = conn.execute("SELECT id, doc_id, position, text, title, metadata, vector "
                                  "FROM rag_chunks ORDER BY doc_id, position")
            for chunk_id, doc_id, position, text, title, metadata, blob in cursor:
                try:
                    meta = json.loads(metadata)
                    chunks.append(Chunk(id=str(chunk_id), doc_id=str(doc_id), text=str(text),
                                        title=str(title), position=int(position),
                                        metadata={str(k): str(v) for k, v in meta.items()}))
                except (ValueError, TypeError, AttributeError) as exc:
                    raise CorpusError(f"{self.where}: chunk {chunk_id!r} is damaged ({exc}); "
                                      "delete the file and re-index") from exc
                if dim is None:
                    raise CorpusError(f"{self.where}: chunks are stored but no embedding "
                                      "dimension; delete the file and re-index")
                rows.append(self._vector(str(chunk_id), blob, dim))
        matrix = (np.vstack(rows) if rows else np.zeros((0, dim or 0), dtype=np.float32))
        return chunks, matrix.astype(np.float32, copy=False)

    def generation(self) -> int:
        """How many writes the index has had: another process's write shows as a change."""
        value = self.meta("generation")
        return int(value) if value is not None and value.isdigit() else 0

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> int:
        """Count a write (inside its transaction); the generation before it."""
        row = conn.execute("SELECT value FROM rag_meta WHERE key = 'generation'").fetchone()
        before = int(row[0]) if row is not None and str(row[0]).isdigit() else 0
        conn.execute("INSERT INTO rag_meta (key, value) VALUES ('generation', ?) ON CONFLICT "
                     "(key) DO UPDATE SET value = excluded.value", (str(before + 1),))
        return before

    def write(self, documents: Sequence[tuple[Document, str, Sequence[Chunk]]],
              vectors: dict[str, npt.NDArray[np.float32]], removed: Sequence[str]) -> int:
        """Replace ``documents`` (each with its fingerprint and chunks) and delete the
        documents ``removed``, in one transaction; the generation before it."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = self._bump(conn)
                for doc_id in [*removed, *(d.id for d, _, _ in documents)]:
                    conn.execute("DELETE FROM rag_chunks WHERE doc_id = ?", (doc_id,))
                    conn.execute("DELETE FROM rag_documents WHERE id = ?", (doc_id,))
                for doc, fingerprint, chunks in documents:
                    conn.execute("INSERT INTO rag_documents VALUES (?, ?, ?, ?, ?, ?)",
                                 (doc.id, doc.title, doc.kind, doc.source,
                                  json.dumps(dict(doc.metadata)), fingerprint))
                    conn.executemany(
                        "INSERT INTO rag_chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(c.id, c.doc_id, c.position, c.text, c.title,
                          json.dumps(dict(c.metadata)),
                          np.ascontiguousarray(vectors[c.id], dtype=np.float32).tobytes())
                         for c in chunks])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return before

    def rewrite_vectors(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        """Replace the vectors of the chunks in ``vectors``, in one transaction."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._bump(conn)
                conn.executemany("UPDATE rag_chunks SET vector = ? WHERE id = ?",
                                 [(np.ascontiguousarray(v, dtype=np.float32).tobytes(), cid)
                                  for cid, v in vectors.items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()
