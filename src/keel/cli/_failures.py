"""``keel runs failures``: the failure-modes report. The top ways runs failed, were blocked
or escalated, with counts, example run ids and the mitigation keel has in place, computed
from the runs' records and journals by :func:`keel.observe.failure_modes`. Read-only: it
never creates or initialises a store."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from keel.cli._audit import parse_since
from keel.cli._commands import open_existing
from keel.cli._errors import reported
from keel.cli._options import JsonOption, StoreOption, store_url
from keel.cli._text import SHORT, Screen, safe, to_json
from keel.observe import FailureReport, failure_modes

_STYLE = {"failed": "red", "blocked": "yellow", "escalated": "magenta", "tool_error": "dim"}


async def _read(url: str, since: float | None, agent: str | None, tenant: str | None,
                version: str | None, limit: int) -> FailureReport | None:
    store = open_existing(url)
    if store is None:
        return None
    async with store:
        return await failure_modes(store, since=since, agent=agent, tenant=tenant,
                                   version=version, limit=limit)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M")


def _table(report: FailureReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="Failure modes", title_justify="left")
    for name, justify in (("kind", "left"), ("cause", "left"), ("where", "left"),
                          ("count", "right"), ("runs", "right"), ("share", "right"),
                          ("first / last seen (UTC)", "left"), ("example runs", "left"),
                          ("mitigation in place", "left")):
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         overflow="fold", no_wrap=name in ("kind", "count", "runs", "share"))
    for m in report.modes:
        table.add_row(safe(m.kind, _STYLE.get(m.kind, "")), safe(m.cause, "bold", SHORT),
                      safe(m.where, limit=SHORT), str(m.count), str(m.runs), f"{m.share:.1%}",
                      f"{_when(m.first_seen)} / {_when(m.last_seen)}",
                      safe("\n".join(m.examples)), safe(m.mitigation, "dim"))
    return table


def _summary(report: FailureReport) -> Text:
    def pct(n: int) -> str:
        return f"{n / report.runs:.1%}" if report.runs else "-"

    line = Text(f"{report.runs:,} runs: {report.failed:,} failed ({pct(report.failed)}), "
                f"{report.blocked:,} blocked at least once ({pct(report.blocked)}), "
                f"{report.escalated:,} escalated ({pct(report.escalated)}).")
    if not report.complete:
        line.append(" Only the newest runs were read; narrow it with --since.", style="yellow")
    return line


def runs_failures(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="Runs created since WHEN: a duration back (30m, 24h, 7d) or an ISO date or "
             "date-time (UTC unless it says otherwise). Default: every run.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="Only this tenant's runs.")] = None,
    version: Annotated[str | None, typer.Option(
        "--version", metavar="HASH",
        help="Only the runs this agent version served (the hash each run records: "
             "`keel runs show RUN_ID --json`, and each mode's versions in --json).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500,
                                       help="At most this many modes.")] = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Report the top ways runs failed, were blocked or escalated (failure modes).

    Each mode: what happened (error type, guard, approval denied, budget, breaker, rate
    limit, escalation trigger, tool error), where (tool, model, input), how often and in how
    many runs (share of the runs in the window), first and last seen, three example run ids
    (`keel runs show ID`) and the mitigation keel has in place. Read from the journals;
    nothing is written."""
    screen = Screen()
    with reported(screen):
        start = None if since is None else parse_since(since, time.time())
        url = store_url(ctx, store)
        report = asyncio.run(_read(url, start, agent, tenant, version, limit))
        if as_json:
            typer.echo(to_json(report.to_dict() if report is not None else
                               {"runs": 0, "modes": [], "note": "no run store there yet"}))
            return
        if report is None:
            screen.out.print(safe(f"No runs: there is no run store at {url} yet."))
            return
        if not report.runs:
            screen.out.print(safe("No runs match (the window or the filters leave none)."))
            return
        if report.modes:
            screen.out.print(_table(report))
        else:
            screen.out.print(safe("Nothing failed, was blocked or escalated.", "green"))
        screen.out.print(_summary(report))


def register(runs_app: typer.Typer) -> None:
    """Add ``keel runs failures``."""
    runs_app.command("failures")(runs_failures)
