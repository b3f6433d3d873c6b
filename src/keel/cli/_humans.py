"""``keel approvals`` and ``keel escalations``: the human queue from the terminal.

Each command opens the store once and closes it. How tasks are shown is in
:mod:`keel.cli._humans_render`. Refusals (an unknown id, a decided task, a run that no longer
waits, bad arguments) are user errors: one red line and exit code 2, with nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.table import Table

from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._humans_render import (
    Row,
    approval_json,
    approval_panel,
    approvals_table,
    decided_line,
    done_line,
    escalation_json,
    escalation_view,
    escalations_table,
    next_step,
)
from keel.cli._options import ByOption, JsonOption, LimitOption, StoreOption, store_url
from keel.cli._text import Screen, printable, safe, to_json
from keel.core import RunNotFound, TaskNotFound, UserError
from keel.runtime import (
    approval_reviews,
    claim_escalation,
    decide_approval,
    resolve_escalation,
)
from keel.store import (
    TERMINAL_STATUSES,
    HumanTask,
    RunRecord,
    RunStore,
    TaskFilter,
    TaskKind,
    TaskStatus,
)

EPILOG = ("Exit codes: 0 success · 2 usage or user error (unknown id, already decided, the run "
          "no longer waits, bad input; nothing is changed).")
#: Longest comment, note or answer accepted on the command line (characters).
MAX_TEXT = 65_536
#: Longest edited-arguments JSON accepted (characters).
MAX_ARGS = 1_000_000
#: Longest --by name.
MAX_NAME = 200

approvals_app = typer.Typer(
    help="List, show, approve and deny tool calls that wait for a person's approval.",
    no_args_is_help=True, epilog=EPILOG)
escalations_app = typer.Typer(
    help="List, show, claim and resolve runs that an agent handed to a person.",
    no_args_is_help=True, epilog=EPILOG)

QueueOption = Annotated[str | None, typer.Option("--queue", help="Only this queue.")]
IdArgument = Annotated[str, typer.Argument(metavar="ID")]


def _who(by: str | None) -> str:
    who = by if by is not None else (os.environ.get("USER") or "cli")
    _checked_text("--by", who, MAX_NAME)
    if printable(who) != who:
        raise CliError("--by must be a plain name, without control characters; the decision "
                       "is audited under it.")
    return who


def _checked_text(option: str, value: str | None, limit: int) -> str:
    if value is None:
        return ""
    if len(value) > limit:
        raise CliError(f"{option} is {len(value):,} characters long; at most {limit:,} are "
                       "accepted. Nothing was changed.")
    return value


# ------------------------------------------------------------------------------- reading


def _task_store(url: str, kind: TaskKind, task_id: str) -> RunStore:
    """The store holding task ``task_id``, for ``async with``."""
    store = open_existing(url)
    if store is None:
        raise TaskNotFound(f"no {kind} {task_id!r}: there is no run store at {url} yet. Pass "
                           "--store (or set KEEL_STORE) to the store the run was written to.")
    return store


async def _rows(url: str, *, kind: TaskKind, statuses: Iterable[TaskStatus | None],
                queue: str | None, limit: int, live_only: bool,
                tenant: str | None = None) -> list[Row] | None:
    """Up to ``limit`` tasks in the given statuses, oldest first; with ``live_only`` only
    those whose run still waits (tasks of finished runs are paged past, not counted)."""
    store = open_existing(url)
    if store is None:
        return None
    async with store:
        runs: dict[str, RunRecord | None] = {}
        rows: list[Row] = []
        for status in statuses:
            rows += await _status_rows(store, runs, TaskFilter(
                kind=kind, status=status, queue=queue, tenant=tenant, limit=limit), limit,
                live_only)
        rows.sort(key=lambda r: (r.task.created_at, r.task.task_id))
        return rows[:limit]


async def _status_rows(store: RunStore, runs: dict[str, RunRecord | None], filt: TaskFilter,
                       limit: int, live_only: bool) -> list[Row]:
    rows: list[Row] = []
    while len(rows) < limit:
        page = await store.list_tasks(filt)
        for task in page:
            if task.run_id not in runs:
                runs[task.run_id] = await _run_or_none(store, task.run_id)
            run = runs[task.run_id]
            if not live_only or (run is not None and run.status not in TERMINAL_STATUSES):
                rows.append(await _made_row(store, task, run))
        if len(page) < filt.limit:
            break
        filt = dataclasses.replace(filt, offset=filt.offset + filt.limit)
    return rows[:limit]


async def _run_or_none(store: RunStore, run_id: str) -> RunRecord | None:
    try:
        return await store.get_run(run_id)
    except RunNotFound:
        return None


async def _row(store: RunStore, task: HumanTask) -> Row:
    return await _made_row(store, task, await _run_or_none(store, task.run_id))


async def _made_row(store: RunStore, task: HumanTask, run: RunRecord | None) -> Row:
    """The row of ``task``: with an approval's reviews so far when it needs several people."""
    reviews = await approval_reviews(store, task) if task.kind == "approval" else []
    return Row(task, run, reviews)


async def _one(url: str, kind: TaskKind, task_id: str) -> Row:
    async with _task_store(url, kind, task_id) as store:
        task = await store.get_task(task_id)
        if task.kind != kind:
            other = "approvals show" if task.kind == "approval" else "escalations show"
            raise UserError(f"{task_id} is an {task.kind}, not an {kind}; use `keel {other} "
                            f"{task_id}`.")
        return await _row(store, task)


# ----------------------------------------------------------------------- list and show

TenantOption = Annotated[str | None, typer.Option(
    "--tenant", metavar="TENANT",
    help="Only this tenant's (filtered in the store's query; default: every tenant's).")]

_JSON: dict[TaskKind, Callable[[Row, float], dict[str, Any]]] = {
    "approval": approval_json, "escalation": escalation_json}
_VIEW: dict[TaskKind, Callable[[Row, float], RenderableType]] = {
    "approval": approval_panel, "escalation": escalation_view}


def _list_command(ctx: typer.Context, store: str | None, *, kind: TaskKind,
                  statuses: Callable[[], tuple[TaskStatus | None, ...]], live_only: bool,
                  queue: str | None, limit: int, as_json: bool, none: str,
                  table: Callable[[list[Row], float, int], Table],
                  tenant: str | None = None) -> None:
    """``keel approvals|escalations list``: JSON, a line saying there are none, or a table."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        rows = asyncio.run(_rows(url, kind=kind, statuses=statuses(), queue=queue,
                                 limit=limit, live_only=live_only, tenant=tenant))
        now = time.time()
        if as_json:
            typer.echo(to_json([_JSON[kind](r, now) for r in rows or []]))
            return
        if not rows:
            where = "there is no run store there yet" if rows is None else none
            screen.out.print(safe(f"No {kind}s in {url} ({where})."))
            return
        screen.out.print(table(rows, now, screen.out.width))


def _show_command(ctx: typer.Context, store: str | None, kind: TaskKind, task_id: str,
                  as_json: bool) -> None:
    """``keel approvals|escalations show``: the task as JSON or as its panel."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        row = asyncio.run(_one(url, kind, task_id))
        now = time.time()
        if as_json:
            typer.echo(to_json(_JSON[kind](row, now)))
            return
        screen.out.print(_VIEW[kind](row, now))


# ---------------------------------------------------------------------------- approvals


@approvals_app.command("list")
def approvals_list(
    ctx: typer.Context,
    queue: QueueOption = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Also decided approvals and those whose run finished.")] = False,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
    store: StoreOption = None,
    tenant: TenantOption = None,
) -> None:
    """List the approvals that wait for a decision, oldest first, with the agent's reasoning.

    Open or claimed approvals whose run still waits; --all adds decided ones."""

    def table(rows: list[Row], now: float, width: int) -> Table:
        return approvals_table(rows, now, with_status=all_ or any(
            r.task.status == "claimed" for r in rows), width=width)

    _list_command(ctx, store, kind="approval",
                  statuses=lambda: (None,) if all_ else ("open", "claimed"),
                  live_only=not all_, queue=queue, limit=limit, as_json=as_json,
                  none="none waiting", table=table, tenant=tenant)


@approvals_app.command("show")
def approvals_show(ctx: typer.Context, approval_id: IdArgument, as_json: JsonOption = False,
                   store: StoreOption = None) -> None:
    """Show one approval in full: the call, why it waits, the agent's reasoning and the input."""
    _show_command(ctx, store, "approval", approval_id, as_json)


async def _audit(url: str, task: HumanTask, action: str, who: str, **details: Any) -> None:
    """The decision in the audit log that ``keel serve`` and ``keel keys`` keep as well (the
    journal holds it already): one log of every human decision, from the API or the CLI. A
    store that holds no keel store (memory) has no log to write to."""
    if url.strip().lower().startswith("memory"):
        return
    from keel.server import KeyStore

    tenant = task.data.get("tenant") if isinstance(task.data, dict) else None
    async with KeyStore(url) as keys:
        await keys.audit(who=who, tenant=tenant if isinstance(tenant, str) else None,
                         action=action, target=task.task_id,
                         details={"run_id": task.run_id, "via": "cli",
                                  **{k: v for k, v in details.items() if v is not None}})


async def _decide(url: str, approval_id: str, *, approve: bool, who: str,
                  comment: str | None, edit_args: str | None) -> Row:
    async with _task_store(url, "approval", approval_id) as store:
        task = await decide_approval(approval_id, store=store, approve=approve, by=who,
                                     comment=comment, edited_args=edit_args)
        await _audit(url, task, "approval.approve" if approve else "approval.deny", who,
                     comment=comment, edited=edit_args is not None or None)
        return await _row(store, task)


@approvals_app.command("approve")
def approvals_approve(
    ctx: typer.Context,
    approval_id: IdArgument,
    edit_args: Annotated[str | None, typer.Option(
        "--edit-args", metavar="JSON",
        help="Approve with these arguments instead (a JSON object, checked against the "
             "tool's schema).")] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="A note for the record.")]
    = None,
    by: ByOption = None,
    store: StoreOption = None,
) -> None:
    """Approve a tool call: the run becomes runnable and the call runs."""
    _decide_command(ctx, approval_id, approve=True, comment=comment, edit_args=edit_args, by=by,
                    store=store)


@approvals_app.command("deny")
def approvals_deny(
    ctx: typer.Context,
    approval_id: IdArgument,
    comment: Annotated[str | None, typer.Option(
        "--comment", help="Why (required): the model reads it to choose what to do instead.")]
    = None,
    by: ByOption = None,
    store: StoreOption = None,
) -> None:
    """Deny a tool call: the call does not run; the model gets your comment instead."""
    _decide_command(ctx, approval_id, approve=False, comment=comment, edit_args=None, by=by,
                    store=store)


def _decide_command(ctx: typer.Context, approval_id: str, *, approve: bool,
                    comment: str | None, edit_args: str | None, by: str | None,
                    store: str | None) -> None:
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        who = _who(by)
        _checked_text("--comment", comment, MAX_TEXT)
        _checked_text("--edit-args", edit_args, MAX_ARGS)
        row = asyncio.run(_decide(url, approval_id, approve=approve, who=who, comment=comment,
                                  edit_args=edit_args))
        screen.line(decided_line(row, approve=approve, who=who))
        screen.line(next_step(row.run, row.task.run_id))


# -------------------------------------------------------------------------- escalations


def _escalation_statuses(status: str | None) -> tuple[TaskStatus | None, ...]:
    if status is None:
        return ("open", "claimed")
    if status not in ("open", "claimed", "resolved"):
        raise CliError(f"unknown status {status!r}; use open, claimed or resolved.")
    return (status,)  # type: ignore[return-value]


@escalations_app.command("list")
def escalations_list(
    ctx: typer.Context,
    queue: QueueOption = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="open, claimed or resolved. Default: open and claimed ones whose "
                         "run still waits.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
    store: StoreOption = None,
    tenant: TenantOption = None,
) -> None:
    """List the escalations, oldest first, as a queue."""
    _list_command(ctx, store, kind="escalation", statuses=lambda: _escalation_statuses(status),
                  live_only=status is None, queue=queue, limit=limit, as_json=as_json,
                  none="none match",
                  table=lambda rows, now, width: escalations_table(rows, now, width=width),
                  tenant=tenant)


@escalations_app.command("show")
def escalations_show(ctx: typer.Context, escalation_id: IdArgument,
                     as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Show one escalation's packet: the request, the reason, the evidence and the deadline."""
    _show_command(ctx, store, "escalation", escalation_id, as_json)


async def _claim(url: str, escalation_id: str, who: str) -> HumanTask:
    async with _task_store(url, "escalation", escalation_id) as store:
        task = await claim_escalation(escalation_id, who, store=store)
        await _audit(url, task, "escalation.claim", who)
        return task


@escalations_app.command("claim")
def escalations_claim(
    ctx: typer.Context,
    escalation_id: IdArgument,
    by: Annotated[str | None, typer.Option(
        "--by", metavar="NAME", help="Who takes it (required).")] = None,
    store: StoreOption = None,
) -> None:
    """Take an escalation, so colleagues see that someone is on it."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        if by is None or not by.strip():
            raise CliError("say who takes it: --by NAME.")
        who = _who(by)
        task = asyncio.run(_claim(url, escalation_id, who))
        line = done_line("claimed", task.task_id, str(task.claimed_by))
        line.append(f"; resolve it: keel escalations resolve {task.task_id} ...", style="dim")
        screen.line(line)


async def _resolve(url: str, escalation_id: str, **decision: Any) -> Row:
    async with _task_store(url, "escalation", escalation_id) as store:
        task = await resolve_escalation(escalation_id, store=store, **decision)
        await _audit(url, task, f"escalation.{decision.get('action')}",
                     str(decision.get("by")), comment=decision.get("comment"),
                     note=decision.get("note"))
        return await _row(store, task)


def _action(answer: str | None, resume: bool, dismiss: bool) -> str:
    chosen = [name for name, on in (("answer", answer is not None), ("resume", resume),
                                    ("dismiss", dismiss)) if on]
    if len(chosen) != 1:
        raise CliError("choose one: --answer TEXT (the answer becomes the run's output), "
                       "--resume [--note TEXT] (the agent continues) or --dismiss --comment "
                       "TEXT (close the run).")
    return chosen[0]


@escalations_app.command("resolve")
def escalations_resolve(
    ctx: typer.Context,
    escalation_id: IdArgument,
    answer: Annotated[str | None, typer.Option(
        "--answer", metavar="TEXT",
        help="Answer for the agent: it becomes the run's output and the run completes. '-' "
             "reads it from standard input.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Let the agent continue (with --note as guidance).")] = False,
    note: Annotated[str | None, typer.Option(
        "--note", metavar="TEXT", help="Guidance the resumed agent reads.")] = None,
    dismiss: Annotated[bool, typer.Option(
        "--dismiss", help="Close the run as cancelled (needs --comment).")] = False,
    comment: Annotated[str | None, typer.Option(
        "--comment", metavar="TEXT", help="Why; required with --dismiss.")] = None,
    by: ByOption = None,
    store: StoreOption = None,
) -> None:
    """Resolve an escalation: answer it, let the agent resume, or dismiss it."""
    screen = Screen()
    url = store_url(ctx, store)
    with reported(screen):
        action = _action(answer, resume, dismiss)
        if answer == "-":
            answer = sys.stdin.read()
        who = _who(by)
        for option, value in (("--answer", answer), ("--note", note), ("--comment", comment)):
            _checked_text(option, value, MAX_TEXT)
        row = asyncio.run(_resolve(url, escalation_id, by=who, action=action,
                                   answer=answer, note=note, comment=comment))
        verb = {"answer": "answered", "resume": "resumed", "dismiss": "dismissed"}[action]
        screen.line(done_line(verb, row.task.task_id, who))
        screen.line(next_step(row.run, row.task.run_id))
