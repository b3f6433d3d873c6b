"""The SQL of :meth:`RunStore.stats`, for SQLite and Postgres.

Three aggregate statements over the runs the query picks (the ``created_at``, agent and
tenant indexes find them): counts and sums per group, the latency percentiles per group
(``ROW_NUMBER`` and ``COUNT`` windows: SQLite has no percentile function, and one form keeps
both backends' answers identical) and the failed tool results per group (the journal rows of
those runs, found through the journal's ``(run_id, key, phase)`` index). Each is run once
grouped and once for the total. Only aggregates leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.store._stats import (
    FINISHED,
    PERCENTILES,
    StatsQuery,
    StatsResult,
    StatsRow,
    assemble,
    result_of,
)


@dataclass(frozen=True, slots=True)
class Dialect:
    runs: str
    journal: str
    tasks: str
    param: str
    #: ``(column, key)`` -> the JSON number at ``key`` of the text column, else NULL.
    number: str
    #: ``(column, key)`` -> the JSON string at ``key`` of the text column, else NULL.
    string: str
    #: the JSON object at ``failure`` of ``j.data`` is an object (a condition).
    failed: str
    #: the failure's ``error_type`` if it is a string, else NULL.
    error_type: str
    day: str


SQLITE = Dialect(
    runs="runs", journal="journal", tasks="tasks", param="?",
    number=("CASE WHEN json_type({col}, '$.{key}') IN ('integer', 'real') "
            "THEN json_extract({col}, '$.{key}') END"),
    string="CASE WHEN json_type({col}, '$.{key}') = 'text' THEN json_extract({col}, '$.{key}') END",
    failed="json_type(j.data, '$.failure') = 'object'",
    error_type=("CASE WHEN json_type(j.data, '$.failure.error_type') = 'text' "
                "THEN json_extract(j.data, '$.failure.error_type') END"),
    day="CAST(r.created_at / 86400 AS INTEGER)",
)


def postgres(prefix: str) -> Dialect:
    """The Postgres dialect for the keel tables behind ``prefix`` (``"schema".`` or empty).
    Payloads are JSON text; they are read as ``jsonb`` here."""
    return Dialect(
        runs=f"{prefix}keel_runs", journal=f"{prefix}keel_journal", tasks=f"{prefix}keel_tasks",
        param="%s",
        number=("CASE WHEN jsonb_typeof({col}::jsonb -> '{key}') = 'number' "
                "THEN ({col}::jsonb ->> '{key}')::float8 END"),
        string=("CASE WHEN jsonb_typeof({col}::jsonb -> '{key}') = 'string' "
                "THEN {col}::jsonb ->> '{key}' END"),
        failed="jsonb_typeof(j.data::jsonb -> 'failure') = 'object'",
        error_type=("CASE WHEN jsonb_typeof(j.data::jsonb -> 'failure' -> 'error_type') = "
                    "'string' THEN j.data::jsonb -> 'failure' ->> 'error_type' END"),
        day="floor(r.created_at / 86400)::bigint",
    )


def _group_expr(d: Dialect, name: str) -> str:
    if name == "model":
        return d.string.format(col="r.metadata", key="model")
    if name == "day":
        return d.day
    return f"r.{name}"


def _base(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """The ``base`` CTE: one row per picked run with its group keys (g0, g1 ...)."""
    where: list[str] = ["1 = 1"]
    params: list[object] = []
    for cond, value in (("r.agent = {p}", q.agent), ("r.tenant = {p}", q.tenant),
                        ("r.created_at >= {p}", q.since), ("r.created_at < {p}", q.until)):
        if value is not None:
            where.append(cond.format(p=d.param))
            params.append(value)
    groups = "".join(f"{_group_expr(d, name)} AS g{i}, " for i, name in enumerate(by))
    usage = ", ".join(f"{d.number.format(col='r.usage', key=k)} AS {alias}" for k, alias in
                      (("input_tokens", "tin"), ("output_tokens", "tout"), ("cost_usd", "cost")))
    sql = (f"WITH base AS (SELECT {groups}r.run_id, r.status, "
           f"r.updated_at - r.created_at AS dur, {usage}, "
           f"CASE WHEN EXISTS (SELECT 1 FROM {d.tasks} t WHERE t.run_id = r.run_id "
           "AND t.kind = 'escalation') THEN 1 ELSE 0 END AS esc "
           f"FROM {d.runs} r WHERE {' AND '.join(where)}) ")
    return sql, params


def _statuses(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in names)


def counts(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """``g..., runs, completed, failed, cancelled, running, suspended, escalated,
    input_tokens, output_tokens, cost_usd`` per group."""
    base, params = _base(d, q, by)
    g = [f"g{i}" for i in range(len(by))]
    per_status = ", ".join(f"SUM(CASE WHEN status = '{s}' THEN 1 ELSE 0 END)" for s in
                           ("completed", "failed", "cancelled", "running", "suspended"))
    sql = (f"{base}SELECT {''.join(x + ', ' for x in g)}COUNT(*), {per_status}, SUM(esc), "
           "SUM(tin), SUM(tout), SUM(cost) FROM base"
           + (f" GROUP BY {', '.join(g)}" if g else ""))
    return sql, params


def latency(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """``g..., p50, p95, p99, max`` of the finished runs' durations per group (nearest
    rank: the value at row ``ceil(p * n / 100)``)."""
    base, params = _base(d, q, by)
    g = [f"g{i}" for i in range(len(by))]
    part = f"PARTITION BY {', '.join(g)} " if g else ""
    picks = ", ".join(f"MAX(CASE WHEN rn = (n * {p} + 99) / 100 THEN dur END)"
                      for p in PERCENTILES)
    sql = (f"{base}, ranked AS (SELECT {''.join(x + ', ' for x in g)}dur, "
           f"ROW_NUMBER() OVER ({part}ORDER BY dur) AS rn, COUNT(*) OVER ({part.strip()}) AS n "
           f"FROM base WHERE status IN ({_statuses(FINISHED)})) "
           f"SELECT {''.join(x + ', ' for x in g)}{picks}, MAX(dur) FROM ranked"
           + (f" GROUP BY {', '.join(g)}" if g else ""))
    return sql, params


def failures(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """``g..., tool, error_type, count`` of the picked runs' failed tool results."""
    base, params = _base(d, q, by)
    g = [f"b.g{i}" for i in range(len(by))]
    lead = "".join(x + ", " for x in g)
    sql = (f"{base}SELECT {lead}j.name, {d.error_type} AS et, COUNT(*) FROM base b "
           f"JOIN {d.journal} j ON j.run_id = b.run_id "
           f"WHERE j.kind = 'tool' AND j.phase = 'result' AND {d.failed} "
           f"GROUP BY {lead}j.name, et")
    return sql, params


#: One statement of a stats query: ``(what, grouped, sql, params)``.
Statement = tuple[str, bool, str, list[object]]


def plan(d: Dialect, q: StatsQuery) -> list[Statement]:
    """The statements that answer ``q``: each of counts, latency and failures for the total,
    then (if ``q.by``) for the groups."""
    out: list[Statement] = []
    for grouped, by in ((False, ()), (True, q.by)) if q.by else ((False, ()),):
        for what, build in (("counts", counts), ("latency", latency), ("failures", failures)):
            sql, params = build(d, q, by)
            out.append((what, grouped, sql, params))
    return out


def answer(q: StatsQuery, fetched: list[tuple[Statement, list[tuple[object, ...]]]]
           ) -> StatsResult:
    """The result, from each planned statement's rows."""
    parts: dict[tuple[str, bool], list[tuple[object, ...]]] = {
        (what, grouped): rows for (what, grouped, _, _), rows in fetched}
    rows: dict[bool, list[StatsRow]] = {}
    for grouped in (False, True) if q.by else (False,):
        n = len(q.by) if grouped else 0
        counted = {tuple(r[:n]): r[n:] for r in parts[("counts", grouped)] if r[n]}
        timed = {tuple(r[:n]): r[n:] for r in parts[("latency", grouped)] if r[n + 3] is not None}
        failed = [(tuple(r[:n]), str(r[n]), None if r[n + 1] is None else str(r[n + 1]),
                   int(r[n + 2])) for r in parts[("failures", grouped)]]  # type: ignore[call-overload]
        by = q.by if grouped else ()
        rows[grouped] = assemble(StatsQuery(by=by, top=q.top), counted, timed, failed)
    return result_of(q, rows.get(True, []), rows[False])
