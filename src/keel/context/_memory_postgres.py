"""The Postgres memory backend, for fleets: psycopg 3, one connection per backend, tables
``keel_memory`` and ``keel_memory_meta`` in ``schema`` (default: the connection's).

Vectors
    With the pgvector extension the embedding column is a ``vector`` and the cosine is
    pgvector's ``1 - (embedding <=> query)``, computed by the database on every search (only
    the scores travel back). Without it the column is a plain ``float8[]``: a user's vectors
    are read in Postgres' binary array format, scored in process with numpy (they are stored
    at unit length, so the cosine is a dot product) and cached (see :class:`PostgresMemory`).
    The ranking (recency, importance) is the shared one of :class:`MemoryBackend`.

    ``pgvector=None`` (the default) uses pgvector when the extension is already installed in
    the database when the tables are first created; ``True`` requires it (creating the
    extension if the role may); ``False`` never uses it. The choice is recorded with the
    tables: a store created with plain arrays keeps them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, LiteralString

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
from keel.core import ConfigError, StoreError, UserError
from keel.models import Embedder

if TYPE_CHECKING:
    import psycopg

    from keel.context._memory_base import Vectors

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONNECT_TIMEOUT_S = 5.0


class PostgresMemory(MemoryBackend):
    """Long-term memory in Postgres at ``url`` (a libpq URL or connection string). The
    other options are :class:`MemoryBackend`'s; ``pgvector`` is described above.

    With plain arrays, the vectors of recently searched users are cached in process (up to
    :attr:`cache_bytes`, 64 MB): a trigger bumps a user's version in ``keel_memory_users``
    in the same transaction as any write to the user's items (by any process, or by hand),
    and a search reads the vectors again only when the version it cached is no longer the
    current one."""

    cache_bytes: int = 64 * 2**20

    def __init__(self, url: str, *, schema: str | None = None, pgvector: bool | None = None,
                 embedder: Embedder | None = None, clock: Clock = time.time,
                 ranking: Ranking | None = None, reembed: bool = False,
                 max_chars: int = MAX_TEXT_CHARS) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError("url", "must be a Postgres URL such as "
                                     "postgresql://user@host:5432/db")
        if schema is not None and (not isinstance(schema, str)
                                   or not _SCHEMA_NAME.fullmatch(schema)):
            raise ConfigError("schema", f"{schema!r} is not a schema name keel uses; use up to "
                                        "63 ASCII letters, digits and underscores")
        if pgvector not in (None, True, False):
            raise ConfigError("pgvector", "must be None (use it when installed), True or False")
        super().__init__(embedder=embedder, clock=clock, ranking=ranking, reembed=reembed,
                         max_chars=max_chars)
        self.url = url
        self.schema = schema
        self.pgvector = pgvector
        #: "pgvector" or "array": how vectors are stored (known once open).
        self.vectors: str | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        prefix = f'"{schema}".' if schema else ""
        self._items = prefix + "keel_memory"
        self._meta = prefix + "keel_memory_meta"
        self._users = prefix + "keel_memory_users"
        self._bump = prefix + "keel_memory_bump"
        self._seq = prefix + "keel_memory_version"
        self._cache = VectorCache(self.cache_bytes)

    # ---- connection

    async def _run(self, sql: str, args: Sequence[Any] | dict[str, Any] = (), *,
                   fetch: bool = True) -> list[tuple[Any, ...]]:
        """One statement on the connection; its rows (if ``fetch``)."""
        import psycopg

        self._check_open()
        if self._conn is None:
            raise StoreError("the memory store is not open yet; use `async with` or "
                             "`await memory.open()`")
        if asyncio.get_running_loop() is not self._loop:
            await self._reconnect()
        async with self._lock:
            try:
                cur = await self._conn.execute(sql.encode(), args)  # our own SQL text
                return list(await cur.fetchall()) if fetch and cur.description else []
            except psycopg.Error as exc:
                raise StoreError(f"the Postgres memory store failed: "
                                 f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                                 ) from exc

    async def _reconnect(self) -> None:
        """A connection for this event loop: the backend was opened in another one (each
        ``run_sync`` call runs its own loop). The old connection belongs to its loop and is
        closed at the socket, without it."""
        old, self._conn = self._conn, None
        if old is not None:
            old.pgconn.finish()
        self._lock = asyncio.Lock()
        await self._connect()

    async def _connect(self) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise UserError("PostgresMemory needs psycopg: pip install "
                            "'keel-agents[postgres]'") from exc
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S + 1):
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT_S))
            self._loop = asyncio.get_running_loop()
        except (psycopg.Error, TimeoutError, OSError) as exc:
            raise StoreError(f"cannot reach the Postgres memory store "
                             f"({type(exc).__name__}); check the URL and that the server "
                             "is up") from None

    async def _open(self) -> tuple[str, int] | None:
        """Create (or check) the tables under a session advisory lock: two processes opening
        a new store at once would otherwise race in CREATE TABLE IF NOT EXISTS (Postgres
        answers the loser with a unique violation on its catalogue)."""
        if self._conn is None:
            await self._connect()
        digest = hashlib.blake2b(f"keel.memory:{self._meta}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        await self._run("SELECT pg_advisory_lock(%s)", (key,), fetch=False)
        try:
            return await self._create()
        finally:
            await self._run("SELECT pg_advisory_unlock(%s)", (key,), fetch=False)

    async def _create(self) -> tuple[str, int] | None:
        if self.schema:
            await self._run(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"', fetch=False)
        await self._run(f"CREATE TABLE IF NOT EXISTS {self._meta} (key TEXT PRIMARY KEY, "
                        "value TEXT NOT NULL)", fetch=False)
        meta = dict(await self._run(f"SELECT key, value FROM {self._meta}"))
        version = int(meta.get("schema_version", MEMORY_SCHEMA_VERSION))
        if version > MEMORY_SCHEMA_VERSION:
            raise StoreError(f"the memory tables were written by a newer keel (memory schema "
                             f"{version}, this keel reads {MEMORY_SCHEMA_VERSION}); upgrade "
                             "keel.")
        self.vectors = meta.get("vectors") or await self._choose_vectors()
        if self.vectors == "pgvector" and not await self._has_extension():
            raise StoreError("these memory tables store pgvector vectors but the `vector` "
                             "extension is not installed in this database; install it "
                             "(CREATE EXTENSION vector).")
        column = "vector" if self.vectors == "pgvector" else "float8[]"
        await self._run(
            f"CREATE TABLE IF NOT EXISTS {self._items} (tenant TEXT NOT NULL, user_id TEXT "
            "NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, importance "
            "float8 NOT NULL, created_at float8 NOT NULL, updated_at float8 NOT NULL, "
            f"expires_at float8, source_run TEXT, embedding {column} NOT NULL, "
            "PRIMARY KEY (tenant, user_id, id))", fetch=False)
        await self._versions()
        await self._run(f"INSERT INTO {self._meta} (key, value) VALUES ('vectors', %s), "
                        "('schema_version', %s) ON CONFLICT (key) DO NOTHING",
                        (self.vectors, str(MEMORY_SCHEMA_VERSION)), fetch=False)
        if "embedder" not in meta:
            return None
        return str(meta["embedder"]), int(meta["dim"])

    async def _versions(self) -> None:
        """The per-user version table and the trigger that bumps it on every write."""
        await self._run(f"CREATE TABLE IF NOT EXISTS {self._users} (tenant TEXT NOT NULL, "
                        "user_id TEXT NOT NULL, version BIGINT NOT NULL, "
                        "PRIMARY KEY (tenant, user_id))", fetch=False)
        # versions come from one sequence, so a version is never issued twice: a user
        # forgotten and remembered again can never match what a process cached before
        await self._run(f"CREATE SEQUENCE IF NOT EXISTS {self._seq}", fetch=False)
        nextval = "nextval('" + self._seq.replace("'", "''") + "')"
        bump = (f"INSERT INTO {self._users} (tenant, user_id, version) VALUES "
                f"({{row}}.tenant, {{row}}.user_id, {nextval}) ON CONFLICT (tenant, user_id) "
                f"DO UPDATE SET version = {nextval};")
        await self._run(
            f"DO $do$ BEGIN CREATE FUNCTION {self._bump}() RETURNS trigger LANGUAGE plpgsql "
            "AS $fn$ BEGIN IF TG_OP <> 'INSERT' THEN " + bump.format(row="OLD") + " END IF; "
            "IF TG_OP <> 'DELETE' THEN " + bump.format(row="NEW") + " END IF; RETURN NULL; "
            "END $fn$; EXCEPTION WHEN duplicate_function THEN NULL; END $do$", fetch=False)
        await self._run(
            "DO $do$ BEGIN CREATE TRIGGER keel_memory_bump AFTER INSERT OR UPDATE OR DELETE "
            f"ON {self._items} FOR EACH ROW EXECUTE FUNCTION {self._bump}(); EXCEPTION WHEN "
            "duplicate_object THEN NULL; END $do$", fetch=False)

    async def _has_extension(self) -> bool:
        return bool(await self._run("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))

    async def _choose_vectors(self) -> str:
        """How a new store keeps its vectors (see the module docstring)."""
        if self.pgvector is False:
            return "array"
        if await self._has_extension():
            return "pgvector"
        if self.pgvector is None:
            return "array"
        try:
            await self._run("CREATE EXTENSION IF NOT EXISTS vector", fetch=False)
        except StoreError as exc:
            raise StoreError(f"pgvector=True but the `vector` extension cannot be created "
                             f"here ({exc}); install pgvector on the server, or pass "
                             "pgvector=None to use plain arrays.") from exc
        return "pgvector"

    async def _set_meta(self, name: str, dim: int) -> None:
        await self._run(f"INSERT INTO {self._meta} (key, value) VALUES ('embedder', %s), "
                        "('dim', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (name, str(dim)), fetch=False)

    def _vector(self, vector: Vectors) -> Any:
        """A vector as a query parameter for the column's type."""
        values = [float(x) for x in vector]
        if self.vectors == "pgvector":
            return "[" + ",".join(repr(x) for x in values) + "]"
        return values

    @property
    def _cast(self) -> LiteralString:
        return "::vector" if self.vectors == "pgvector" else "::float8[]"

    # ---- writes

    async def _insert(self, item: MemoryItem, vector: Vectors) -> MemoryItem:
        tenant = check_tenant(item.tenant)
        rows = await self._run(
            f"INSERT INTO {self._items} ({ITEM_COLUMNS}, embedding) VALUES (%s, %s, %s, %s, "
            f"%s, %s, %s, %s, %s, %s, %s{self._cast}) ON CONFLICT DO NOTHING RETURNING id",
            (item.id, tenant, item.user, item.kind, item.text, item.importance,
             item.created_at, item.updated_at, item.expires_at, item.source_run,
             self._vector(vector[0])))
        if rows:
            return item
        existing = await self._get(tenant, item.user, item.id)
        if existing is None:  # forgotten between the two statements
            raise StoreError(f"memory {item.id!r} was deleted while it was being stored")
        return existing

    async def _replace(self, item: MemoryItem, vector: Vectors | None) -> None:
        sets = "text = %s, importance = %s, updated_at = %s, expires_at = %s"
        args: list[Any] = [item.text, item.importance, item.updated_at, item.expires_at]
        if vector is not None:
            sets += f", embedding = %s{self._cast}"
            args.append(self._vector(vector[0]))
        await self._run(f"UPDATE {self._items} SET {sets} WHERE tenant = %s AND user_id = %s "
                        "AND id = %s", (*args, check_tenant(item.tenant), item.user, item.id),
                        fetch=False)

    async def _delete(self, tenant: str, user: str, item_id: str | None) -> int:
        if item_id is None:
            rows = await self._run(f"DELETE FROM {self._items} WHERE tenant = %s AND "
                                   "user_id = %s RETURNING id", (tenant, user))
            # nothing of the user stays, not even the version (it is never reissued)
            await self._run(f"DELETE FROM {self._users} WHERE tenant = %s AND user_id = %s",
                            (tenant, user), fetch=False)
        else:
            rows = await self._run(f"DELETE FROM {self._items} WHERE tenant = %s AND "
                                   "user_id = %s AND id = %s RETURNING id",
                                   (tenant, user, item_id))
        return len(rows)

    async def _set_vectors(self, rows: Sequence[tuple[str, str, str]],
                           vectors: Vectors) -> None:
        for (t, u, i), vector in zip(rows, vectors, strict=True):
            await self._run(f"UPDATE {self._items} SET embedding = %s{self._cast} WHERE "
                            "tenant = %s AND user_id = %s AND id = %s",
                            (self._vector(vector), t, u, i), fetch=False)

    async def _purge(self, now: float) -> int:
        rows = await self._run(f"DELETE FROM {self._items} WHERE expires_at IS NOT NULL AND "
                               "expires_at <= %s RETURNING id", (now,))
        return len(rows)

    # ---- reads

    async def _get(self, tenant: str, user: str, item_id: str) -> MemoryItem | None:
        rows = await self._run(f"SELECT {ITEM_COLUMNS} FROM {self._items} WHERE tenant = %s "
                               "AND user_id = %s AND id = %s", (tenant, user, item_id))
        return item_from_row(rows[0]) if rows else None

    async def _list(self, tenant: str, user: str, now: float | None) -> list[MemoryItem]:
        live = "" if now is None else " AND (expires_at IS NULL OR expires_at > %s)"
        args: tuple[Any, ...] = (tenant, user) if now is None else (tenant, user, now)
        rows = await self._run(f"SELECT {ITEM_COLUMNS} FROM {self._items} WHERE tenant = %s "
                               f"AND user_id = %s{live} ORDER BY created_at, id", args)
        return [item_from_row(r) for r in rows]

    async def _similarities(self, tenant: str, user: str, query: Vectors, now: float,
                            kinds: tuple[str, ...] | None) -> Candidates:
        if self.vectors != "pgvector":
            block = await self._user_vectors(tenant, user, len(query))
            return block.candidates(query, now, kinds)
        import numpy as np

        kind_filter = "" if kinds is None else " AND kind = ANY(%(kinds)s)"
        rows = await self._run(
            f"SELECT id, updated_at, importance, 1 - (embedding <=> %(q)s::vector) FROM "
            f"{self._items} "
            "WHERE tenant = %(t)s AND user_id = %(u)s AND (expires_at IS NULL OR "
            f"expires_at > %(now)s){kind_filter}",
            {"q": self._vector(query), "t": tenant, "u": user, "now": now,
             "kinds": list(kinds or ())})
        n = len(rows)
        return Candidates(
            ids=[r[0] for r in rows],
            sims=np.fromiter((np.nan if r[3] is None else r[3] for r in rows), np.float64, n),
            updated=np.fromiter((r[1] for r in rows), np.float64, n),
            importance=np.fromiter((r[2] for r in rows), np.float64, n))

    async def _user_vectors(self, tenant: str, user: str, width: int) -> UserVectors:
        """The user's vectors (plain arrays), from the cache while the user's version is
        the one cached; read in Postgres' binary array format otherwise."""
        import numpy as np

        found = await self._run(f"SELECT version FROM {self._users} WHERE tenant = %s AND "
                                "user_id = %s", (tenant, user))
        version = found[0][0] if found else None
        block = self._cache.get((tenant, user), version)
        if block is not None:
            return block
        rows = await self._run(f"SELECT id, updated_at, importance, expires_at, kind, "
                               f"array_send(embedding) FROM {self._items} WHERE tenant = %s "
                               "AND user_id = %s", (tenant, user))
        # array_send: a 20-byte header (1 dimension), then a 4-byte length and a big-endian
        # float8 per element
        size = 20 + 12 * width
        if any(len(r[5]) != size for r in rows):
            raise StoreError("the memory table holds vectors of another width than "
                             f"{width}; reopen it with reembed=True.")
        cells = np.frombuffer(b"".join(bytes(r[5])[20:] for r in rows),
                              dtype=[("n", ">i4"), ("v", ">f8")])
        matrix = cells["v"].astype(np.float32).reshape(len(rows), width)
        block = UserVectors.of(rows, matrix)
        if version is not None:
            self._cache.put((tenant, user), version, block)
        return block

    async def _fetch(self, tenant: str, user: str, ids: Sequence[str]) -> list[MemoryItem]:
        if not ids:
            return []
        rows = await self._run(f"SELECT {ITEM_COLUMNS} FROM {self._items} WHERE tenant = %s "
                               "AND user_id = %s AND id = ANY(%s)", (tenant, user, list(ids)))
        return [item_from_row(r) for r in rows]

    async def _all_texts(self) -> list[tuple[str, str, str, str]]:
        rows = await self._run(f"SELECT tenant, user_id, id, text FROM {self._items}")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def _close(self) -> None:
        self._cache.drop()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def __repr__(self) -> str:
        where = f" schema={self.schema}" if self.schema else ""
        return f"<PostgresMemory{where} vectors={self.vectors or '?'}>"


__all__ = ["PostgresMemory"]
