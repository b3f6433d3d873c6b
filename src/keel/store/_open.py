"""Open a store from a URL: ``memory:``, ``sqlite:///path/to/file.db``, a plain path, or
``postgresql://user:password@host:5432/dbname[?schema=NAME]``."""

from __future__ import annotations

from keel.core import UserError
from keel.store._base import RunStore


def open_store(url: str, *, create: bool = True) -> RunStore:
    """``memory:`` -> :class:`MemoryStore`; ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db`` or a plain file path -> :class:`SQLiteStore`;
    ``postgresql://...`` or ``postgres://...`` -> :class:`PostgresStore` (``?schema=NAME``
    puts keel's tables in that schema). Nothing is opened until the store is first used.

    ``create=False`` is for code that only reads: a file or schema that holds no keel store
    yet is refused with a :class:`keel.StoreError` when the store opens, and nothing is
    created or changed (no file, directory, schema or table)."""
    from keel.store._memory import MemoryStore

    if url in ("memory", "memory:", ":memory:"):
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres(url, create)
    path: str | None = None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]  # sqlite:///rel.db or sqlite:////abs/path.db
    elif url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
    elif "://" not in url:
        path = url
    if not path:
        raise UserError(
            f"cannot open run store {_shown(url)!r}: use 'memory:', 'sqlite:///path/to/runs.db', "
            "a file path or 'postgresql://user:password@host:5432/dbname'.")
    from keel.store._sqlite import SQLiteStore

    return SQLiteStore(path, create=create)


def _postgres(url: str, create: bool) -> RunStore:
    try:
        from keel.store._postgres import PostgresStore
    except ImportError as exc:
        raise UserError(f"cannot open run store {_shown(url)!r}: {exc}.") from None
    return PostgresStore(url, create=create)


def _shown(url: str) -> str:
    """``url`` without a password, for messages."""
    head, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{head}://{userinfo.split(':', 1)[0]}:***@{host}"
