"""``keel cost``: spend by tenant or agent and window, and the monthly cost at a volume.

Read-only SQL over the run store's runs table (``runs`` on SQLite, ``keel_runs`` on
Postgres) and each run's usage totals as stored: the SQLite file is opened read-only, and
Postgres is read on one connection in a read-only transaction.
``--estimate 10000/day`` multiplies the mean and the 95th-percentile cost per run of the
runs selected by that volume, for a steady-state month (30.44 days).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import typer

from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import Screen, printable

_FORMATS = {"hour": ("%Y-%m-%dT%H", "YYYY-MM-DD\"T\"HH24"), "day": ("%Y-%m-%d", "YYYY-MM-DD"),
            "month": ("%Y-%m", "YYYY-MM")}
_PER_MONTH = {"hour": 24 * 30.4375, "day": 30.4375, "month": 1.0}
_VOLUME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(hour|day|month)\s*$")


@dataclass(frozen=True, slots=True)
class _Db:
    kind: str  # "sqlite" | "postgres"
    target: str
    schema: str | None = None


def _db(url: str) -> _Db:
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        schema = parse_qs(parts.query).get("schema", [None])[0]
        return _Db("postgres", urlunsplit(parts._replace(query="")), schema)
    if url in ("memory", "memory:", ":memory:"):
        raise CliError("keel cost reads a stored run store; memory: keeps nothing (give "
                       "--store sqlite:///path/runs.db or postgresql://...)")
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
    if "://" in path or not path:
        shown = printable(url.split("@")[-1])
        raise CliError(f"keel cost: cannot read run store {shown!r}: give a file path, "
                       "sqlite:///path or postgresql://...")
    return _Db("sqlite", path)


def _query(db: _Db, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    if db.kind == "sqlite":
        try:
            conn = sqlite3.connect(f"file:{db.target}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise CliError(f"keel cost: cannot open {db.target!r} ({exc})") from None
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise CliError(f"keel cost: {db.target!r} is not a keel run store ({exc})") from None
        finally:
            conn.close()
    import psycopg

    try:
        with psycopg.connect(db.target, connect_timeout=10) as pg:
            pg.read_only = True
            if db.schema:
                pg.execute("SELECT set_config('search_path', %s, true)", (db.schema,))
            sql = sql.replace("?", "%s").replace(" FROM runs", " FROM keel_runs")
            return pg.execute(sql, params).fetchall()
    except psycopg.Error as exc:
        raise CliError(f"keel cost: the run store could not be read "
                       f"({type(exc).__name__}: {exc})") from None


def _exprs(db: _Db, window: str) -> tuple[str, str, str]:
    """(window bucket, cost, tokens) SQL expressions for this database."""
    lite, pg = _FORMATS[window]
    if db.kind == "sqlite":
        return (f"strftime('{lite}', created_at, 'unixepoch')",
                "COALESCE(json_extract(usage, '$.cost_usd'), 0)",
                "COALESCE(json_extract(usage, '$.input_tokens'), 0) + "
                "COALESCE(json_extract(usage, '$.output_tokens'), 0)")
    return (f"to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', '{pg}')",
            "COALESCE((usage::jsonb->>'cost_usd')::float8, 0)",
            "COALESCE((usage::jsonb->>'input_tokens')::bigint, 0) + "
            "COALESCE((usage::jsonb->>'output_tokens')::bigint, 0)")


def _where(tenant: str | None, agent: str | None, since: float | None,
           ) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("tenant", tenant), ("agent", agent)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _volume(text: str) -> tuple[float, str]:
    m = _VOLUME.match(text)
    if m is None or not math.isfinite(float(m.group(1))):
        raise typer.BadParameter(f"{text!r} is not a volume like 10000/day (runs per hour, "
                                 "day or month)", param_hint="'--estimate'")
    return float(m.group(1)), m.group(2)


def spend(db: _Db, *, by: str, window: str, tenant: str | None, agent: str | None,
          since: float | None) -> list[dict[str, Any]]:
    bucket, cost, tokens = _exprs(db, window)
    key = "COALESCE(tenant, '-')" if by == "tenant" else "agent"
    where, params = _where(tenant, agent, since)
    rows = _query(db, f"SELECT {bucket} AS w, {key} AS k, COUNT(*), SUM({cost}), "
                      f"SUM({tokens}) FROM runs{where} GROUP BY w, k ORDER BY w DESC, k",
                  params)
    return [{"window": w, by: k, "runs": int(n), "cost_usd": float(c or 0),
             "tokens": int(t or 0)} for w, k, n, c, t in rows]


def estimate(db: _Db, volume: float, per: str, *, tenant: str | None, agent: str | None,
             since: float | None) -> dict[str, Any]:
    _, cost, _ = _exprs(db, "day")
    where, params = _where(tenant, agent, since)
    count, mean = _query(db, f"SELECT COUNT(*), AVG({cost}) FROM runs{where}", params)[0]
    if not count:
        raise CliError("keel cost --estimate: no runs match, so there is no history to "
                       "estimate from (run some, or widen --tenant/--agent/--days)")
    offset = max(0, math.ceil(0.95 * count) - 1)
    (p95,) = _query(db, f"SELECT {cost} AS c FROM runs{where} ORDER BY c LIMIT 1 OFFSET ?",
                    [*params, offset])[0]
    runs_per_month = volume * _PER_MONTH[per]
    return {"runs": int(count), "mean_cost_per_run_usd": float(mean or 0),
            "p95_cost_per_run_usd": float(p95 or 0), "volume": f"{volume:g}/{per}",
            "runs_per_month": runs_per_month,
            "monthly_usd_mean": runs_per_month * float(mean or 0),
            "monthly_usd_p95": runs_per_month * float(p95 or 0)}


def cost(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by", help="Group by tenant or agent.")] = "tenant",
    window: Annotated[str, typer.Option("--window", help="hour, day or month (UTC).")] = "day",
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    days: Annotated[float | None, typer.Option(
        "--days", min=0, help="Only runs started in the last DAYS days.")] = None,
    estimate_at: Annotated[str | None, typer.Option(
        "--estimate", metavar="N/PER",
        help="Estimate the monthly cost at this volume (e.g. 10000/day) from the selected "
             "runs' mean and p95 cost per run.")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Spend by tenant or agent and window, from the run store (read-only)."""
    import time

    if by not in ("tenant", "agent"):
        raise typer.BadParameter(f"{by!r} is not tenant or agent", param_hint="'--by'")
    if window not in _FORMATS:
        raise typer.BadParameter(f"{window!r} is not hour, day or month",
                                 param_hint="'--window'")
    volume = _volume(estimate_at) if estimate_at is not None else None
    screen = Screen()
    with reported(screen):
        db = _db(store_url(ctx, store))
        since = time.time() - days * 86400 if days is not None else None
        if volume is not None:
            out: Any = estimate(db, *volume, tenant=tenant, agent=agent, since=since)
        else:
            out = spend(db, by=by, window=window, tenant=tenant, agent=agent, since=since)
        _show(out, by, as_json)


def _show(out: Any, by: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(out, sort_keys=True))
    elif isinstance(out, dict):
        typer.echo(f"from {out['runs']} runs: mean ${out['mean_cost_per_run_usd']:.6f}, p95 "
                   f"${out['p95_cost_per_run_usd']:.6f} per run")
        typer.echo(f"at {out['volume']} ({out['runs_per_month']:,.0f} runs a month): "
                   f"${out['monthly_usd_mean']:,.2f} a month (mean), "
                   f"${out['monthly_usd_p95']:,.2f} (p95)")
    elif not out:
        typer.echo("no runs")
    else:
        typer.echo(f"{'window':<14} {by:<24} {'runs':>7} {'cost_usd':>12} {'tokens':>12}")
        for r in out:
            typer.echo(f"{r['window']:<14} {printable(str(r[by]))[:24]:<24} {r['runs']:>7} "
                       f"{r['cost_usd']:>12.6f} {r['tokens']:>12}")


def register(app: typer.Typer) -> None:
    """Add ``keel cost``."""
    app.command("cost")(cost)
