"""Open a store from a URL: ``memory:``, ``sqlite:///path/to/file.db`` or a plain path."""

from __future__ import annotations

from keel.core import UserError
from keel.store._base import RunStore


def open_store(url: str) -> RunStore:
    """``memory:`` -> :class:`MemoryStore`; ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db`` or a plain file path -> :class:`SQLiteStore`."""
    from keel.store._memory import MemoryStore

    if url in ("memory", "memory:", ":memory:"):
        return MemoryStore()
    path: str | None = None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]  # sqlite:///rel.db or sqlite:////abs/path.db
    elif url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
    elif "://" not in url:
        path = url
    if not path:
        raise UserError(
            f"cannot open run store {url!r}: use 'memory:', 'sqlite:///path/to/runs.db' or a "
            "file path.")
    from keel.store._sqlite import SQLiteStore

    return SQLiteStore(path)
