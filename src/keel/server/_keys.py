"""API keys per tenant, the roles they carry, and the audit log of who changed what.

Roles, and the actions each allows (:func:`allows`)::

    action    viewer  operator  reviewer  admin  customer
    read        x        x         x        x              runs, events, stats, tasks
    run                  x                  x              start and cancel runs, conversations
    decide                         x        x              approvals and escalations
    admin                                   x              keys and the audit log
    chat                 x                  x       x      the chat page and ``/v1/chat``

``customer`` is not a role a key can have: it is the role of a *customer token*, which an
operator's or admin's key mints for one end user (``POST /v1/chat/tokens``). The token
carries that user's id; with it a customer may start and continue only their own
conversations and see only their own runs' answers, through ``/v1/chat`` and the chat page.

A key is ``keel_<key_id>_<secret>``: ``key_id`` is 16 hex digits (shown in lists and in
the audit log), ``secret`` 32 random bytes (``secrets.token_urlsafe``). The plaintext is
returned once, by :meth:`KeyStore.create_key` and :meth:`KeyStore.rotate_key`; the store
keeps only a SHA-256 digest of the secret, compared in constant time. A rotation gives the
key a new secret and a new *generation*: the old secret, and every token issued under it,
stop working at once. A revoked key (and every token of it) is refused at once.

:class:`KeyStore` keeps its tables in the run store's database (an SQLite file or
Postgres, ``?schema=`` included): ``keel_api_keys``, ``keel_audit`` and
``keel_server_secret``, created on first use next to the run store's (which is created
first, so the file stays a keel run store). Every method is async and does its database
work in a worker thread. Every key change writes its audit entry in the same transaction.
Methods taking ``tenant=`` put it in the query's WHERE clause: a key of another tenant is
"no such key".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keel.core import (
    ConfigError,
    KeelError,
    StoreError,
    StoreUnavailable,
    UserError,
    dumps,
    safe_url,
    use_wal,
)
from keel.store import check_id, open_store

Role: TypeAlias = Literal["viewer", "operator", "reviewer", "admin"]
#: What a token may carry: a key's role, or ``customer`` (a customer token, see the module).
TokenRole: TypeAlias = Literal["viewer", "operator", "reviewer", "admin", "customer"]
Action: TypeAlias = Literal["read", "run", "decide", "admin", "chat"]
#: Every role a key may have, least to most powerful.
ROLES: tuple[Role, ...] = ("viewer", "operator", "reviewer", "admin")
#: The role of a customer token (never a key's).
CUSTOMER: Literal["customer"] = "customer"
#: Every action a role may be allowed.
ACTIONS: tuple[Action, ...] = ("read", "run", "decide", "admin", "chat")
_ALLOWED: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "run": frozenset({"operator", "admin"}),
    "decide": frozenset({"reviewer", "admin"}),
    "admin": frozenset({"admin"}),
    "chat": frozenset({"operator", "admin", CUSTOMER}),
}

#: The longest key name (characters).
MAX_NAME_CHARS = 100
#: The most audit entries one :meth:`KeyStore.read_audit` call returns.
MAX_AUDIT_PAGE = 1000
_MAX_DETAILS_CHARS = 10_000
_KEY = re.compile(r"keel_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MEMORY = ("memory", "memory:", ":memory:")
#: compared against when a key id is unknown, so that both paths do the same work
_NO_HASH = "sha256$" + "0" * 64


def allows(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (see the module's table). A role that is not one of
    :data:`ROLES` is allowed nothing; an unknown action is a :class:`~keel.UserError` (a typo
    in the caller, which must not silently deny or allow)."""
    allowed = _ALLOWED.get(action)
    if allowed is None:
        raise UserError(f"unknown action {action!r}; the actions are {', '.join(ACTIONS)}.")
    return role in allowed


def check_role(role: object) -> Role:
    """``role`` if it is one of :data:`ROLES`, else a :class:`~keel.UserError` naming them."""
    if role == CUSTOMER:
        raise UserError("a key cannot have the customer role: customers get tokens minted "
                        "for them by an operator's key (POST /v1/chat/tokens).")
    if not isinstance(role, str) or role not in ROLES:
        shown = repr(role)[:40]
        raise UserError(f"unknown role {shown}; use one of: {', '.join(ROLES)}.")
    return role


# ------------------------------------------------------------------------------ errors


class AuthError(UserError):
    """An API key or token was refused. The message never contains the key or the token;
    ``reason`` says why, for logs: ``malformed``, ``unknown`` (no such key, or a wrong
    secret), ``revoked``, ``expired``, ``audience``, ``signature`` or ``claims``."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeyNotFound(StoreError):
    """No API key with that id (for that tenant, when one was given)."""


class KeyRevoked(StoreError):
    """The API key is revoked: it cannot be revoked again or rotated. Nothing was changed."""


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """An API key's record: never its secret or the secret's digest. Times are epoch
    seconds; ``generation`` counts rotations (tokens carry it)."""

    key_id: str
    tenant: str
    role: Role
    name: str
    created_at: float
    created_by: str
    generation: int = 1
    rotated_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None
    last_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One entry of the audit log: who did ``action`` to ``target`` (a key id, a run id...)
    in ``tenant`` (None: not one tenant's), when (epoch seconds), with ``details``."""

    id: int
    at: float
    who: str
    tenant: str | None
    action: str
    target: str
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hash(secret: str) -> str:
    return "sha256$" + hashlib.sha256(secret.encode("ascii")).hexdigest()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UserError("name= must be a non-empty string saying what the key is for, e.g. "
                        "'ci deploy bot'.")
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise UserError(f"name= must be 1-{MAX_NAME_CHARS} printable characters (no control "
                        f"characters or newlines), not a {len(name)}-character string.")
    return name


def _check_text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or not value.isprintable():
        raise UserError(f"{field}= must be 1-{limit} printable characters.")
    return value


def _tenant(tenant: object) -> str | None:
    return None if tenant is None else check_id("tenant", tenant)


def _shown(key_id: object) -> str:
    return repr(key_id)[:40]


# ------------------------------------------------------------------------------ the store

_COLUMNS = ("key_id, tenant, role, name, created_at, created_by, generation, rotated_at, "
            "revoked_at, revoked_by, last_used_at")
_AUDIT_COLUMNS = "id, at, who, tenant, action, target, details"


def _ddl(s: str, postgres: bool) -> tuple[str, ...]:
    ident = ("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if postgres
             else "INTEGER PRIMARY KEY AUTOINCREMENT")
    return (
        f"""CREATE TABLE IF NOT EXISTS {s}keel_api_keys (
            key_id       TEXT PRIMARY KEY,
            tenant       TEXT NOT NULL,
            role         TEXT NOT NULL,
            name         TEXT NOT NULL,
            secret_hash  TEXT NOT NULL,
            generation   BIGINT NOT NULL,
            created_at   DOUBLE PRECISION NOT NULL,
            created_by   TEXT NOT NULL,
            rotated_at   DOUBLE PRECISION,
            revoked_at   DOUBLE PRECISION,
            revoked_by   TEXT,
            last_used_at DOUBLE PRECISION
        )""",
        f"CREATE INDEX IF NOT EXISTS keel_api_keys_tenant ON {s}keel_api_keys "
        "(tenant, created_at)",
        f"""CREATE TABLE IF NOT EXISTS {s}keel_audit (
            id      {ident},
            at      DOUBLE PRECISION NOT NULL,
            who     TEXT NOT NULL,
            tenant  TEXT,
            action  TEXT NOT NULL,
            target  TEXT NOT NULL,
            details TEXT
        )""",
        f"CREATE INDEX IF NOT EXISTS keel_audit_tenant ON {s}keel_audit (tenant, id)",
        f"""CREATE TABLE IF NOT EXISTS {s}keel_server_secret (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            secret     TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    )


def _lock_key(schema: str | None) -> int:
    digest = hashlib.blake2b(f"keel.server:keys:{schema or ''}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without keel's ``?schema=NAME`` (libpq does not know it), and NAME."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [v for k, v in query if k == "schema"]
    if not found:
        return url, None
    if len(found) > 1 or not _SCHEMA.fullmatch(found[0]):
        raise ConfigError("KeyStore.url", "?schema= must be given once, as up to 63 ASCII "
                                          "letters, digits and underscores")
    kept = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=kept)), found[0]


def _key(row: Any) -> ApiKey:
    return ApiKey(key_id=row[0], tenant=row[1], role=row[2], name=row[3],
                  created_at=float(row[4]), created_by=row[5], generation=int(row[6]),
                  rotated_at=row[7], revoked_at=row[8], revoked_by=row[9],
                  last_used_at=row[10])


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(id=int(row[0]), at=float(row[1]), who=row[2], tenant=row[3],
                      action=row[4], target=row[5],
                      details=None if row[6] is None else json.loads(row[6]))


class KeyStore:
    """API keys, the audit log and the token-signing secret, in the run store's database.

    ``url`` is the run store's: an SQLite file path (or ``sqlite:///path``),
    ``postgresql://...`` (``?schema=NAME`` too), or ``":memory:"`` (this process only, for
    tests). ``create=False`` refuses a database without a keel run store instead of
    creating one. Use ``async with KeyStore(url) as keys:`` or call :meth:`close`.
    """

    def __init__(self, url: str | os.PathLike[str], *, timeout: float = 10.0,
                 create: bool = True) -> None:
        text = os.fspath(url) if isinstance(url, str | os.PathLike) else ""
        if not isinstance(text, str) or not text or "\x00" in text:
            raise ConfigError("KeyStore.url", f"expected the run store's URL: an SQLite file "
                                              f"path, sqlite:///path, postgresql://... or "
                                              f":memory:, not {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("KeyStore.timeout", f"must be seconds > 0, not {timeout!r}")
        self.url, self.timeout, self._create = text, float(timeout), create
        self.postgres = text.startswith(("postgresql://", "postgres://"))
        self.path: Path | None = None
        self._conninfo, self._schema = _split_schema(text) if self.postgres else (text, None)
        if not self.postgres and text not in _MEMORY:
            path = text[len("sqlite:///"):] if text.startswith("sqlite:///") else (
                text[len("sqlite://"):] if text.startswith("sqlite://") else text)
            if "://" in path or not path:
                raise ConfigError("KeyStore.url", f"expected an SQLite file path, "
                                                  f"sqlite:///path, postgresql://... or "
                                                  f":memory:, not {safe_url(text)!r}")
            self.path = Path(os.path.abspath(os.path.expanduser(path)))
        self._s = f'"{self._schema}".' if self._schema else ""
        self._lock = threading.Lock()
        self._conn: Any = None  # SQLite: one connection, used under _lock
        self._pool: Any = None  # Postgres: a psycopg_pool.ConnectionPool
        self._ready = False
        self._secret: bytes | None = None

    def __repr__(self) -> str:
        return f"KeyStore({safe_url(self.url)!r})"

    async def __aenter__(self) -> KeyStore:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (the store can be opened again by using it)."""
        await asyncio.to_thread(self._drop)
        self._ready = False

    # ----------------------------------------------------------------------- connections

    async def _open(self) -> None:
        if self._ready:
            return
        if self.path is not None or self.postgres:
            # the run store first: its file or schema must stay a keel run store, and it
            # creates the directory, the Postgres schema, and refuses what is not keel's
            store = open_store(self.url, create=self._create)
            async with store:
                pass
        await asyncio.to_thread(self._connect)
        self._ready = True

    def _connect(self) -> None:
        with self._lock:
            if self._conn is not None or self._pool is not None:
                return
            try:
                if self.postgres:
                    self._pool = self._open_postgres()
                else:
                    self._conn = self._open_sqlite()
            except Exception as exc:
                if not _db_error(exc):
                    raise
                raise self._failure(exc) from None

    def _open_sqlite(self) -> Any:
        import sqlite3

        target = ":memory:" if self.path is None else str(self.path)
        conn = sqlite3.connect(target, timeout=self.timeout, check_same_thread=False,
                               isolation_level=None)
        try:
            if self.path is not None:
                use_wal(conn, timeout=self.timeout)
            conn.execute("BEGIN IMMEDIATE")  # two processes opening at once take turns
            for ddl in _ddl("", postgres=False):
                conn.execute(ddl)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_postgres(self) -> Any:
        import psycopg_pool
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        conninfo = self._conninfo
        if not conninfo_to_dict(conninfo).get("connect_timeout"):
            conninfo = make_conninfo(conninfo, connect_timeout=max(2, int(self.timeout)))
        pool: Any = psycopg_pool.ConnectionPool(
            conninfo, min_size=1, max_size=4, open=False, kwargs={"autocommit": True},
            name="keel-keys", timeout=self.timeout)
        try:
            pool.open(wait=True, timeout=self.timeout)
            with pool.connection() as conn, conn.transaction():
                # two processes creating the tables at once would collide in the catalogue
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self._schema),))
                for ddl in _ddl(self._s, postgres=True):
                    conn.execute(ddl)
        except BaseException:
            pool.close()
            raise
        return pool

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            pool, self._pool = self._pool, None
        for closing in (conn, pool):
            if closing is not None:
                with suppress(Exception):  # closing a broken connection
                    closing.close()

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[Any]:
        """One transaction, database errors as a StoreError (a StoreUnavailable when trying
        again may work). On SQLite a writing one takes the write lock at once (``BEGIN
        IMMEDIATE``); a reading one never waits for the run store's writers (and on Postgres
        is no transaction: each of its statements commits alone)."""
        try:
            if self.postgres:
                pool = self._pool
                if pool is None:
                    raise StoreError(f"the key store {self!r} is closed.")
                with pool.connection() as conn:
                    if not write:  # autocommit: one round trip per statement
                        yield conn
                        return
                    with conn.transaction():
                        yield conn
                return
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise StoreError(f"the key store {self!r} is closed.")
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    with suppress(Exception):  # SQLite may have rolled back already
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except Exception as exc:
            if isinstance(exc, KeelError) or not _db_error(exc):
                raise
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> StoreError | StoreUnavailable:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        name = type(exc).__name__
        if self.postgres:
            import psycopg
            import psycopg_pool

            password = urlsplit(self.url).password
            if password:
                reason = reason.replace(password, "***")
            where = f"the key store at {safe_url(self.url)}"
            transient = isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout
                                   | psycopg.errors.SerializationFailure
                                   | psycopg.errors.DeadlockDetected)
        else:
            where = f"the key store at {self.path or ':memory:'}"
            transient = name == "OperationalError" and ("locked" in reason or "busy" in reason)
        if transient:
            return StoreUnavailable(f"{where} is unavailable ({name}: {reason}); retry. If "
                                    "it keeps failing, check the database.")
        return StoreError(f"{where} failed ({name}: {reason}).")

    def _q(self, sql: str) -> str:
        sql = sql.replace("{s}", self._s)
        return sql.replace("?", "%s") if self.postgres else sql

    async def _run(self, fn: Any, *args: Any) -> Any:
        await self._open()
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------------------ keys

    async def create_key(self, tenant: str, role: Role, *, name: str,
                         by: str) -> tuple[ApiKey, str]:
        """A new key for ``tenant`` with ``role``: its record and its plaintext, which is
        shown this once and never stored. Audited as ``key.create`` by ``by``."""
        tenant = check_id("tenant", tenant)
        role = check_role(role)
        name = _check_name(name)
        by = check_id("by", by)
        return await self._run(self._create_key, tenant, role, name, by)  # type: ignore[no-any-return]

    def _create_key(self, tenant: str, role: Role, name: str, by: str) -> tuple[ApiKey, str]:
        key_id, secret, now = secrets.token_hex(8), secrets.token_urlsafe(32), time.time()
        with self._tx() as conn:
            conn.execute(self._q(
                "INSERT INTO {s}keel_api_keys (key_id, tenant, role, name, secret_hash, "
                "generation, created_at, created_by) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"),
                (key_id, tenant, role, name, _hash(secret), now, by))
            self._append(conn, now, by, tenant, "key.create", key_id,
                         {"role": role, "name": name})
        key = ApiKey(key_id=key_id, tenant=tenant, role=role, name=name, created_at=now,
                     created_by=by)
        return key, f"keel_{key_id}_{secret}"

    async def rotate_key(self, key_id: str, *, by: str,
                         tenant: str | None = None) -> tuple[ApiKey, str]:
        """A new secret (and generation) for the key: the old secret and the tokens issued
        under it stop working at once. Returns the record and the new plaintext (shown
        once). Audited as ``key.rotate``."""
        by, tenant = check_id("by", by), _tenant(tenant)
        return await self._run(self._rotate_key, key_id, by, tenant)  # type: ignore[no-any-return]

    def _rotate_key(self, key_id: str, by: str, tenant: str | None) -> tuple[ApiKey, str]:
        secret, now = secrets.token_urlsafe(32), time.time()
        with self._tx() as conn:
            key = self._locked(conn, key_id, tenant, "rotate")
            conn.execute(self._q("UPDATE {s}keel_api_keys SET secret_hash = ?, generation = "
                                 "generation + 1, rotated_at = ? WHERE key_id = ?"),
                         (_hash(secret), now, key.key_id))
            self._append(conn, now, by, key.tenant, "key.rotate", key.key_id,
                         {"generation": key.generation + 1})
        return (replace(key, generation=key.generation + 1, rotated_at=now),
                f"keel_{key.key_id}_{secret}")

    async def revoke_key(self, key_id: str, *, by: str, tenant: str | None = None) -> ApiKey:
        """Revoke the key at once (its tokens too). A revoked key is a :class:`KeyRevoked`;
        audited as ``key.revoke``."""
        by, tenant = check_id("by", by), _tenant(tenant)
        return await self._run(self._revoke_key, key_id, by, tenant)  # type: ignore[no-any-return]

    def _revoke_key(self, key_id: str, by: str, tenant: str | None) -> ApiKey:
        now = time.time()
        with self._tx() as conn:
            key = self._locked(conn, key_id, tenant, "revoke")
            conn.execute(self._q("UPDATE {s}keel_api_keys SET revoked_at = ?, revoked_by = ? "
                                 "WHERE key_id = ?"), (now, by, key.key_id))
            self._append(conn, now, by, key.tenant, "key.revoke", key.key_id, None)
        return replace(key, revoked_at=now, revoked_by=by)

    def _locked(self, conn: Any, key_id: str, tenant: str | None, verb: str) -> ApiKey:
        """The active key ``key_id`` (of ``tenant``), its row locked until the transaction
        ends; KeyNotFound or KeyRevoked otherwise."""
        key = self._select(conn, key_id, tenant, lock=True)
        if key.revoked_at is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(key.revoked_at))
            raise KeyRevoked(f"API key {key.key_id!r} was already revoked (by "
                             f"{key.revoked_by!r}, {when}); nothing to {verb}. Create a new "
                             "key instead.")
        return key

    def _select(self, conn: Any, key_id: object, tenant: str | None, *,
                lock: bool = False) -> ApiKey:
        row = None
        if isinstance(key_id, str) and _KEY_ID.fullmatch(key_id):
            where = " AND tenant = ?" if tenant is not None else ""
            suffix = " FOR UPDATE" if lock and self.postgres else ""
            args = (key_id,) if tenant is None else (key_id, tenant)
            row = conn.execute(self._q(f"SELECT {_COLUMNS} FROM {{s}}keel_api_keys WHERE "
                                       f"key_id = ?{where}{suffix}"), args).fetchone()
        if row is None:
            raise KeyNotFound(f"no API key {_shown(key_id)}"
                              + (f" in tenant {tenant!r}" if tenant is not None else "")
                              + "; `keel keys list` shows the keys there are.")
        return _key(row)

    async def get_key(self, key_id: str, tenant: str | None = None) -> ApiKey:
        """The key's record (never its secret); :class:`KeyNotFound` if there is none (in
        ``tenant``)."""
        tenant = _tenant(tenant)
        return await self._run(self._get_key, key_id, tenant)  # type: ignore[no-any-return]

    def _get_key(self, key_id: str, tenant: str | None) -> ApiKey:
        with self._tx(write=False) as conn:
            return self._select(conn, key_id, tenant)

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of ``tenant``), revoked ones too, oldest first; never a secret."""
        tenant = _tenant(tenant)
        return await self._run(self._list_keys, tenant)  # type: ignore[no-any-return]

    def _list_keys(self, tenant: str | None) -> list[ApiKey]:
        where = "" if tenant is None else " WHERE tenant = ?"
        with self._tx(write=False) as conn:
            rows = conn.execute(self._q(f"SELECT {_COLUMNS} FROM {{s}}keel_api_keys{where} "
                                        "ORDER BY created_at, key_id"),
                                () if tenant is None else (tenant,)).fetchall()
        return [_key(r) for r in rows]

    async def verify(self, plaintext: str) -> ApiKey:
        """The record of the key ``plaintext``, its ``last_used_at`` set to now; an
        :class:`AuthError` for a malformed, unknown, wrong or revoked key (the message never
        contains the key)."""
        m = _KEY.fullmatch(plaintext) if isinstance(plaintext, str) and len(plaintext) < 100 \
            else None
        if m is None:
            raise AuthError("not a keel API key (expected keel_<key id>_<secret>, as `keel "
                            "keys create` prints it).", reason="malformed")
        return await self._run(self._verify, m.group(1), m.group(2))  # type: ignore[no-any-return]

    def _verify(self, key_id: str, secret: str) -> ApiKey:
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(self._q(f"SELECT {_COLUMNS}, secret_hash FROM "
                                       "{s}keel_api_keys WHERE key_id = ?"),
                               (key_id,)).fetchone()
            good = hmac.compare_digest(_hash(secret), _NO_HASH if row is None else row[11])
            if row is None or not good:
                raise AuthError("API key refused: no such key, or a wrong secret (a rotated "
                                "key's old secret no longer works).", reason="unknown")
            key = _key(row)
            if key.revoked_at is not None:
                raise AuthError("API key refused: it was revoked; ask an admin for a new "
                                "one.", reason="revoked")
            conn.execute(self._q("UPDATE {s}keel_api_keys SET last_used_at = ? WHERE key_id = ?"),
                         (now, key_id))
        return replace(key, last_used_at=now)

    async def is_active(self, key_id: str, generation: int | None = None) -> bool:
        """Whether ``key_id`` exists and is not revoked (and, given ``generation``, was not
        rotated since): what a token's key must be on every request."""
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            return False
        return await self._run(self._is_active, key_id, generation)  # type: ignore[no-any-return]

    def _is_active(self, key_id: str, generation: int | None) -> bool:
        with self._tx(write=False) as conn:
            row = conn.execute(self._q("SELECT generation FROM {s}keel_api_keys WHERE "
                                       "key_id = ? AND revoked_at IS NULL"),
                               (key_id,)).fetchone()
        return row is not None and (generation is None or int(row[0]) == generation)

    # ---------------------------------------------------------------------------- audit

    async def audit(self, *, who: str, tenant: str | None, action: str, target: str,
                    details: dict[str, Any] | None = None) -> AuditEntry:
        """Append an entry to the audit log (``details``: a JSON object, at most 10,000
        characters as JSON). Key changes are audited by the store itself."""
        who, tenant = check_id("who", who), _tenant(tenant)
        action = _check_text("action", action, 100)
        target = _check_text("target", target, 500)
        if details is not None and not isinstance(details, dict):
            raise UserError(f"details= must be a dict (a JSON object) or None, not "
                            f"{type(details).__name__}.")
        return await self._run(self._audit, who, tenant, action, target, details)  # type: ignore[no-any-return]

    def _audit(self, who: str, tenant: str | None, action: str, target: str,
               details: dict[str, Any] | None) -> AuditEntry:
        now = time.time()
        with self._tx() as conn:
            entry_id = self._append(conn, now, who, tenant, action, target, details)
        return AuditEntry(id=entry_id, at=now, who=who, tenant=tenant, action=action,
                          target=target, details=details)

    def _append(self, conn: Any, at: float, who: str, tenant: str | None, action: str,
                target: str, details: dict[str, Any] | None) -> int:
        text = None if details is None else dumps(details)
        if text is not None and len(text) > _MAX_DETAILS_CHARS:
            raise UserError(f"details= is {len(text):,} characters as JSON; an audit entry "
                            f"holds at most {_MAX_DETAILS_CHARS:,}.")
        row = conn.execute(self._q("INSERT INTO {s}keel_audit (at, who, tenant, action, "
                                   "target, details) VALUES (?, ?, ?, ?, ?, ?) RETURNING id"),
                           (at, who, tenant, action, target, text)).fetchone()
        return int(row[0])

    async def read_audit(self, *, tenant: str | None = None, limit: int = 100,
                         before: int | None = None) -> list[AuditEntry]:
        """Audit entries, newest first: ``tenant``'s only if given, at most ``limit``
        (1-1000), those older than entry id ``before`` if given (the next page)."""
        tenant = _tenant(tenant)
        if isinstance(limit, bool) or not isinstance(limit, int) \
                or not 1 <= limit <= MAX_AUDIT_PAGE:
            raise UserError(f"limit= must be a whole number from 1 to {MAX_AUDIT_PAGE}, not "
                            f"{limit!r}.")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
            raise UserError(f"before= must be an audit entry id (a whole number), not "
                            f"{before!r}.")
        return await self._run(self._read_audit, tenant, limit, before)  # type: ignore[no-any-return]

    def _read_audit(self, tenant: str | None, limit: int,
                    before: int | None) -> list[AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._tx(write=False) as conn:
            rows = conn.execute(self._q(f"SELECT {_AUDIT_COLUMNS} FROM {{s}}keel_audit"
                                        f"{clause} ORDER BY id DESC LIMIT ?"),
                                (*args, limit)).fetchall()
        return [_entry(r) for r in rows]

    # --------------------------------------------------------------------------- secret

    async def signing_secret(self) -> bytes:
        """The 32-byte secret that signs tokens, made on first use and kept in the store so
        that every server process sharing it signs and verifies alike."""
        if self._secret is None:
            self._secret = await self._run(self._signing_secret)
        return self._secret

    def _signing_secret(self) -> bytes:
        select = self._q("SELECT secret FROM {s}keel_server_secret WHERE id = 1")
        with self._tx() as conn:
            row = conn.execute(select).fetchone()
            if row is None:
                conn.execute(self._q("INSERT INTO {s}keel_server_secret (id, secret, "
                                     "created_at) VALUES (1, ?, ?) ON CONFLICT (id) DO "
                                     "NOTHING"), (secrets.token_bytes(32).hex(), time.time()))
                row = conn.execute(select).fetchone()
        return bytes.fromhex(row[0])


def _db_error(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in ("sqlite3", "psycopg", "psycopg_pool") or isinstance(exc, OSError)


for _error in (AuthError, KeyNotFound, KeyRevoked):
    _error.__module__ = "keel.server"
del _error
