"""Where spend-cap counters live: in this process, in an SQL table, or in Redis.

A counter is one cap's spend (dollars and tokens) for one subject (a tenant or an agent) in
one window; its key names all three, so a new window starts from zero and an old one simply
expires. Every store does the same three things atomically:

* ``reserve(slots, usd, tokens)``: add a call's pre-call estimate to every counter in
  ``slots`` if it fits under every one of their limits, else add nothing and say which
  slot is full (all-or-nothing, so a tenant cap and an agent cap never drift apart);
* ``settle(slots, usd, tokens)``: add a correction (the actual spend minus the estimate,
  or minus the whole estimate when the call failed) and return the totals after it;
* ``claim(key, mark)``: True for the first caller only, for one mark (an alert threshold)
  of one counter: the store decides which worker sends an alert.

:class:`RedisCapStore` does each in one Lua script; :class:`SQLCapStore` in one
transaction (SQLite ``BEGIN IMMEDIATE``, Postgres ``SELECT ... FOR UPDATE``) on its own
tables ``keel_spend_caps`` and ``keel_spend_alerts``, created on demand (not the run store's
schema); :class:`MemoryCapStore` is for one process. ``sqlite3``, ``psycopg`` and ``redis``
are imported on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keel.core import ConfigError, StoreError, safe_url, use_wal

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Slot:
    """One counter a call is charged to: its key, its limits (None: no limit on that
    measure) and when it may be forgotten (the window's end, epoch seconds)."""

    key: str
    max_usd: float | None
    max_tokens: int | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reservation that did not fit: the full slot's index and its totals."""

    index: int
    usd: float
    tokens: int


@runtime_checkable
class CapStore(Protocol):
    """Atomic spend counters shared by everyone using the same store (see the module)."""

    async def reserve(self, slots: Sequence[Slot], usd: float, tokens: int) -> Refusal | None:
        ...

    async def settle(self, slots: Sequence[Slot], usd: float,
                     tokens: int) -> list[tuple[float, int]]: ...

    async def claim(self, slot: Slot, mark: str) -> bool: ...

    async def spent(self, key: str) -> tuple[float, int]: ...


def _fits(usd: float, tokens: int, slot: Slot, add_usd: float, add_tokens: int) -> bool:
    # a tiny slack so that float sums of the same prices do not refuse the call that lands
    # exactly on the cap
    return not ((slot.max_usd is not None and usd + add_usd > slot.max_usd + 1e-12)
                or (slot.max_tokens is not None and tokens + add_tokens > slot.max_tokens))


class MemoryCapStore:
    """Counters in this process (one worker). Expired windows are dropped as new ones
    open."""

    def __init__(self) -> None:
        self._counters: dict[str, list[float]] = {}  # key -> [usd, tokens, expires_at]
        self._marks: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:
        return "MemoryCapStore()"

    def _row(self, slot: Slot) -> list[float]:
        row = self._counters.get(slot.key)
        if row is None:
            if len(self._counters) > 1024:
                self._prune()
            row = self._counters[slot.key] = [0.0, 0, slot.expires_at]
        return row

    def _prune(self) -> None:
        now = time.time()
        for key in [k for k, r in self._counters.items() if r[2] <= now]:
            del self._counters[key]
        for mark in [m for m, t in self._marks.items() if t <= now]:
            del self._marks[mark]

    async def reserve(self, slots: Sequence[Slot], usd: float, tokens: int) -> Refusal | None:
        rows = [self._row(s) for s in slots]
        for i, (slot, row) in enumerate(zip(slots, rows, strict=True)):
            if not _fits(row[0], int(row[1]), slot, usd, tokens):
                return Refusal(i, row[0], int(row[1]))
        for row in rows:
            row[0] += usd
            row[1] += tokens
        return None

    async def settle(self, slots: Sequence[Slot], usd: float,
                     tokens: int) -> list[tuple[float, int]]:
        out = []
        for slot in slots:
            row = self._row(slot)
            row[0] += usd
            row[1] += tokens
            out.append((row[0], int(row[1])))
        return out

    async def claim(self, slot: Slot, mark: str) -> bool:
        if (slot.key, mark) in self._marks:
            return False
        self._marks[(slot.key, mark)] = slot.expires_at
        return True

    async def spent(self, key: str) -> tuple[float, int]:
        row = self._counters.get(key)
        return (0.0, 0) if row is None else (row[0], int(row[1]))


_SQL_TABLES = (
    """CREATE TABLE IF NOT EXISTS keel_spend_caps (
        key        TEXT PRIMARY KEY,
        usd        DOUBLE PRECISION NOT NULL,
        tokens     BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS keel_spend_alerts (
        key        TEXT NOT NULL,
        mark       TEXT NOT NULL,
        sent_at    DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (key, mark)
    )""",
)
#: the advisory lock that makes concurrent openers create the tables one after another
_DDL_LOCK = int.from_bytes(hashlib.blake2b(b"keel.caps:tables", digest_size=8).digest(),
                           "big", signed=True)


class SQLCapStore:
    """Counters in an SQL database when there is no Redis: an SQLite file (a path, or
    ``sqlite:///path``) or Postgres (``postgresql://...``), in the tables
    ``keel_spend_caps`` and ``keel_spend_alerts`` created on first use. Every worker
    pointing at the same file or database shares the caps. Each operation is one
    transaction (SQLite ``BEGIN IMMEDIATE``, Postgres rows locked with ``FOR UPDATE``) run
    in a worker thread, on one connection per store."""

    def __init__(self, target: str | Path, *, timeout: float = 10.0) -> None:
        text = str(target) if isinstance(target, str | Path) else ""
        if not text or "\x00" in text:
            raise ConfigError("SQLCapStore.target", f"expected an SQLite file path, "
                                                    f"sqlite:///path or postgresql://..., not "
                                                    f"{target!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("SQLCapStore.timeout", f"must be seconds > 0, not {timeout!r}")
        self.postgres = text.startswith(("postgresql://", "postgres://"))
        if text.startswith("sqlite:///"):
            text = text[len("sqlite:///"):]
        elif "://" in text and not self.postgres:
            raise ConfigError("SQLCapStore.target", f"expected an SQLite file path, "
                                                    f"sqlite:///path or postgresql://..., not "
                                                    f"{safe_url(text)!r}")
        self.target = text
        self.timeout = float(timeout)
        self._conn: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLCapStore({safe_url(self.target)!r})"

    def _open(self) -> Any:
        conn: Any
        if self.postgres:
            import psycopg

            conn = psycopg.connect(self.target, autocommit=True,
                                   connect_timeout=max(1, int(self.timeout)))
            # two processes creating the tables at once: the loser of CREATE TABLE IF NOT
            # EXISTS gets a unique violation on the catalogue, so they take turns
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for ddl in _SQL_TABLES:
                    conn.execute(ddl)
            return conn
        else:
            import sqlite3

            conn = sqlite3.connect(self.target, timeout=self.timeout,
                                   check_same_thread=False, isolation_level=None)
            use_wal(conn, timeout=self.timeout)
        for ddl in _SQL_TABLES:
            conn.execute(ddl)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction on the store's connection, errors as a StoreError."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._open()
                conn = self._conn
                if self.postgres:
                    with conn.transaction():
                        yield conn
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except Exception as exc:
                if isinstance(exc, StoreError | ConfigError) or not _db_error(exc):
                    raise
                self._drop()
                raise StoreError(f"the spend-cap store at {safe_url(self.target)} failed "
                                 f"({type(exc).__name__}: {exc})") from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # closing a broken connection
                conn.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _rows(self, conn: Any, slots: Sequence[Slot]) -> dict[str, tuple[float, int]]:
        for s in sorted(slots, key=lambda s: s.key):  # one lock order for every worker
            conn.execute(self._q("INSERT INTO keel_spend_caps (key, usd, tokens, expires_at) "
                                 "VALUES (?, 0, 0, ?) ON CONFLICT (key) DO NOTHING"),
                         (s.key, s.expires_at))
        keys = sorted({s.key for s in slots})
        marks = ", ".join("?" for _ in keys)
        lock = " ORDER BY key FOR UPDATE" if self.postgres else ""
        got = conn.execute(self._q(f"SELECT key, usd, tokens FROM keel_spend_caps WHERE key "
                                   f"IN ({marks}){lock}"), keys).fetchall()
        return {k: (float(u), int(t)) for k, u, t in got}

    def _reserve(self, slots: Sequence[Slot], usd: float, tokens: int) -> Refusal | None:
        with self._tx() as conn:
            rows = self._rows(conn, slots)
            for i, slot in enumerate(slots):
                have = rows[slot.key]
                if not _fits(have[0], have[1], slot, usd, tokens):
                    return Refusal(i, have[0], have[1])
            self._add(conn, slots, usd, tokens)
        return None

    def _add(self, conn: Any, slots: Sequence[Slot], usd: float, tokens: int) -> None:
        for s in slots:
            conn.execute(self._q("UPDATE keel_spend_caps SET usd = usd + ?, tokens = tokens + ? "
                                 "WHERE key = ?"), (usd, tokens, s.key))

    def _settle(self, slots: Sequence[Slot], usd: float, tokens: int) -> list[tuple[float, int]]:
        with self._tx() as conn:
            self._rows(conn, slots)
            self._add(conn, slots, usd, tokens)
            rows = self._rows(conn, slots)
            if self.postgres or int(time.time()) % 16 == 0:
                conn.execute(self._q("DELETE FROM keel_spend_caps WHERE expires_at < ?"),
                             (time.time() - 86400,))
        return [rows[s.key] for s in slots]

    def _claim(self, slot: Slot, mark: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute(self._q("INSERT INTO keel_spend_alerts (key, mark, sent_at, "
                                       "expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (key, mark) "
                                       "DO NOTHING"), (slot.key, mark, time.time(),
                                                       slot.expires_at))
            return bool(cur.rowcount == 1)

    def _spent(self, key: str) -> tuple[float, int]:
        with self._tx() as conn:
            row = conn.execute(self._q("SELECT usd, tokens FROM keel_spend_caps WHERE key = ?"),
                               (key,)).fetchone()
        return (0.0, 0) if row is None else (float(row[0]), int(row[1]))

    async def reserve(self, slots: Sequence[Slot], usd: float, tokens: int) -> Refusal | None:
        return await asyncio.to_thread(self._reserve, slots, usd, tokens)

    async def settle(self, slots: Sequence[Slot], usd: float,
                     tokens: int) -> list[tuple[float, int]]:
        return await asyncio.to_thread(self._settle, slots, usd, tokens)

    async def claim(self, slot: Slot, mark: str) -> bool:
        return await asyncio.to_thread(self._claim, slot, mark)

    async def spent(self, key: str) -> tuple[float, int]:
        return await asyncio.to_thread(self._spent, key)

    def close(self) -> None:
        with self._lock:
            self._drop()


def _db_error(exc: Exception) -> bool:
    kind = type(exc)
    return kind.__module__.split(".")[0] in ("sqlite3", "psycopg") or isinstance(exc, OSError)


# KEYS: the counters (hashes). ARGV[1] dollars, ARGV[2] tokens, then per key: max dollars,
# max tokens (-1: none), expiry (epoch ms). All-or-nothing: returns {0} when added, else
# {index, dollars, tokens} of the first counter that has no room.
_RESERVE = """
local usd = tonumber(ARGV[1])
local tok = tonumber(ARGV[2])
for i, k in ipairs(KEYS) do
  local mu = tonumber(ARGV[3 * i])
  local mt = tonumber(ARGV[3 * i + 1])
  local cu = tonumber(redis.call('HGET', k, 'usd') or '0')
  local ct = tonumber(redis.call('HGET', k, 'tok') or '0')
  if (mu >= 0 and cu + usd > mu + 1e-12) or (mt >= 0 and ct + tok > mt) then
    return {i, tostring(cu), tostring(ct)}
  end
end
for i, k in ipairs(KEYS) do
  redis.call('HINCRBYFLOAT', k, 'usd', ARGV[1])
  redis.call('HINCRBY', k, 'tok', tok)
  redis.call('PEXPIREAT', k, tonumber(ARGV[3 * i + 2]))
end
return {0}
"""

# KEYS: the counters; ARGV: dollars, tokens (corrections, may be negative), then one expiry
# per key. Returns the totals after, as {dollars, tokens, dollars, tokens, ...}.
_SETTLE = """
local out = {}
for i, k in ipairs(KEYS) do
  local u = redis.call('HINCRBYFLOAT', k, 'usd', ARGV[1])
  local t = redis.call('HINCRBY', k, 'tok', tonumber(ARGV[2]))
  redis.call('PEXPIREAT', k, tonumber(ARGV[2 + i]))
  out[2 * i - 1] = tostring(u)
  out[2 * i] = tostring(t)
end
return out
"""


class RedisCapStore:
    """Counters in Redis at ``url`` (one hash per cap, subject and window, under
    ``<prefix><digest>``, expiring at the window's end), shared by every worker using the
    same Redis and prefix. Reserve and settle are Lua scripts (atomic); an alert threshold
    is claimed with ``HSETNX`` on the counter's hash. The connection opens on first use (one
    per event loop); an unreachable Redis raises :class:`~keel.StoreError` naming the URL."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "keel:caps:",
                 *, timeout: float = 2.0) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("RedisCapStore.url", f"expected a redis://, rediss:// or "
                                                   f"unix:// URL, not {url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("RedisCapStore.prefix", "must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("RedisCapStore.timeout", f"must be seconds > 0, not {timeout!r}")
        self.url, self.prefix, self.timeout = url, prefix, float(timeout)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisCapStore({safe_url(self.url)!r}, prefix={self.prefix!r})"

    def name(self, key: str) -> str:
        """The Redis key of a counter (a digest: no subject id can reach another's key)."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
        return self.prefix + digest.hexdigest()

    def _connect(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - redis is an optional extra
            raise ConfigError("RedisCapStore", "needs the redis package: pip install "
                                               "'keel-agents[redis]'") from exc
        client = Redis.from_url(self.url, socket_connect_timeout=self.timeout,
                                socket_timeout=self.timeout)
        self._scripts = {"reserve": client.register_script(_RESERVE),
                         "settle": client.register_script(_SETTLE)}
        self._client, self._loop = client, loop
        return client

    async def _call(self, fn: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await fn(self._connect())
        except (RedisError, OSError) as exc:
            raise StoreError(f"the spend-cap store at {safe_url(self.url)} failed "
                             f"({type(exc).__name__}: {exc}); start Redis there, fix the URL "
                             "(RedisCapStore(url=...)) or use SQLCapStore") from exc

    async def reserve(self, slots: Sequence[Slot], usd: float, tokens: int) -> Refusal | None:
        args: list[Any] = [repr(float(usd)), int(tokens)]
        for s in slots:
            args += [-1 if s.max_usd is None else repr(float(s.max_usd)),
                     -1 if s.max_tokens is None else s.max_tokens, _ms(s.expires_at)]
        keys = [self.name(s.key) for s in slots]
        got = await self._call(lambda c: self._scripts["reserve"](keys=keys, args=args))
        if int(got[0]) == 0:
            return None
        return Refusal(int(got[0]) - 1, float(got[1]), int(float(got[2])))

    async def settle(self, slots: Sequence[Slot], usd: float,
                     tokens: int) -> list[tuple[float, int]]:
        args: list[Any] = [repr(float(usd)), int(tokens), *(_ms(s.expires_at) for s in slots)]
        keys = [self.name(s.key) for s in slots]
        got = await self._call(lambda c: self._scripts["settle"](keys=keys, args=args))
        return [(float(got[2 * i]), int(float(got[2 * i + 1]))) for i in range(len(slots))]

    async def claim(self, slot: Slot, mark: str) -> bool:
        name = self.name(slot.key)
        return bool(await self._call(lambda c: c.hsetnx(name, f"sent:{mark}", "1")))

    async def spent(self, key: str) -> tuple[float, int]:
        got = await self._call(lambda c: c.hmget(self.name(key), "usd", "tok"))
        return float(got[0] or 0), int(float(got[1] or 0))

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()


def _ms(epoch_seconds: float) -> int:
    return max(1, math.ceil(epoch_seconds * 1000))
