"""Open a store from a URL: ``memory:``, ``sqlite:///path/to/file.db``, a plain path, or
``postgresql://user:password@host:5432/dbname[?schema=NAME]``."""

from __future__ import annotations

from keel.core import ConfigError, UserError
from keel.store._base import RunStore


def open_store(url: str, *, create: bool = True, outbox: bool | None = None) -> RunStore:
    """``memory:`` -> :class:`MemoryStore`; ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db`` or a plain file path -> :class:`SQLiteStore`;
    ``postgresql://...`` or ``postgres://...`` -> :class:`PostgresStore` (``?schema=NAME``
    puts keel's tables in that schema). Nothing is opened until the store is first used.

    ``create=False`` is for code that only reads: a file or schema that holds no keel store
    yet is refused with a :class:`keel.StoreError` when the store opens, and nothing is
    created or changed (no file, directory, schema or table).

    ``outbox=True`` (or ``?outbox=1`` in the URL) switches the outbox on: each write that is
    a run event also writes the event, in the same transaction, for ``keel.events.Relay`` to
    publish (see :mod:`keel.store._outbox`). It is off by default: with no relay draining
    it, the table would only grow."""
    from keel.store._memory import MemoryStore

    if not isinstance(url, str):
        raise UserError(f"a run store URL is a string, not {type(url).__name__}.")
    url, on = _take_outbox(url, outbox)
    if url in ("memory", "memory:", ":memory:"):
        return MemoryStore(outbox=on)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres(url, create, on)
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

    return SQLiteStore(path, create=create, outbox=on)


_ON = {"1": True, "true": True, "yes": True, "on": True,
       "0": False, "false": False, "no": False, "off": False}


def _take_outbox(url: str, outbox: bool | None) -> tuple[str, bool]:
    """``url`` without keel's ``outbox`` query parameter, and whether the outbox is on."""
    if outbox is not None and not isinstance(outbox, bool):
        raise ConfigError("outbox", f"must be True or False, not {outbox!r}")
    base, sep, query = url.partition("?")
    pairs = [p.partition("=") for p in query.split("&")] if sep else []
    given = [value for key, _, value in pairs if key == "outbox"]
    if not given:
        return url, bool(outbox)
    if len(given) > 1 or given[0].lower() not in _ON:
        raise ConfigError("outbox", f"?outbox= takes 1 or 0 (once), not "
                          f"{'&'.join(given)[:40]!r}")
    on = _ON[given[0].lower()]
    if outbox is not None and outbox != on:
        raise ConfigError("outbox", f"the URL says outbox={given[0]} and the argument "
                          f"outbox={outbox}; give it once.")
    kept = "&".join(f"{k}{eq}{v}" for k, eq, v in pairs if k != "outbox")
    return (f"{base}?{kept}" if kept else base), on


def _postgres(url: str, create: bool, outbox: bool) -> RunStore:
    try:
        from keel.store._postgres import PostgresStore
    except ImportError as exc:
        raise UserError(f"cannot open run store {_shown(url)!r}: {exc}.") from None
    return PostgresStore(url, create=create, outbox=outbox)


def _shown(url: str) -> str:
    """``url`` without a password, for messages."""
    head, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{head}://{userinfo.split(':', 1)[0]}:***@{host}"
