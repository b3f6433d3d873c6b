"""Feedback and settings in the SQL stores (schema 6): the tables and the statements, for
SQLite (``?`` parameters) and Postgres (``%s``, tables prefixed ``{s}keel_``).

``feedback`` has one row per record, ``feedback_id`` its key (a retried write is ignored);
its rows go with their run (pruned runs and deleted conversations take their feedback along).
``settings`` keeps every version of every key, ``(key, version)`` its key: writing version
``n + 1`` twice fails on that key, so two workers racing on a compare-and-set cannot both win
(SQLite serialises writers anyway; Postgres relies on the key).
"""

from __future__ import annotations

import json
from typing import Any

from keel.store._records import Feedback, Setting

_FEEDBACK = """CREATE TABLE {t}feedback (
        feedback_id {text} PRIMARY KEY,
        run_id      {text} NOT NULL REFERENCES {runs} (run_id){cascade},
        tenant      {text},
        thumbs      {text},
        score       {real},
        comment     {text},
        "by"        {text},
        metadata    {text} NOT NULL,
        created_at  {real} NOT NULL
    )"""
_SETTINGS = """CREATE TABLE {t}settings (
        key        {text} NOT NULL,
        version    integer NOT NULL,
        value      {text} NOT NULL,
        updated_at {real} NOT NULL,
        updated_by {text},
        reason     {text},
        PRIMARY KEY (key, version)
    )"""
_INDEXES = (
    "CREATE INDEX {i}feedback_by_run ON {t}feedback (run_id, created_at)",
    "CREATE INDEX {i}feedback_by_time ON {t}feedback (created_at, feedback_id)",
)


def _ddl(t: str, i: str, text: str, real: str, runs: str, cascade: str) -> tuple[str, ...]:
    return tuple(s.format(t=t, i=i, text=text, real=real, runs=runs, cascade=cascade)
                 for s in (_FEEDBACK, _SETTINGS, *_INDEXES))


#: SQLite: schema 5 -> 6.
SQLITE_V5_TO_V6: tuple[str, ...] = (
    *_ddl("", "", "TEXT", "REAL", "runs", ""),
    "UPDATE keel_meta SET value = '6' WHERE key = 'schema_version'",
)
#: Postgres: the tables of a new store (``{s}`` is the schema prefix), and schema 5 -> 6.
POSTGRES_TABLES: tuple[str, ...] = _ddl("{s}keel_", "keel_", "text", "double precision",
                                        "{s}keel_runs", " ON DELETE CASCADE")
POSTGRES_V5_TO_V6: tuple[str, ...] = (
    *POSTGRES_TABLES, "UPDATE {s}keel_meta SET value = '6' WHERE key = 'schema_version'")

FEEDBACK_COLUMNS = 'feedback_id, run_id, tenant, thumbs, score, comment, "by", metadata, created_at'
SETTING_COLUMNS = "key, version, value, updated_at, updated_by, reason"


def feedback_row(f: Feedback, tenant: str | None) -> tuple[Any, ...]:
    return (f.feedback_id, f.run_id, tenant, f.thumbs, f.score, f.comment, f.by,
            json.dumps(f.metadata, sort_keys=True, default=str), f.created_at)


def feedback_from_row(row: tuple[Any, ...] | Any) -> Feedback:
    return Feedback(feedback_id=row[0], run_id=row[1], tenant=row[2], thumbs=row[3],
                    score=row[4], comment=row[5], by=row[6], metadata=json.loads(row[7]),
                    created_at=row[8])


def setting_from_row(row: tuple[Any, ...] | Any) -> Setting:
    return Setting(key=row[0], version=row[1], value=json.loads(row[2]), updated_at=row[3],
                   updated_by=row[4], reason=row[5])


def list_feedback_sql(table: str, mark: str, run_ids: list[str] | None, tenant: str | None,
                      since: float | None, limit: int) -> tuple[str, list[Any]]:
    """The query of ``list_feedback`` (``mark`` is the parameter marker)."""
    where: list[str] = []
    params: list[Any] = []
    if run_ids is not None:
        where.append(f"run_id IN ({', '.join([mark] * len(run_ids))})" if run_ids else "1 = 0")
        params.extend(run_ids)
    if tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(tenant)
    if since is not None:
        where.append(f"created_at >= {mark}")
        params.append(since)
    sql = f"SELECT {FEEDBACK_COLUMNS} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    params.append(limit)
    return sql + f" ORDER BY created_at, feedback_id LIMIT {mark}", params


def latest_setting_sql(table: str, mark: str) -> str:
    return (f"SELECT {SETTING_COLUMNS} FROM {table} WHERE key = {mark} "
            f"ORDER BY version DESC LIMIT 1")


def list_settings_sql(table: str, mark: str) -> str:
    return (f"SELECT {SETTING_COLUMNS} FROM {table} s WHERE substr(key, 1, {mark}) = {mark} "
            f"AND version = (SELECT max(version) FROM {table} WHERE key = s.key) ORDER BY key")


def history_sql(table: str, mark: str) -> str:
    return (f"SELECT {SETTING_COLUMNS} FROM (SELECT {SETTING_COLUMNS} FROM {table} "
            f"WHERE key = {mark} ORDER BY version DESC LIMIT {mark}) h ORDER BY version")


def insert_setting_sql(table: str, mark: str) -> str:
    return f"INSERT INTO {table} ({SETTING_COLUMNS}) VALUES ({', '.join([mark] * 6)})"


def insert_feedback_sql(table: str, mark: str) -> str:
    return (f"INSERT INTO {table} ({FEEDBACK_COLUMNS}) VALUES ({', '.join([mark] * 9)}) "
            f"ON CONFLICT (feedback_id) DO NOTHING")
