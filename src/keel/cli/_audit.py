"""``keel audit``: every gated, approved, denied and blocked high-impact call, read from the
run store's journals (nothing else is kept: the journal is the audit trail). What each
outcome means, and how a journal is read for them, is :mod:`keel.observe`'s
``audit_events_of``."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._options import JsonOption, LimitOption, StoreOption, store_url
from keel.cli._text import SHORT, Screen, safe, to_json
from keel.observe import AUDIT_OUTCOMES, AuditEvent, audit_events_of
from keel.store import RunFilter, RunStore

_PAGE = 500
_RELATIVE = re.compile(r"^(\d{1,7})\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    agent: str | None = None
    tool: str | None = None
    since: float | None = None
    outcome: str | None = None
    limit: int = 200


def parse_since(text: str, now: float, option: str = "--since") -> float:
    """``--since`` (or ``option``): a duration back from now (``30m``, ``24h``, ``7d``,
    ``2w``) or an ISO date or date-time (``2026-12-01``, ``2026-12-01T08:00:00Z``; no zone
    means UTC)."""
    value = text.strip()
    m = _RELATIVE.match(value.lower())
    if m:
        return now - int(m.group(1)) * _SECONDS[m.group(2)]
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text[:40]!r} is not a duration (30m, 24h, 7d) or an ISO "
                       "date (2026-12-01, 2026-12-01T08:00:00Z).") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


async def audit_events(store: RunStore, filt: AuditFilter) -> list[AuditEvent]:
    """The events matching ``filt``, newest first, at most ``filt.limit``."""
    events: list[AuditEvent] = []
    offset = 0
    while True:
        page = await store.list_runs(RunFilter(agent=filt.agent, limit=_PAGE, offset=offset))
        for record in page:
            if filt.since is not None and record.updated_at < filt.since:
                continue  # nothing written to it since
            for ev in audit_events_of(record, await store.read_journal(record.run_id)):
                if _matches(ev, filt):
                    events.append(ev)
        if len(page) < _PAGE:
            break
        offset += _PAGE
    events.sort(key=lambda ev: (ev.at, ev.run_id, ev.step_key), reverse=True)
    return events[:filt.limit]


def _matches(ev: AuditEvent, filt: AuditFilter) -> bool:
    return ((filt.tool is None or ev.tool == filt.tool)
            and (filt.outcome is None or ev.outcome == filt.outcome)
            and (filt.since is None or ev.at >= filt.since))


async def _read(url: str, filt: AuditFilter) -> list[AuditEvent] | None:
    store = open_existing(url)
    if store is None:
        return None
    async with store:
        return await audit_events(store, filt)


_STYLE = {"approved": "green", "denied": "red", "blocked": "red", "gated": "yellow"}


def _table(events: list[AuditEvent]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("when (UTC)", "outcome", "tool", "agent", "by", "run", "reason"):
        table.add_column(column)
    for ev in events:
        when = datetime.fromtimestamp(ev.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, safe(ev.outcome, _STYLE.get(ev.outcome, "")),
                      safe(ev.tool, limit=SHORT), safe(ev.agent, limit=SHORT),
                      safe(ev.by, limit=SHORT), safe(ev.run_id), safe(ev.reason))
    return table


def audit(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's calls.")] = None,
    tool: Annotated[str | None, typer.Option("--tool", help="Only calls of this tool.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN",
        help="Only events since WHEN: a duration back (30m, 24h, 7d) or an ISO date or "
             "date-time (UTC unless it says otherwise).")] = None,
    outcome: Annotated[str | None, typer.Option(
        "--outcome", metavar="OUTCOME",
        help="Only this outcome: approved, denied, blocked or gated.")] = None,
    limit: LimitOption = 200,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """List the audit trail: gated, approved, denied and blocked tool calls, newest first.

    Read from the runs' journals: approval requests and decisions (who decided), calls a
    tool policy refused (permission_denied) and calls a guardrail blocked."""
    screen = Screen()
    with reported(screen):
        if outcome is not None and outcome not in AUDIT_OUTCOMES:
            raise CliError(f"--outcome {outcome[:40]!r} is not one of: "
                           f"{', '.join(AUDIT_OUTCOMES)}.")
        filt = AuditFilter(agent=agent, tool=tool, outcome=outcome, limit=limit,
                           since=None if since is None else parse_since(since, time.time()))
        url = store_url(ctx, store)
        events = asyncio.run(_read(url, filt))
        if as_json:
            typer.echo(to_json([ev.to_dict() for ev in events or []]))
            return
        if not events:
            where = "no run store there yet" if events is None else "nothing matches"
            screen.out.print(safe(f"No audit events in {url} ({where})."))
            return
        screen.out.print(_table(events))


def register(app: typer.Typer) -> None:
    """Add ``keel audit``."""
    app.command("audit")(audit)
