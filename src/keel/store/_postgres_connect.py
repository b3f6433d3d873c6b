"""Reaching the Postgres server: the store URL, the first connection, the pool, and the
:class:`keel.StoreError` for anything that goes wrong on the way.

A store URL is a libpq URL (``postgresql://`` or ``postgres://``) or a ``key=value``
connection string. keel adds one query parameter of its own, ``?schema=NAME``, which is taken
out before libpq sees the URL. Unless the URL says otherwise, a connection attempt gives up
after :data:`CONNECT_TIMEOUT_S` and connections are named ``keel`` in ``pg_stat_activity``.
No message keel writes contains the password.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
import psycopg_pool
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from keel.core import ConfigError, StoreError, StoreUnavailable

#: How long one connection attempt may take unless the URL sets ``connect_timeout``.
CONNECT_TIMEOUT_S = 5
#: How long a call waits for a free pooled connection before failing.
POOL_TIMEOUT_S = 30.0

Conn: TypeAlias = psycopg.AsyncConnection[TupleRow]
Pool: TypeAlias = psycopg_pool.AsyncConnectionPool[Conn]

_URL_SCHEMES = ("postgresql://", "postgres://")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store lives. ``label`` (user@host:port/db) is safe to show; ``conninfo`` is
    what libpq gets and may hold the password."""

    conninfo: str
    schema: str | None
    label: str
    host: str
    port: str
    timeout: float
    password: str | None

    def scrub(self, text: str) -> str:
        """``text`` on one line, without the password should a message echo it."""
        text = " ".join(text.split())
        return text.replace(self.password, "***") if self.password else text


def parse_target(url: str, schema: str | None) -> Target:
    """The target for a store URL; ``schema`` (the argument or ``?schema=``) is keel's."""
    conninfo = url
    if url.startswith(_URL_SCHEMES):
        conninfo, in_url = _take_schema(url)
        if in_url is not None and schema is not None and in_url != schema:
            raise ConfigError("schema", f"the URL says {in_url!r} and the argument {schema!r}; "
                                        "give it once.")
        schema = schema if schema is not None else in_url
    if schema is not None:
        check_schema_name(schema)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        raise ConfigError("url", "not a Postgres URL or connection string; use "
                                 "postgresql://user:password@host:5432/dbname") from None
    extra: dict[str, Any] = {}
    if not params.get("connect_timeout") and not os.environ.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    if not params.get("application_name") and not os.environ.get("PGAPPNAME"):
        extra["application_name"] = "keel"
    if extra:
        conninfo = make_conninfo(conninfo, **extra)
    return _target(conninfo, params, schema)


def _take_schema(url: str) -> tuple[str, str | None]:
    """``url`` without keel's ``schema`` query parameter, and that parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "schema"]
    found = [v for k, v in query if k == "schema"]
    if len(found) > 1:
        raise ConfigError("schema", "the URL gives ?schema= more than once; give it once.")
    base = url.split("?", 1)[0] if "?" in url else url.split("#", 1)[0]
    query_text = urlencode(kept, quote_via=quote)
    rebuilt = f"{base}?{query_text}" if query_text else base
    return rebuilt, (found[0] if found else None)


def _target(conninfo: str, params: dict[str, Any], schema: str | None) -> Target:
    def param(name: str, env: str, default: str) -> str:
        return str(params.get(name) or os.environ.get(env) or default)

    host = param("host", "PGHOST", "localhost")
    port = param("port", "PGPORT", "5432")
    user = param("user", "PGUSER", "")
    dbname = param("dbname", "PGDATABASE", user or "postgres")
    label = f"{user + '@' if user else ''}{host}:{port}/{dbname}"
    if schema is not None:
        label += f" (schema {schema})"
    timeout = float(params.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
                    or CONNECT_TIMEOUT_S)
    password = params.get("password") or None
    return Target(conninfo=conninfo, schema=schema, label=label, host=host, port=port,
                  timeout=max(2.0, timeout), password=password)


def check_schema_name(name: str) -> str:
    if not _SCHEMA_NAME.fullmatch(name):
        raise ConfigError("schema", f"{name!r} is not a schema name keel uses; use up to 63 "
                                    "ASCII letters, digits and underscores, not starting with "
                                    "a digit.")
    return name


# ------------------------------------------------------------------------- connecting


async def connect(target: Target) -> Conn:
    """One autocommit connection, or a StoreError within about ``target.timeout``."""
    try:
        async with asyncio.timeout(target.timeout + 1.0):
            return await psycopg.AsyncConnection.connect(target.conninfo, autocommit=True)
    except (psycopg.Error, TimeoutError, OSError) as exc:
        raise connect_error(target, exc) from None


async def open_pool(target: Target, *, min_size: int, max_size: int) -> Pool:
    """A pool of autocommit connections, filled to ``min_size`` before it is returned."""
    pool: Pool = psycopg_pool.AsyncConnectionPool(
        target.conninfo, min_size=min_size, max_size=max_size, open=False,
        kwargs={"autocommit": True}, name="keel-store", timeout=POOL_TIMEOUT_S)
    try:
        await pool.open(wait=True, timeout=target.timeout)
    except psycopg.Error as exc:
        await pool.close()
        raise connect_error(target, exc) from None
    except BaseException:
        await pool.close()
        raise
    return pool


def connect_error(target: Target, exc: BaseException) -> StoreError | StoreUnavailable:
    """The error for a server keel cannot connect to: where, why, and what to check. A
    refusal (bad password, unknown database) is a :class:`StoreError` to fix; a server that
    is down or does not answer is a retryable :class:`StoreUnavailable`."""
    if isinstance(exc, TimeoutError | psycopg_pool.PoolTimeout):
        reason = f"no answer within {target.timeout:g} s"
    else:
        reason = target.scrub(str(exc)) or type(exc).__name__
    # A failed connection carries no SQLSTATE: tell the server's refusals by their words.
    text = reason.lower()
    refused = True
    if "password" in text or "authentication" in text or "pg_hba.conf" in text or (
            "role" in text and "does not exist" in text):
        hint = "check the user name and password in the store URL"
    elif "database" in text and "does not exist" in text:
        hint = "check the database name in the store URL, or create the database"
    else:
        refused = False
        hint = (f"check that Postgres is running and accepts connections there "
                f"(pg_isready -h {target.host} -p {target.port}), and the host and port in "
                "the store URL")
    message = (f"cannot connect to the Postgres run store at {target.label}: {reason}. "
               f"{hint[0].upper()}{hint[1:]}.")
    return StoreError(message) if refused else StoreUnavailable(message)


def failure(target: Target, exc: psycopg.Error) -> StoreError | StoreUnavailable:
    """The error for a failed statement, saying what to do about it: a lost connection, a
    deadlock, a serialization failure or a busy pool is a retryable
    :class:`StoreUnavailable`; anything else a :class:`StoreError`."""
    where = f"the Postgres run store at {target.label}"
    reason = target.scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return StoreUnavailable(
            f"no connection to {where} came free within {POOL_TIMEOUT_S:g} s: every pooled "
            "connection is busy or the server stopped answering. Raise max_size, or check "
            "the server.")
    if isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected
                  | errors.LockNotAvailable | errors.QueryCanceled):
        return StoreUnavailable(f"{where} gave up on a write that met another ({reason}); "
                                "retry it.")
    if isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName):
        return StoreError(
            f"the keel tables in {where} are gone ({reason}); they were dropped while the "
            "store was open. Open the store again to recreate them, or restore a backup.")
    if isinstance(exc, errors.InsufficientPrivilege):
        return StoreError(
            f"the database user may not do this in {where} ({reason}); grant it the use of "
            "the store's schema and tables, or connect as their owner.")
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(
            f"lost the connection to {where} ({reason}); retry. If it keeps failing, check "
            f"that the server is up (pg_isready -h {target.host} -p {target.port}).")
    return StoreError(f"{where} failed: {reason} ({exc.sqlstate or type(exc).__name__}).")
