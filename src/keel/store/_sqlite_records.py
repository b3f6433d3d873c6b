"""The SQLite run store's feedback and settings (schema 6; the statements are in
:mod:`keel.store._records_sql`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from keel.store import _records_sql as sql
from keel.store._base import check_tenant
from keel.store._messages import not_found
from keel.store._records import (
    Feedback,
    Setting,
    check_feedback_query,
    check_put_setting,
    check_setting_key,
    setting_conflict,
)

_LATEST = sql.latest_setting_sql("settings", "?")
_LIST = sql.list_settings_sql("settings", "?")
_HISTORY = sql.history_sql("settings", "?")
_INSERT_SETTING = sql.insert_setting_sql("settings", "?")
_INSERT_FEEDBACK = sql.insert_feedback_sql("feedback", "?")
_GET_FEEDBACK = f"SELECT {sql.FEEDBACK_COLUMNS} FROM feedback WHERE feedback_id = ?"


class SQLiteRecords:
    """The feedback and settings methods of :class:`keel.store.SQLiteStore` (a mixin: it
    uses the store's connection helpers)."""

    if TYPE_CHECKING:
        def _reading(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _writing(self) -> AbstractContextManager[sqlite3.Connection]: ...

    async def put_feedback(self, feedback: Feedback, *, tenant: str | None = None) -> Feedback:
        tenant = check_tenant(tenant)
        with self._writing() as db:
            row = db.execute("SELECT tenant FROM runs WHERE run_id = ?",
                             (feedback.run_id,)).fetchone()
            if row is None or (tenant is not None and row[0] != tenant):
                raise not_found(feedback.run_id)
            db.execute(_INSERT_FEEDBACK, sql.feedback_row(feedback, row[0]))
            return sql.feedback_from_row(
                db.execute(_GET_FEEDBACK, (feedback.feedback_id,)).fetchone())

    async def list_feedback(self, *, run_ids: Collection[str] | None = None,
                            tenant: str | None = None, since: float | None = None,
                            limit: int = 10_000) -> list[Feedback]:
        check_feedback_query(limit, since)
        tenant = check_tenant(tenant)
        ids = None if run_ids is None else list(dict.fromkeys(run_ids))
        out: list[Feedback] = []
        # SQLite allows a bounded number of parameters: ask in slices of run ids.
        for part in [ids] if ids is None or len(ids) <= 500 else \
                [ids[i:i + 500] for i in range(0, len(ids), 500)]:
            query, params = sql.list_feedback_sql("feedback", "?", part, tenant, since, limit)
            with self._reading() as db:
                out.extend(sql.feedback_from_row(r) for r in db.execute(query, params))
        if ids is not None and len(ids) > 500:
            out.sort(key=lambda f: (f.created_at, f.feedback_id))
        return out[:limit]

    async def get_setting(self, key: str) -> Setting | None:
        check_setting_key(key)
        with self._reading() as db:
            row = db.execute(_LATEST, (key,)).fetchone()
        return None if row is None else sql.setting_from_row(row)

    async def put_setting(self, key: str, value: Any, *, expect_version: int,
                          by: str | None = None, reason: str | None = None) -> Setting:
        body = check_put_setting(key, value, expect_version, by, reason)
        now = time.time()
        with self._writing() as db:
            row = db.execute("SELECT max(version) FROM settings WHERE key = ?",
                             (key,)).fetchone()
            have = int(row[0] or 0)
            if have != expect_version:
                raise setting_conflict(key, expect_version, have)
            db.execute(_INSERT_SETTING, (key, have + 1, body, now, by, reason))
        return Setting(key=key, value=json.loads(body), version=have + 1, updated_at=now,
                       updated_by=by, reason=reason)

    async def list_settings(self, prefix: str = "") -> list[Setting]:
        prefix = str(prefix)
        with self._reading() as db:
            rows = db.execute(_LIST, (len(prefix), prefix)).fetchall()
        return [sql.setting_from_row(r) for r in rows]

    async def setting_history(self, key: str, *, limit: int = 1000) -> list[Setting]:
        check_setting_key(key)
        check_feedback_query(limit, None)
        with self._reading() as db:
            rows = db.execute(_HISTORY, (key, limit)).fetchall()
        return [sql.setting_from_row(r) for r in rows]
