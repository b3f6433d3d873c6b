"""The SQL of :meth:`RunStore.stats`, for SQLite and Postgres.

Three aggregate statements over the runs the query picks (the ``created_at``, agent and tenant
indexes find them), run in one read snapshot. The first makes one pass over those runs: the
counts and sums per group, and the latency percentiles per group and over all the runs
(``ROW_NUMBER`` and ``COUNT`` windows: SQLite has no percentile function, and one form keeps
both backends' answers identical). The second and third count the runs' failed tool results
and their model steps a cache answered, found through the journal's ``(run_id, key, phase)``
index. Only aggregates leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.store._stats import (
    FINISHED,
    PERCENTILES,
    UNREADABLE,
    StatsQuery,
    StatsResult,
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
    #: ``(c)`` -> the text column ``c`` read as JSON once per row (in the runs subquery).
    json: str = "{c}"
    #: what ends the runs subquery so that the planner does not inline it (which would
    #: evaluate its JSON and NaN checks once per use instead of once per row).
    fence: str = ""
    #: ``(col, p)`` -> the text column does not contain ``p``.
    lacks: str = "instr({col}, '{p}') = 0"
    #: ``j.data`` is a model response a cache answered (a condition).
    hit: str = "json_extract(j.data, '$.provider_details.cache') = 'hit'"
    #: the cost that hit saved, if it is a number.
    saved: str = ("CASE WHEN json_type(j.data, '$.provider_details.cache_saved.cost_usd') "
                  "IN ('integer', 'real') "
                  "THEN json_extract(j.data, '$.provider_details.cache_saved.cost_usd') END")
    #: ``(col, p)`` -> the text column contains ``p``.
    has: str = "instr({col}, '{p}') > 0"


SQLITE = Dialect(
    runs="runs", journal="journal", tasks="tasks", param="?",
    number=("CASE WHEN json_type({col}, '$.{key}') IN ('integer', 'real') "
            "THEN json_extract({col}, '$.{key}') END"),
    string="CASE WHEN json_type({col}, '$.{key}') = 'text' THEN json_extract({col}, '$.{key}') END",
    failed="json_type(j.data, '$.failure') = 'object'",
    error_type=("CASE WHEN json_type(j.data, '$.failure.error_type') = 'text' "
                "THEN json_extract(j.data, '$.failure.error_type') END"),
    day="CAST(r.created_at / 86400 AS INTEGER)",
    fence=" LIMIT -1 OFFSET 0",
)


def postgres(prefix: str) -> Dialect:
    """The Postgres dialect for the keel tables behind ``prefix`` (``"schema".`` or empty).
    Payloads are JSON text; the runs subquery reads ``usage`` and ``metadata`` as ``jsonb``
    once per row."""
    return Dialect(
        runs=f"{prefix}keel_runs", journal=f"{prefix}keel_journal", tasks=f"{prefix}keel_tasks",
        param="%s",
        number=("CASE WHEN jsonb_typeof({col} -> '{key}') = 'number' "
                "THEN ({col} ->> '{key}')::float8 END"),
        string=("CASE WHEN jsonb_typeof({col} -> '{key}') = 'string' "
                "THEN {col} ->> '{key}' END"),
        failed="jsonb_typeof(j.data::jsonb -> 'failure') = 'object'",
        error_type=("CASE WHEN jsonb_typeof(j.data::jsonb -> 'failure' -> 'error_type') = "
                    "'string' THEN j.data::jsonb -> 'failure' ->> 'error_type' END"),
        day="floor(r.created_at / 86400)::bigint",
        json="{c}::jsonb",
        fence=" OFFSET 0",
        lacks="strpos({col}, '{p}') = 0",
        hit="j.data::jsonb #>> '{provider_details,cache}' = 'hit'",
        saved=("CASE WHEN jsonb_typeof(j.data::jsonb #> '{provider_details,cache_saved,cost_usd}')"
               " = 'number' "
               "THEN (j.data::jsonb #>> '{provider_details,cache_saved,cost_usd}')::float8 END"),
        has="strpos({col}, '{p}') > 0",
    )


def _group_expr(d: Dialect, name: str) -> str:
    if name == "model":
        return d.string.format(col="r.metadata", key="model")
    if name == "day":
        return d.day
    return f"r.{name}"


def _base(d: Dialect, q: StatsQuery, by: tuple[str, ...], *, usage: bool = False
          ) -> tuple[str, list[object]]:
    """The ``base`` CTE: one row per picked run with its group keys (g0, g1 ...), status,
    duration, and (``usage``) its usage totals and whether it escalated."""
    where: list[str] = ["1 = 1"]
    params: list[object] = []
    for cond, value in (("agent = {p}", q.agent), ("tenant = {p}", q.tenant),
                        ("created_at >= {p}", q.since), ("created_at < {p}", q.until)):
        if value is not None:
            where.append(cond.format(p=d.param))
            params.append(value)
    cols = ["run_id", "agent", "tenant", "status", "created_at", "updated_at"]
    if usage:
        cols.append(f"CASE WHEN {readable(d, 'usage')} THEN {d.json.format(c='usage')} END "
                    "AS usage")
    if "model" in by:
        cols.append(f"CASE WHEN {readable(d, 'metadata')} THEN {d.json.format(c='metadata')} "
                    "END AS metadata")
    picked = f"(SELECT {', '.join(cols)} FROM {d.runs} WHERE {' AND '.join(where)}{d.fence}) r"
    groups = "".join(f"{_group_expr(d, name)} AS g{i}, " for i, name in enumerate(by))
    extra = ""
    if usage:
        extra = "".join(f", {d.number.format(col='r.usage', key=k)} AS {alias}" for k, alias in
                        (("input_tokens", "tin"), ("output_tokens", "tout"),
                         ("cost_usd", "cost")))
        extra += (f", CASE WHEN EXISTS (SELECT 1 FROM {d.tasks} t WHERE t.run_id = r.run_id "
                  "AND t.kind = 'escalation') THEN 1 ELSE 0 END AS esc")
    sql = (f"WITH base AS (SELECT {groups}r.run_id, r.status, "
           f"CASE WHEN r.status IN ({_statuses(FINISHED)}) THEN 1 ELSE 0 END AS fin, "
           f"r.updated_at - r.created_at AS dur{extra} FROM {picked}) ")
    return sql, params


def readable(d: Dialect, col: str) -> str:
    """The condition that the JSON text in ``col`` holds no NaN or Infinity (which neither
    backend parses; see :data:`keel.store._stats.UNREADABLE`)."""
    return "(" + " AND ".join(d.lacks.format(col=col, p=p) for p in UNREADABLE) + ")"


def _statuses(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in names)


def _pick(rn: str, n: str) -> str:
    return ", ".join(f"MAX(CASE WHEN fin = 1 AND {rn} = ({n} * {p} + 99) / 100 THEN dur END)"
                     for p in PERCENTILES)


def figures(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """One pass over the picked runs, per group: ``g..., runs, completed, failed, cancelled,
    running, suspended, escalated, input_tokens, output_tokens, cost_usd, p50, p95, p99,
    max`` and, when grouped, the p50, p95 and p99 of all the runs (non-NULL in the one
    group that holds that rank). Percentiles are nearest rank: the finished run at row
    ``ceil(p * n / 100)`` of its partition ordered by duration."""
    base, params = _base(d, q, by, usage=True)
    g = [f"g{i}" for i in range(len(by))]
    lead = "".join(x + ", " for x in g)
    frame = "ORDER BY dur ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING"
    windows = f"WINDOW w AS (PARTITION BY {lead}fin {frame})"
    whole = ""
    if g:  # the ranks among all the runs too, for the total's percentiles
        whole = ", ROW_NUMBER() OVER a AS rn_all, COUNT(*) OVER a AS n_all"
        windows += f", a AS (PARTITION BY fin {frame})"
    per_status = ", ".join(f"SUM(CASE WHEN status = '{s}' THEN 1 ELSE 0 END)" for s in
                           ("completed", "failed", "cancelled", "running", "suspended"))
    sql = (f"{base}, ranked AS (SELECT b.*, ROW_NUMBER() OVER w AS rn, COUNT(*) OVER w AS n"
           f"{whole} FROM base b {windows}) "
           f"SELECT {lead}COUNT(*), {per_status}, SUM(esc), SUM(tin), SUM(tout), SUM(cost), "
           f"{_pick('rn', 'n')}, MAX(CASE WHEN fin = 1 THEN dur END)"
           + (f", {_pick('rn_all', 'n_all')}" if g else "") + " FROM ranked"
           + (f" GROUP BY {', '.join(g)}" if g else ""))
    return sql, params


def failures(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """``g..., tool, error_type, count`` of the picked runs' failed tool results."""
    base, params = _base(d, q, by)
    g = [f"b.g{i}" for i in range(len(by))]
    lead = "".join(x + ", " for x in g)
    sql = (f"{base}SELECT {lead}j.name, {d.error_type} AS et, COUNT(*) FROM base b "
           f"JOIN {d.journal} j ON j.run_id = b.run_id "
           f"WHERE j.kind = 'tool' AND j.phase = 'result' "
           f"AND CASE WHEN {readable(d, 'j.data')} THEN {d.failed} ELSE 1 = 0 END "
           f"GROUP BY {lead}j.name, et")
    return sql, params


#: The text every cache hit's journal entry holds (``"cache": "hit"`` as keel's codec writes
#: it): a cheap test that skips parsing the other model steps.
HIT_TEXT = '"cache": "hit"'


def cache_hits(d: Dialect, q: StatsQuery, by: tuple[str, ...]) -> tuple[str, list[object]]:
    """``g..., hits, saved_usd`` of the picked runs' model steps a cache answered."""
    base, params = _base(d, q, by)
    g = [f"b.g{i}" for i in range(len(by))]
    lead = "".join(x + ", " for x in g)
    sql = (f"{base}SELECT {lead}COUNT(*), SUM({d.saved}) FROM base b "
           f"JOIN {d.journal} j ON j.run_id = b.run_id "
           f"WHERE j.kind = 'model' AND j.phase = 'result' "
           f"AND {d.has.format(col='j.data', p=HIT_TEXT)} "
           f"AND CASE WHEN {readable(d, 'j.data')} THEN {d.hit} ELSE 1 = 0 END"
           + (f" GROUP BY {', '.join(g)}" if g else ""))
    return sql, params


#: One statement of a stats query: ``(what, grouped, sql, params)``.
Statement = tuple[str, bool, str, list[object]]


def plan(d: Dialect, q: StatsQuery) -> list[Statement]:
    """The statements that answer ``q``: the figures, the failed tool results and the
    cache hits."""
    return [(what, True, *build(d, q, q.by)) for what, build in
            (("figures", figures), ("failures", failures), ("cache", cache_hits))]


def answer(q: StatsQuery, fetched: list[tuple[Statement, list[tuple[object, ...]]]]
           ) -> StatsResult:
    """The result, from each planned statement's rows. The total's counts and failures are
    the sums of the groups'; its percentiles come from the ``rn_all`` columns."""
    parts = {what: rows for (what, _, _, _), rows in fetched}
    n = len(q.by)
    rows = [r for r in parts["figures"] if r[n]]
    counted = {tuple(r[:n]): r[n:n + 10] for r in rows}
    timed = {tuple(r[:n]): r[n + 10:n + 14] for r in rows if r[n + 13] is not None}
    failed = [(tuple(r[:n]), str(r[n]), None if r[n + 1] is None else str(r[n + 1]),
               int(r[n + 2])) for r in parts["failures"]]  # type: ignore[call-overload]
    cached = {tuple(r[:n]): r[n:] for r in parts["cache"] if r[n]}
    grouped = assemble(q, counted, timed, failed, cached)
    if not q.by:
        return result_of(q, [], grouped)
    sums = [sum(_number(c[i]) for c in counted.values()) for i in range(10)]
    whole = [max((float(r[n + 14 + i]) for r in rows  # type: ignore[arg-type]
                  if r[n + 14 + i] is not None), default=None) for i in range(3)]
    most = max((float(t[3]) for t in timed.values()), default=None)  # type: ignore[arg-type]
    total = assemble(StatsQuery(by=(), top=q.top), {(): sums} if counted else {},
                     {(): (*whole, most)} if most is not None else {},
                     [((), t, et, c) for _, t, et, c in failed],
                     {(): [sum(_number(c[i]) for c in cached.values()) for i in range(2)]})
    return result_of(q, grouped, total)


def _number(value: object) -> float:
    return 0 if value is None else value  # type: ignore[return-value]
