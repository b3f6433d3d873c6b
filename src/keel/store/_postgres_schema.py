"""Checking, and on first use creating, the keel tables in a Postgres schema.

The check only reads: a schema written by a newer keel, or one whose ``keel_*`` tables are
not a keel store this keel can read, is refused with :class:`keel.StoreVersionError` and left
untouched. A schema without keel tables gets them (the schema itself is created if missing)
in one transaction under an advisory lock, so that two processes opening a new store at the
same moment create it once; the one that waited sees the tables and leaves them alone. A
store of an older schema version is upgraded in place the same way (one transaction under
the lock, its data kept), also by the reading commands.
With ``create=False`` (keel's reading commands) a schema without keel tables is refused and
nothing is created: neither the schema nor the tables.
"""

from __future__ import annotations

import hashlib

from keel.core import StoreError, StoreVersionError
from keel.store._base import SCHEMA_VERSION
from keel.store._postgres_connect import Conn
from keel.store._postgres_sql import DDL, TABLES, UPGRADES, quote_ident


def lock_key(schema: str) -> int:
    """The advisory lock (a signed 64-bit number) that guards creating ``schema``'s tables;
    the same in every process."""
    digest = hashlib.blake2b(f"keel.store:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def prepare(conn: Conn, schema: str | None, label: str, *, create: bool = True) -> str:
    """Check (and if new and ``create``, create) the keel tables; returns the schema they
    are in."""
    if schema is None:
        row = await (await conn.execute("SELECT current_schema()")).fetchone()
        schema = row[0] if row else None
        if schema is None:
            raise StoreError(
                f"the Postgres run store at {label} has no schema to put its tables in (the "
                "connection's search_path names none that exists); add ?schema=keel to the "
                "store URL.")
    async with conn.transaction():  # one snapshot: another opener may be upgrading it
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version = await inspect(conn, schema, label)
    if version == SCHEMA_VERSION:
        return schema
    if version is not None:
        await _upgrade(conn, schema, label)
        return schema
    if not create:
        where = label.split(" (schema")[0]
        raise StoreError(
            f"there is no keel store in schema {schema!r} of {where}; nothing was created. "
            "Check the database and ?schema= in the store URL; only commands that write "
            "(keel run, keel worker) create a store.")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
        if await inspect(conn, schema, label) is None:  # nobody created them while we waited
            await _create(conn, schema)
    return schema


async def _upgrade(conn: Conn, schema: str, label: str) -> None:
    """Apply each upgrade step from the store's version to :data:`SCHEMA_VERSION` under the
    advisory lock, looking again once it holds it (another process may have done it)."""
    s = quote_ident(schema) + "."
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
        version = await inspect(conn, schema, label)
        while version is not None and version < SCHEMA_VERSION:
            await conn.execute(";\n".join(step.replace("{s}", s) for step in UPGRADES[version]))
            version += 1


async def _create(conn: Conn, schema: str) -> None:
    s = quote_ident(schema)
    exists = await (await conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))).fetchone()
    if exists is None:
        await conn.execute(f"CREATE SCHEMA {s}")
    # No parameters: one round trip for all of them (the simple query protocol).
    await conn.execute(";\n".join(statement.replace("{s}", s + ".") for statement in DDL))
    await conn.execute(f"INSERT INTO {s}.keel_meta (key, value) VALUES ('schema_version', %s)",
                       (str(SCHEMA_VERSION),))


async def inspect(conn: Conn, schema: str, label: str) -> int | None:
    """The schema version of the keel tables in ``schema``; None if there are none. Raises
    for tables this keel cannot use. Reads only."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (schema, list(TABLES)))
    found = {row[0] for row in await cur.fetchall()}
    where = f"schema {schema!r} of {label.split(' (schema')[0]}"
    if not found:
        return None
    if "keel_meta" not in found:
        raise StoreVersionError(
            f"{where} has tables named like keel's ({', '.join(sorted(found))}) but no "
            "keel_meta table: they are not a keel run store. Point keel at another schema "
            "(?schema=NAME in the store URL); a new one is created.")
    row = await (await conn.execute(
        f"SELECT value FROM {quote_ident(schema)}.keel_meta WHERE key = 'schema_version'")
    ).fetchone()
    try:
        version = int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the run store in {where} was written by a newer keel (schema {version}, this "
            f"keel reads up to {SCHEMA_VERSION}); upgrade keel-agents (pip install -U "
            "keel-agents). Nothing was changed.")
    if version != SCHEMA_VERSION and version not in UPGRADES:
        raise StoreVersionError(
            f"{where} holds a keel_meta table without a schema version this keel knows "
            f"({row[0] if row else 'none'!r}); it is not a keel run store. Point keel at "
            "another schema (?schema=NAME in the store URL).")
    since = {"keel_outbox": 5, "keel_feedback": 6, "keel_settings": 6}  # later tables
    missing = [t for t in TABLES if t not in found and version >= since.get(t, 0)]
    if missing:
        raise StoreError(
            f"the run store in {where} is damaged: its {', '.join(missing)} table is missing. "
            "Restore it from a backup, or point keel at another schema.")
    return version
