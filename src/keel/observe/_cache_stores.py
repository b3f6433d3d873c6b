"""Where cached model responses are kept: in memory, in an SQLite file, or in Redis.

A :class:`CacheStore` keeps opaque entries (JSON text) under ``(tenant, key)``. Expiry is
decided by the caller's clock (every entry carries its own ``expires_at``, so a test's clock
works on every backend); the stores also drop entries on their own after ``ttl`` (Redis
``PX``, an SQLite ``expires_at`` column pruned on write, the memory store on read), so an
unused cache does not grow without end. ``sqlite3`` and ``redis`` are imported on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keel.core import ConfigError, StoreError, safe_url, use_wal

if TYPE_CHECKING:
    import sqlite3

    from redis.asyncio import Redis


@runtime_checkable
class CacheStore(Protocol):
    """A place to keep cache entries. ``get`` returns the text stored under ``(tenant, key)``
    or None; ``set`` stores it for ``ttl`` seconds; ``clear`` drops one tenant's entries (or
    all, for ``None``). Errors are :class:`~keel.StoreError` naming the store."""

    async def get(self, tenant: str, key: str) -> str | None: ...

    async def set(self, tenant: str, key: str, value: str, *, ttl: float) -> None: ...

    async def clear(self, tenant: str | None = None) -> None: ...


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a whole number >= 1, not {value!r}")
    return value


class MemoryCacheStore:
    """Entries in this process, least recently used dropped past ``max_entries`` or past
    ``max_bytes`` of entry text in all (the bounds are shared by every tenant: a tenant's
    entries live under its own key)."""

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = _positive_int("MemoryCacheStore.max_entries", max_entries)
        self.max_bytes = _positive_int("MemoryCacheStore.max_bytes", max_bytes)
        self._data: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, tenant: str, key: str) -> str | None:
        item = self._data.get((tenant, key))
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._drop((tenant, key))
            return None
        self._data.move_to_end((tenant, key))
        return item[1]

    def _drop(self, slot: tuple[str, str]) -> None:
        self._bytes -= len(self._data.pop(slot)[1])

    async def set(self, tenant: str, key: str, value: str, *, ttl: float) -> None:
        slot = (tenant, key)
        if slot in self._data:
            self._drop(slot)
        self._data[slot] = (time.monotonic() + ttl, value)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    async def clear(self, tenant: str | None = None) -> None:
        for k in [k for k in self._data if tenant is None or k[0] == tenant]:
            self._drop(k)

    def __repr__(self) -> str:
        return f"MemoryCacheStore(max_entries={self.max_entries})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_model_cache (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keel_model_cache_expiry ON keel_model_cache (expires_at);
"""


class SQLiteCacheStore:
    """Entries in their own SQLite file (table ``keel_model_cache``; not the run store's
    schema: point it at a separate file, or at the run store's file if you accept the
    extra table). Each write prunes expired entries and, past ``max_entries``, the ones
    closest to expiry. Calls run in a worker thread, one connection per store. A value
    longer than ``max_value_bytes`` is never read back: it is a miss."""

    def __init__(self, path: str | Path, *, max_entries: int = 100_000,
                 timeout: float = 5.0, max_value_bytes: int = 1024 * 1024) -> None:
        if not isinstance(path, str | Path) or not str(path) or "\x00" in str(path):
            raise ConfigError("SQLiteCacheStore.path", f"expected a file path, not {path!r}")
        self.path = str(path)
        self.max_entries = _positive_int("SQLiteCacheStore.max_entries", max_entries)
        self.max_value_bytes = _positive_int("SQLiteCacheStore.max_value_bytes",
                                             max_value_bytes)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("SQLiteCacheStore.timeout", f"must be seconds > 0, not {timeout!r}")
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._writes = 0

    def __repr__(self) -> str:
        return f"SQLiteCacheStore({self.path!r})"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        import sqlite3

        with self._lock:
            try:
                if self._conn is None:
                    conn = sqlite3.connect(self.path, timeout=self.timeout,
                                           check_same_thread=False, isolation_level=None)
                    use_wal(conn, timeout=self.timeout)
                    # a cache may lose its last writes in a power cut, never its integrity
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.executescript(_SCHEMA)
                    self._conn = conn
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"the model cache at {self.path} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def _get(self, tenant: str, key: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT CASE WHEN length(CAST(value AS BLOB)) <= ? THEN value END "
                             "FROM keel_model_cache WHERE tenant = ? AND key = ? AND "
                             "expires_at > ?", (self.max_value_bytes, tenant, key,
                                                time.time())).fetchone()
        return None if row is None or not isinstance(row[0], str) else row[0]

    def _set(self, tenant: str, key: str, value: str, ttl: float) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO keel_model_cache (tenant, key, expires_at, value) "
                       "VALUES (?, ?, ?, ?)", (tenant, key, now + ttl, value))
            self._writes += 1
            if self._writes % 64 == 1:  # prune now and then, not on every write
                db.execute("DELETE FROM keel_model_cache WHERE expires_at <= ?", (now,))
                (count,) = db.execute("SELECT COUNT(*) FROM keel_model_cache").fetchone()
                if count > self.max_entries:
                    db.execute("DELETE FROM keel_model_cache WHERE (tenant, key) IN (SELECT "
                               "tenant, key FROM keel_model_cache ORDER BY expires_at LIMIT ?)",
                               (count - self.max_entries,))

    def _clear(self, tenant: str | None) -> None:
        with self._db() as db:
            if tenant is None:
                db.execute("DELETE FROM keel_model_cache")
            else:
                db.execute("DELETE FROM keel_model_cache WHERE tenant = ?", (tenant,))

    async def get(self, tenant: str, key: str) -> str | None:
        return await asyncio.to_thread(self._get, tenant, key)

    async def set(self, tenant: str, key: str, value: str, *, ttl: float) -> None:
        await asyncio.to_thread(self._set, tenant, key, value, ttl)

    async def clear(self, tenant: str | None = None) -> None:
        await asyncio.to_thread(self._clear, tenant)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class RedisCacheStore:
    """Entries in Redis at ``url``, under ``<prefix><tenant digest>:<key>`` with Redis's own
    expiry (``PX``). The tenant enters the key as a digest, so no tenant id can reach into
    another's keys. The connection opens on first use (one per event loop); :meth:`aclose`
    closes it. An unreachable Redis raises :class:`~keel.StoreError` naming the URL (the
    cache middleware treats it as a miss and warns once). A value longer than
    ``max_value_bytes`` is never read (its length is asked first): it is a miss."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "keel:cache:",
                 *, timeout: float = 2.0, max_value_bytes: int = 1024 * 1024) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("RedisCacheStore.url", f"expected a redis://, rediss:// or "
                                                     f"unix:// URL, not {url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("RedisCacheStore.prefix", "must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("RedisCacheStore.timeout", f"must be seconds > 0, not {timeout!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self.max_value_bytes = _positive_int("RedisCacheStore.max_value_bytes", max_value_bytes)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"RedisCacheStore({safe_url(self.url)!r}, prefix={self.prefix!r})"

    def _space(self, tenant: str) -> str:
        digest = hashlib.blake2b(tenant.encode("utf-8", "surrogatepass"),
                                 digest_size=12).hexdigest()
        return f"{self.prefix}{digest}:"

    def _connect(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - redis is an optional extra
            raise ConfigError("RedisCacheStore", "needs the redis package: pip install "
                                                 "'keel-agents[redis]'") from exc
        client = Redis.from_url(self.url, socket_connect_timeout=self.timeout,
                                socket_timeout=self.timeout)
        self._client, self._loop = client, loop
        return client

    async def _call(self, op: str, *args: Any, **kw: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await getattr(self._connect(), op)(*args, **kw)
        except (RedisError, OSError) as exc:
            raise StoreError(f"the model cache at {safe_url(self.url)} failed "
                             f"({type(exc).__name__}: {exc}); start Redis there or fix the "
                             "URL (RedisCacheStore(url=...))") from exc

    async def get(self, tenant: str, key: str) -> str | None:
        from redis.exceptions import RedisError

        name = self._space(tenant) + key
        try:  # the length first, in the same round trip: an oversized value is never read
            async with self._connect().pipeline(transaction=False) as pipe:
                pipe.strlen(name)
                pipe.getrange(name, 0, self.max_value_bytes)
                size, raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(f"the model cache at {safe_url(self.url)} failed "
                             f"({type(exc).__name__}: {exc}); start Redis there or fix the "
                             "URL (RedisCacheStore(url=...))") from exc
        if not raw or int(size) > self.max_value_bytes:
            return None
        try:
            return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            return None

    async def set(self, tenant: str, key: str, value: str, *, ttl: float) -> None:
        await self._call("set", self._space(tenant) + key, value.encode("utf-8"),
                         px=max(1, math.ceil(ttl * 1000)))

    async def clear(self, tenant: str | None = None) -> None:
        match = (self.prefix if tenant is None else self._space(tenant)) + "*"
        client = self._connect()
        keys: list[Any] = []
        from redis.exceptions import RedisError

        try:
            async for k in client.scan_iter(match=match, count=500):
                keys.append(k)
        except (RedisError, OSError) as exc:
            raise StoreError(f"the model cache at {safe_url(self.url)} failed: {exc}") from exc
        for i in range(0, len(keys), 500):
            await self._call("delete", *keys[i:i + 500])

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()
