"""The Postgres run store's feedback and settings (schema 6; the statements are in
:mod:`keel.store._records_sql`)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

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

if TYPE_CHECKING:
    from keel.store._postgres_connect import Conn
    from keel.store._postgres_sql import Statements

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Sql:
    feedback: str
    settings: str
    get_feedback: str
    insert_feedback: str
    run_tenant: str
    latest: str
    max_version: str
    insert_setting: str
    list: str
    history: str


@functools.lru_cache(maxsize=64)
def _statements(s: str) -> _Sql:
    f, st = f"{s}keel_feedback", f"{s}keel_settings"
    return _Sql(
        feedback=f, settings=st,
        get_feedback=f"SELECT {sql.FEEDBACK_COLUMNS} FROM {f} WHERE feedback_id = %s",
        insert_feedback=sql.insert_feedback_sql(f, "%s"),
        run_tenant=f"SELECT tenant FROM {s}keel_runs WHERE run_id = %s",
        latest=sql.latest_setting_sql(st, "%s"),
        max_version=f"SELECT max(version) FROM {st} WHERE key = %s",
        insert_setting=sql.insert_setting_sql(st, "%s"),
        list=sql.list_settings_sql(st, "%s"),
        history=sql.history_sql(st, "%s"))


class PostgresRecords:
    """The feedback and settings methods of :class:`keel.store.PostgresStore` (a mixin: it
    uses the store's pooled-connection helper)."""

    if TYPE_CHECKING:
        async def _with(self, work: Callable[[Conn, Statements], Awaitable[T]], *,
                        transaction: bool = False) -> T: ...

    @staticmethod
    def _records_sql(q: Statements) -> _Sql:
        from keel.store._postgres_sql import _prefix

        return _statements(_prefix(q.schema))

    async def put_feedback(self, feedback: Feedback, *, tenant: str | None = None) -> Feedback:
        tenant = check_tenant(tenant)

        async def work(conn: Conn, q: Statements) -> Feedback:
            s = self._records_sql(q)
            row = await (await conn.execute(s.run_tenant, (feedback.run_id,))).fetchone()
            if row is None or (tenant is not None and row[0] != tenant):
                raise not_found(feedback.run_id)
            await conn.execute(s.insert_feedback, sql.feedback_row(feedback, row[0]))
            got = await (await conn.execute(s.get_feedback, (feedback.feedback_id,))).fetchone()
            return sql.feedback_from_row(got)

        return await self._with(work, transaction=True)

    async def list_feedback(self, *, run_ids: Collection[str] | None = None,
                            tenant: str | None = None, since: float | None = None,
                            limit: int = 10_000) -> list[Feedback]:
        check_feedback_query(limit, since)
        tenant = check_tenant(tenant)
        ids = None if run_ids is None else list(dict.fromkeys(run_ids))

        async def work(conn: Conn, q: Statements) -> list[Feedback]:
            query, params = sql.list_feedback_sql(self._records_sql(q).feedback, "%s", ids, tenant,
                                                  since, limit)
            rows = await (await conn.execute(query, params)).fetchall()
            return [sql.feedback_from_row(r) for r in rows]

        return await self._with(work)

    async def get_setting(self, key: str) -> Setting | None:
        check_setting_key(key)

        async def work(conn: Conn, q: Statements) -> Setting | None:
            row = await (await conn.execute(self._records_sql(q).latest, (key,))).fetchone()
            return None if row is None else sql.setting_from_row(row)

        return await self._with(work)

    async def put_setting(self, key: str, value: Any, *, expect_version: int,
                          by: str | None = None, reason: str | None = None) -> Setting:
        body = check_put_setting(key, value, expect_version, by, reason)
        now = time.time()

        async def work(conn: Conn, q: Statements) -> int:
            s = self._records_sql(q)
            row = await (await conn.execute(s.max_version, (key,))).fetchone()
            have = int((row[0] if row else 0) or 0)
            if have != expect_version:
                raise setting_conflict(key, expect_version, have)
            try:
                await conn.execute(s.insert_setting, (key, have + 1, body, now, by, reason))
            except psycopg.errors.UniqueViolation:  # another writer took this version first
                raise setting_conflict(key, expect_version, have + 1) from None
            return have + 1

        version = await self._with(work, transaction=True)
        return Setting(key=key, value=json.loads(body), version=version, updated_at=now,
                       updated_by=by, reason=reason)

    async def list_settings(self, prefix: str = "") -> list[Setting]:
        prefix = str(prefix)

        async def work(conn: Conn, q: Statements) -> list[Setting]:
            cur = await conn.execute(self._records_sql(q).list, (len(prefix), prefix))
            rows = await cur.fetchall()
            return [sql.setting_from_row(r) for r in rows]

        return await self._with(work)

    async def setting_history(self, key: str, *, limit: int = 1000) -> list[Setting]:
        check_setting_key(key)
        check_feedback_query(limit, None)

        async def work(conn: Conn, q: Statements) -> list[Setting]:
            rows = await (await conn.execute(self._records_sql(q).history, (key, limit))).fetchall()
            return [sql.setting_from_row(r) for r in rows]

        return await self._with(work)
