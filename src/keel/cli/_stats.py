"""``keel stats``: run analytics from the run store (success and escalation rates, latency
percentiles, tokens, cost, failing tools), aggregated by the store's own SQL, and the user
feedback given in the window (up, down, negative rate). Read-only: it never creates or
initialises a store."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from keel.cli._audit import parse_since
from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import SHORT, Screen, safe, to_json
from keel.core import StoreError
from keel.runtime import FeedbackSummary, feedback_summary
from keel.store import GROUP_KEYS, RunFilter, RunStore, StatsQuery, StatsResult, StatsRow

GroupOption = Annotated[str, typer.Option(
    "--by", metavar="KEYS",
    help="Group by these, comma-separated: agent, tenant, model, day (UTC); 'none' for the "
         "total only.")]


def parse_by(text: str) -> tuple[str, ...]:
    """``--by``: comma-separated group keys, or ``none``."""
    keys = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    if keys in ((), ("none",)):
        return ()
    for key in keys:
        if key not in GROUP_KEYS:
            raise CliError(f"--by {key[:40]!r} is not one of: {', '.join(GROUP_KEYS)} "
                           "(comma-separated), or none.")
    if len(set(keys)) != len(keys):
        raise CliError(f"--by {text[:60]!r} names a key twice.")
    return keys


def stats(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="Only this tenant's runs.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="Runs created since WHEN: a duration back (30m, 24h, 7d) or an ISO date or "
             "date-time (UTC unless it says otherwise).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="WHEN", help="Runs created before WHEN (same forms as --since).")
    ] = None,
    by: GroupOption = "agent",
    top: Annotated[int, typer.Option("--top", min=0, max=100,
                                     help="How many failing tools and error types.")] = 5,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Run analytics: success and escalation rates, latency p50/p95/p99, tokens and cost,
    and the top failing tools, per agent (or --by tenant, model, day).

    Aggregated by the store (SQL on SQLite and Postgres); nothing is written. An unknown
    tenant or agent is not an error: its figures are empty, with a note."""
    screen = Screen()
    with reported(screen):
        now = time.time()
        start = None if since is None else parse_since(since, now)
        end = None if until is None else parse_since(until, now, "--until")
        if start is not None and end is not None and start >= end:
            raise CliError(f"--since {since!r} is not before --until {until!r}; the window "
                           "is [since, until).")
        query = StatsQuery(agent=agent, tenant=tenant, by=parse_by(by),  # type: ignore[arg-type]
                           top=top, since=start, until=end)
        url = store_url(ctx, store)
        result, feedback, notes = asyncio.run(_read(url, query))
        if as_json:
            typer.echo(to_json({**result.to_dict(), "feedback": feedback.to_dict(),
                                "notes": notes}))
            return
        if result.total.runs:
            screen.out.print(_table(result))
            screen.out.print(_failures(result.total))
            t = result.total
            screen.out.print(safe(f"Cache hits: {t.cache_hits:,} model steps answered from a "
                                  f"cache, ${t.cache_saved_usd:,.4f} saved."))
            screen.out.print(safe(feedback_line(feedback)))
        for note in notes:
            screen.out.print(safe(note))


async def _read(url: str, query: StatsQuery) -> tuple[StatsResult, FeedbackSummary,
                                                        list[str]]:
    store = open_existing(url)
    if store is None:
        return StatsResult(query=query, total=StatsRow()), FeedbackSummary(), [
            f"No runs: there is no run store at {url} yet."]
    async with store:
        result = await store.stats(query)
        feedback = await _feedback(store, query)
        notes = []
        for name, value in (("tenant", query.tenant), ("agent", query.agent)):
            if result.total.runs or value is None:
                continue
            filt = (RunFilter(limit=1, tenant=value) if name == "tenant"
                    else RunFilter(limit=1, agent=value))
            known = await store.list_runs(filt)
            if not known:
                notes.append(f"No runs: the store has no runs of {name} {value!r} (is the "
                             f"{name} id spelled as it was given to run()?).")
        if not result.total.runs and not notes:
            notes.append("No runs match (the window or the filters leave none).")
    return result, feedback, notes


async def _feedback(store: RunStore, query: StatsQuery) -> FeedbackSummary:
    """The feedback given in the query's window on its tenant's runs (and, with an agent,
    on that agent's newest 10,000 runs): one read of the feedback table, apart from the
    SQL aggregates."""
    run_ids = None
    if query.agent is not None:
        runs = await store.list_runs(RunFilter(agent=query.agent, tenant=query.tenant,
                                               limit=10_000))
        run_ids = [r.run_id for r in runs]
    try:
        return await feedback_summary(store, run_ids, query.tenant, query.since,
                                      until=query.until)
    except StoreError:  # a store that keeps no feedback (a custom backend): no line
        return FeedbackSummary()


def feedback_line(summary: FeedbackSummary) -> str:
    """``keel stats``'s feedback line."""
    if not summary.verdicts:
        return "Feedback: none given in this window."
    mean = "-" if summary.mean_score is None else f"{summary.mean_score:.2f}"
    return (f"Feedback: {summary.verdicts:,} verdict(s) on {summary.runs:,} run(s): "
            f"{summary.up:,} up, {summary.down:,} down, mean score {mean}, negative rate "
            f"{_pct(summary.negative_rate)}.")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _row(row: StatsRow) -> list[Any]:
    top = row.failing_tools[0] if row.failing_tools else None
    return [str(row.runs), _pct(row.success_rate), _pct(row.escalation_rate),
            _secs(row.p50_s), _secs(row.p95_s), _secs(row.p99_s), f"{row.tokens:,}",
            f"${row.cost_usd:,.4f}",
            "-" if row.cost_per_run is None else f"${row.cost_per_run:,.4f}",
            safe("-" if top is None else f"{top[0]} ({top[1]})", limit=SHORT)]


_COLUMNS = ("runs", "success", "escalated", "p50", "p95", "p99", "tokens", "cost",
            "cost/run", "top failing tool")


def _table(result: StatsResult) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="Run analytics")
    for key in result.query.by:
        table.add_column(key)
    for name in _COLUMNS:
        table.add_column(name, justify="left" if name == "top failing tool" else "right")
    for row in result.groups:
        table.add_row(*(safe("(none)" if v is None else v, limit=SHORT)
                        for v in row.key.values()), *_row(row))
    table.add_row(*(["[b]total[/b]"] + [""] * (len(result.query.by) - 1)
                    if result.query.by else []), *_row(result.total),
                  end_section=True)
    return table


def _failures(total: StatsRow) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"Tool failures ({total.tool_failures})")
    for name in ("failing tool", "failures", "error type", "failures"):
        table.add_column(name)
    tools, errors = list(total.failing_tools), list(total.error_types)
    for i in range(max(len(tools), len(errors))):
        t = tools[i] if i < len(tools) else ("", "")
        e = errors[i] if i < len(errors) else ("", "")
        table.add_row(safe(str(t[0]), limit=SHORT), str(t[1]), safe(str(e[0]), limit=SHORT),
                      str(e[1]))
    return table


def register(app: typer.Typer) -> None:
    """Add ``keel stats``."""
    app.command("stats")(stats)
