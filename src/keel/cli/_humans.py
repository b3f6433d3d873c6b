"""``keel approvals`` and ``keel escalations``: the human queue from the terminal.

Each command opens the store once and closes it. Everything that came from a run (arguments,
reasons, thoughts, packets) is printed literally through :func:`keel.cli._text.safe`. Refusals
(an unknown id, a decided task, a run that no longer waits, bad arguments) are user errors:
one red line and exit code 2, with nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._commands import open_existing
from keel.cli._errors import CliError, reported
from keel.cli._text import (
    LONG,
    SHORT,
    Screen,
    jsonable,
    one_line,
    printable,
    safe,
    show_value,
    to_json,
)
from keel.cli._timeline import status_text, when
from keel.core import RunNotFound, TaskNotFound, UserError
from keel.runtime import (
    claim_escalation,
    decide_approval,
    default_store_url,
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
    help="Tool calls waiting for a person's approval: list, show, approve, deny.",
    no_args_is_help=True, epilog=EPILOG)
escalations_app = typer.Typer(
    help="Runs handed to a person: list, show, claim, resolve.",
    no_args_is_help=True, epilog=EPILOG)

StoreOption = Annotated[str | None, typer.Option(
    "--store", metavar="URL",
    help="Run store: sqlite:///path/runs.db or a file path. Default: $KEEL_STORE, else "
         "sqlite:///.keel/runs.db.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only JSON (for scripts).")]
ByOption = Annotated[str | None, typer.Option(
    "--by", metavar="NAME", help="Who decides (audited). Default: $USER, else 'cli'.")]
QueueOption = Annotated[str | None, typer.Option("--queue", help="Only this queue.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=10_000,
                                          help="At most this many.")]
IdArgument = Annotated[str, typer.Argument(metavar="ID")]


def _store_url(ctx: typer.Context, store: str | None) -> str:
    if store:
        return store
    url = getattr(ctx.find_root().obj, "store", None)
    return url if isinstance(url, str) else default_store_url()


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


def _open(url: str) -> RunStore | None:
    """The store for reading and deciding; None if there is none at ``url`` yet."""
    return open_existing(url)


def _no_store(kind: str, task_id: str, url: str) -> TaskNotFound:
    return TaskNotFound(f"no {kind} {task_id!r}: there is no run store at {url} yet. Pass "
                        "--store (or set KEEL_STORE) to the store the run was written to.")


# ------------------------------------------------------------------------------- reading


@dataclass(slots=True)
class Row:
    """A task and its run (None if the run was pruned)."""

    task: HumanTask
    run: RunRecord | None


async def _rows(url: str, *, kind: TaskKind, statuses: Iterable[TaskStatus | None],
                queue: str | None, limit: int, live_only: bool) -> list[Row] | None:
    """Up to ``limit`` tasks in the given statuses, oldest first; with ``live_only`` only
    those whose run still waits (tasks of finished runs are paged past, not counted)."""
    store = _open(url)
    if store is None:
        return None
    async with store:
        runs: dict[str, RunRecord | None] = {}
        rows: list[Row] = []
        for status in statuses:
            rows += await _status_rows(store, runs, TaskFilter(
                kind=kind, status=status, queue=queue, limit=limit), limit,
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
                rows.append(Row(task, run))
        if len(page) < filt.limit:
            break
        filt = dataclasses.replace(filt, offset=filt.offset + filt.limit)
    return rows[:limit]


async def _run_or_none(store: RunStore, run_id: str) -> RunRecord | None:
    try:
        return await store.get_run(run_id)
    except RunNotFound:
        return None


async def _one(url: str, kind: TaskKind, task_id: str) -> Row:
    store = _open(url)
    if store is None:
        raise _no_store(kind, task_id, url)
    async with store:
        task = await store.get_task(task_id)
        if task.kind != kind:
            other = "approvals show" if task.kind == "approval" else "escalations show"
            raise UserError(f"{task_id} is an {task.kind}, not an {kind}; use `keel {other} "
                            f"{task_id}`.")
        return Row(task, await _run_or_none(store, task.run_id))


# --------------------------------------------------------------------------- formatting


def age_text(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0.0, seconds)
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def due_text(due_at: float | None, now: float, *, resolved: bool = False) -> Text:
    if due_at is None:
        return Text("-", style="dim")
    if resolved:
        return Text(when(due_at, short=True), style="dim")
    if due_at < now:
        return Text(f"overdue {age_text(now - due_at)}", style="bold red")
    return Text(f"in {age_text(due_at - now)}")


def _status(task: HumanTask) -> str:
    if task.status == "claimed":
        return f"claimed by {task.claimed_by}"
    if task.status == "resolved":
        return f"resolved by {task.resolved_by}"
    return task.status


def _data(task: HumanTask) -> dict[str, Any]:
    return task.data if isinstance(task.data, dict) else {}


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(jsonable(value), ensure_ascii=False, default=str)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


@dataclass(slots=True)
class Column:
    """A table column: ``flex`` 0 is as wide as its content (ids, times), otherwise a share
    of the width that is left (long text, cut with an ellipsis). An ``optional`` column is
    left out when the text columns would not get room to be readable."""

    name: str
    cells: list[Text]
    flex: int = 0
    justify: Literal["left", "right"] = "left"
    optional: bool = False


def fitted_table(columns: list[Column], width: int) -> Table:
    """One line per row in ``width`` columns: ids and times whole (so they can be copied),
    the text columns share the rest."""

    def natural(c: Column) -> int:
        return max([len(c.name), *(cell.cell_len for cell in c.cells)])

    def room(cols: list[Column]) -> int:  # a padding and a divider per column
        return width - sum(natural(c) for c in cols if not c.flex) - 2 * len(cols)

    def floor(c: Column) -> int:
        return min(natural(c), 8)

    if room(columns) < sum(floor(c) + 8 for c in columns if c.flex):
        columns = [c for c in columns if not c.optional]
    sizes = {id(c): natural(c) if not c.flex else floor(c) for c in columns}
    left = max(0, room(columns) - sum(sizes[id(c)] for c in columns if c.flex))
    # Each text column grows toward its natural width, by its share of what is left.
    growing = [c for c in columns if c.flex and natural(c) > sizes[id(c)]]
    while growing and left > 0:
        flex = sum(c.flex for c in growing)
        done = [c for c in growing if natural(c) - sizes[id(c)] <= left * c.flex // flex]
        if not done:
            for c in growing:
                sizes[id(c)] += left * c.flex // flex
            break
        for c in done:
            left -= natural(c) - sizes[id(c)]
            sizes[id(c)] = natural(c)
            growing.remove(c)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for c in columns:
        table.add_column(c.name, no_wrap=True, overflow="ellipsis", width=sizes[id(c)],
                         justify=c.justify)
    for cells in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*cells)
    return table


def _time_cells(rows: list[Row], now: float) -> list[Column]:
    return [Column("age", [Text(age_text(now - r.task.created_at)) for r in rows],
                   justify="right"),
            Column("due", [due_text(r.task.due_at, now, resolved=r.task.status == "resolved")
                           for r in rows])]


def _cells(rows: list[Row], value: Callable[[Row], str], style: str = "") -> list[Text]:
    return [safe(one_line(value(r), SHORT), style, limit=None) for r in rows]


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _run_cell(run: RunRecord | None) -> Text:
    if run is None:
        return Text("(run gone)", style="dim")
    return status_text(run.status)


def _decision_text(task: HumanTask) -> Text:
    resolution = task.resolution if isinstance(task.resolution, dict) else {}
    at = when(task.resolved_at) if task.resolved_at else "?"
    if task.kind == "approval":
        verdict = "approved" if resolution.get("approved") else "denied"
        line = Text(verdict, style="bold green" if verdict == "approved" else "bold red")
        if resolution.get("edited"):
            line.append(" with edited arguments")
    else:
        line = Text(str(resolution.get("action", "?")), style="bold")
    line.append(" by ")
    line.append_text(safe(str(task.resolved_by), limit=SHORT))
    line.append(f" at {at}")
    comment = resolution.get("comment")
    if comment:
        line.append(": ")
        line.append_text(safe(str(comment), limit=LONG))
    return line


def _next_step(run: RunRecord | None, run_id: str) -> Text:
    """What happens to the run now that the decision is recorded."""
    if run is None:
        return safe(f"run {run_id} is no longer in the store.", "dim")
    if run.status == "running":
        if run.target is None:
            return safe(f"run {run_id} is runnable: a `keel worker` continues it, or resume it "
                        f"from Python with the agent that started it: "
                        f"`await agent.resume({run_id!r})`.", "green")
        return safe(f"run {run_id} is runnable: `keel resume {run_id}`, or a `keel worker` "
                    "continues it.", "green")
    if run.status == "suspended":
        return safe(f"run {run_id} still waits for another decision.", "yellow")
    if run.status == "completed":
        return safe(f"run {run_id} is completed: the answer is its output.", "green")
    return safe(f"run {run_id} is {run.status}.", "magenta")


# ---------------------------------------------------------------------------- approvals


def approval_json(row: Row, now: float) -> dict[str, Any]:
    task, data = row.task, _data(row.task)
    return {
        "approval_id": task.task_id, "run_id": task.run_id, "agent": data.get("agent"),
        "status": task.status, "queue": task.queue, "tool": data.get("tool"),
        "risk": data.get("risk"), "description": data.get("description"),
        "arguments": jsonable(data.get("arguments")), "reason": data.get("reason"),
        "thought": data.get("thought"), "step_key": task.step_key,
        "requested_at": task.created_at, "due_at": task.due_at,
        "overdue": task.due_at is not None and task.status != "resolved" and task.due_at < now,
        "claimed_by": task.claimed_by, "resolution": jsonable(task.resolution),
        "resolved_by": task.resolved_by, "resolved_at": task.resolved_at,
        "run_status": None if row.run is None else row.run.status,
        "run_input": None if row.run is None else jsonable(row.run.input),
    }


def approvals_table(rows: list[Row], now: float, *, with_status: bool, width: int) -> Table:
    columns = [
        Column("id", _cells(rows, lambda r: r.task.task_id)),
        Column("run", _cells(rows, lambda r: r.task.run_id), optional=True),
        Column("tool", _cells(rows, lambda r: str(_data(r.task).get("tool", "?")), "bold"),
               flex=1),
        Column("arguments", _cells(rows, lambda r: _compact(_data(r.task).get("arguments"))),
               flex=4),
        Column("reason", _cells(rows, lambda r: str(_data(r.task).get("reason", ""))),
               flex=3)]
    if with_status:
        columns.append(Column("status", _cells(rows, lambda r: _status(r.task)), flex=1))
    return fitted_table([*columns, *_time_cells(rows, now)], width)


def approval_panel(row: Row, now: float) -> Panel:
    task, data = row.task, _data(row.task)
    grid = _grid()
    grid.add_row("approval", safe(task.task_id, limit=SHORT))
    grid.add_row("status", safe(_status(task), limit=SHORT))
    run = Text()
    run.append_text(safe(task.run_id, limit=SHORT))
    run.append(" · ")
    run.append_text(_run_cell(row.run))
    run.append(" · agent ")
    run.append_text(safe(str(data.get("agent", "?")), limit=SHORT))
    grid.add_row("run", run)
    tool = safe(str(data.get("tool", "?")), "bold", limit=SHORT)
    tool.append(f" ({data.get('risk', '?')})", style="yellow")
    grid.add_row("tool", tool)
    if data.get("description"):
        grid.add_row("description", safe(str(data["description"])))
    grid.add_row("arguments", safe(show_value(data.get("arguments", {})), limit=LONG * 2))
    grid.add_row("reason", safe(str(data.get("reason", "")), "yellow"))
    if data.get("thought"):
        grid.add_row("agent's thought", safe(str(data["thought"]), "italic"))
    if row.run is not None:
        grid.add_row("run input", safe(show_value(row.run.input)))
    grid.add_row("step", safe(task.step_key, limit=SHORT))
    grid.add_row("queue", safe(task.queue, limit=SHORT))
    grid.add_row("requested", f"{when(task.created_at)} ({age_text(now - task.created_at)} ago)")
    due = due_text(task.due_at, now, resolved=task.status == "resolved")
    if task.due_at is not None:
        due = Text(when(task.due_at) + " · ").append_text(due)
    grid.add_row("due", due)
    if task.status == "resolved":
        grid.add_row("decision", _decision_text(task))
    else:
        grid.add_row("decide", Text(
            f"keel approvals approve {task.task_id} [--edit-args JSON] [--comment TEXT]\n"
            f"keel approvals deny {task.task_id} --comment TEXT", style="dim"))
    return Panel(grid, title=Text("approval ") + safe(task.task_id, limit=SHORT),
                 title_align="left", border_style="yellow", expand=False)


@approvals_app.command("list")
def approvals_list(
    ctx: typer.Context,
    queue: QueueOption = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Also decided approvals and those whose run finished.")] = False,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Approvals waiting for a decision (open or claimed, run still waiting), oldest first."""
    screen = Screen()
    url = _store_url(ctx, store)
    with reported(screen):
        statuses: tuple[TaskStatus | None, ...] = (None,) if all_ else ("open", "claimed")
        rows = asyncio.run(_rows(url, kind="approval", statuses=statuses, queue=queue,
                                 limit=limit, live_only=not all_))
        now = time.time()
        if as_json:
            typer.echo(to_json([approval_json(r, now) for r in rows or []]))
            return
        if not rows:
            where = "there is no run store there yet" if rows is None else "none waiting"
            screen.out.print(safe(f"No approvals in {url} ({where})."))
            return
        screen.out.print(approvals_table(rows, now, with_status=all_ or any(
            r.task.status == "claimed" for r in rows), width=screen.out.width))


@approvals_app.command("show")
def approvals_show(ctx: typer.Context, approval_id: IdArgument, as_json: JsonOption = False,
                   store: StoreOption = None) -> None:
    """Everything about one approval: the call, why, the agent's thought, the run's input."""
    screen = Screen()
    url = _store_url(ctx, store)
    with reported(screen):
        row = asyncio.run(_one(url, "approval", approval_id))
        now = time.time()
        if as_json:
            typer.echo(to_json(approval_json(row, now)))
            return
        screen.out.print(approval_panel(row, now))


async def _decide(url: str, approval_id: str, *, approve: bool, who: str,
                  comment: str | None, edit_args: str | None) -> Row:
    store = _open(url)
    if store is None:
        raise _no_store("approval", approval_id, url)
    async with store:
        task = await decide_approval(store, approval_id, approve=approve, decided_by=who,
                                     comment=comment, edited_args=edit_args)
        return Row(task, await _run_or_none(store, task.run_id))


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
    url = _store_url(ctx, store)
    with reported(screen):
        who = _who(by)
        _checked_text("--comment", comment, MAX_TEXT)
        _checked_text("--edit-args", edit_args, MAX_ARGS)
        row = asyncio.run(_decide(url, approval_id, approve=approve, who=who, comment=comment,
                                  edit_args=edit_args))
        data = _data(row.task)
        line = Text("approved " if approve else "denied ",
                    style="bold green" if approve else "bold red")
        line.append_text(safe(row.task.task_id, limit=SHORT))
        line.append(" (")
        line.append_text(safe(str(data.get("tool", "?")), limit=SHORT))
        line.append(") by ")
        line.append_text(safe(who, limit=SHORT))
        resolution = row.task.resolution if isinstance(row.task.resolution, dict) else {}
        if approve and resolution.get("edited"):
            line.append(" with arguments ")
            line.append_text(safe(one_line(_compact(resolution.get("arguments"))), limit=None))
        elif not approve:
            line.append("; the model reads your comment and chooses what to do instead")
        screen.line(line)
        screen.line(_next_step(row.run, row.task.run_id))


# -------------------------------------------------------------------------- escalations


def escalation_json(row: Row, now: float) -> dict[str, Any]:
    task = row.task
    return {
        "escalation_id": task.task_id, "run_id": task.run_id, "status": task.status,
        "queue": task.queue, "step_key": task.step_key, "created_at": task.created_at,
        "due_at": task.due_at,
        "overdue": task.due_at is not None and task.status != "resolved" and task.due_at < now,
        "claimed_by": task.claimed_by, "claimed_at": task.claimed_at,
        "resolution": jsonable(task.resolution), "resolved_by": task.resolved_by,
        "resolved_at": task.resolved_at,
        "run_status": None if row.run is None else row.run.status,
        "packet": jsonable(task.data),
    }


def escalations_table(rows: list[Row], now: float, *, width: int) -> Table:
    columns = [
        Column("id", _cells(rows, lambda r: r.task.task_id)),
        Column("run", _cells(rows, lambda r: r.task.run_id), optional=True),
        Column("trigger", _cells(rows, lambda r: str(_data(r.task).get("trigger", "?")),
                                 "bold"), flex=2),
        Column("reason", _cells(rows, lambda r: str(_data(r.task).get("reason", ""))),
               flex=5),
        Column("queue", _cells(rows, lambda r: r.task.queue), flex=1),
        Column("status", _cells(rows, lambda r: _status(r.task)), flex=2)]
    return fitted_table([*columns, *_time_cells(rows, now)], width)


def escalation_view(row: Row, now: float) -> Group:
    """``keel escalations show``: the packet, in the order a person reads it."""
    task, data = row.task, _data(row.task)
    grid = _grid()
    grid.add_row("escalation", safe(task.task_id, limit=SHORT))
    grid.add_row("status", safe(_status(task), limit=SHORT))
    run = safe(task.run_id, limit=SHORT).append(" · ").append_text(_run_cell(row.run))
    run.append(" · agent ").append_text(safe(str(data.get("agent", "?")), limit=SHORT))
    grid.add_row("run", run)
    grid.add_row("trigger", safe(str(data.get("trigger", "?")), "bold", limit=SHORT))
    grid.add_row("reason", safe(str(data.get("reason", "")), "yellow"))
    grid.add_row("queue", safe(task.queue, limit=SHORT))
    grid.add_row("created", f"{when(task.created_at)} ({age_text(now - task.created_at)} ago)")
    due = due_text(task.due_at, now, resolved=task.status == "resolved")
    if task.due_at is not None:
        due = Text(when(task.due_at) + " · ").append_text(due)
    grid.add_row("due", due)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    if usage:
        grid.add_row("usage", _usage_text(usage))
    parts: list[RenderableType] = [Panel(
        grid, title=Text("escalation ") + safe(task.task_id, limit=SHORT), title_align="left",
        border_style="magenta", expand=False)]
    parts.append(_section("request", safe(show_value(data.get("request")))))
    parts.append(_section("what the agent did", safe(str(data.get("summary") or "(none)"),
                                                     limit=None)))
    parts.append(_section("evidence", _evidence(data)))
    proposal = data.get("proposal")
    parts.append(_section("the agent's proposal",
                          safe(show_value(proposal)) if proposal else
                          Text("(none)", style="dim")))
    if task.status == "resolved":
        parts.append(_section("decision", _decision_text(task)))
    else:
        parts.append(_section("resolve", Text(
            f"keel escalations resolve {task.task_id} with one of\n"
            "  --answer TEXT              your answer becomes the run's output (it completes)\n"
            "  --resume [--note TEXT]     the agent continues, reading your note\n"
            "  --dismiss --comment TEXT   the run is closed as cancelled", style="dim")))
    return Group(*parts)


def _usage_text(usage: dict[str, Any]) -> str:
    bits = []
    for key, label in (("steps", "steps"), ("input_tokens", "in"), ("output_tokens", "out")):
        value = _number(usage.get(key))
        if value is not None:
            bits.append(f"{int(value):,} {label}")
    cost = _number(usage.get("cost_usd"))
    if cost is not None:
        bits.append(f"${cost:.4f}")
    return " · ".join(bits) or "-"


def _section(title: str, body: RenderableType) -> Group:
    head = Text(f"\n{title}", style="bold underline")
    return Group(head, _indent(body))


def _indent(body: RenderableType) -> Padding:
    return Padding(body, (0, 0, 0, 2), expand=False)


def _evidence(data: dict[str, Any]) -> RenderableType:
    items = [e for e in data.get("evidence") or [] if isinstance(e, dict)]
    if not items:
        return Text("(no tool results)", style="dim")
    lines: list[RenderableType] = []
    omitted = _number(data.get("evidence_omitted"))
    if omitted:
        lines.append(Text(f"({int(omitted)} earlier tool results not in the packet)",
                          style="dim"))
    for item in items:
        error = bool(item.get("is_error"))
        head = Text("✗ " if error else "✓ ", style="red" if error else "green")
        head.append_text(safe(str(item.get("tool", "?")), "bold", limit=SHORT))
        head.append(" ")
        head.append_text(safe(one_line(_compact(item.get("arguments"))), limit=None))
        lines.append(head)
        content = safe(str(item.get("content", "")), "red" if error else "", limit=LONG)
        lines.append(_indent(content))
    return Group(*lines)


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
) -> None:
    """Escalations, oldest first (a queue)."""
    screen = Screen()
    url = _store_url(ctx, store)
    with reported(screen):
        statuses = _escalation_statuses(status)
        rows = asyncio.run(_rows(url, kind="escalation", statuses=statuses, queue=queue,
                                 limit=limit, live_only=status is None))
        now = time.time()
        if as_json:
            typer.echo(to_json([escalation_json(r, now) for r in rows or []]))
            return
        if not rows:
            where = "there is no run store there yet" if rows is None else "none match"
            screen.out.print(safe(f"No escalations in {url} ({where})."))
            return
        screen.out.print(escalations_table(rows, now, width=screen.out.width))


@escalations_app.command("show")
def escalations_show(ctx: typer.Context, escalation_id: IdArgument,
                     as_json: JsonOption = False, store: StoreOption = None) -> None:
    """The packet: request, reason, what the agent did, evidence, proposal, deadline."""
    screen = Screen()
    url = _store_url(ctx, store)
    with reported(screen):
        row = asyncio.run(_one(url, "escalation", escalation_id))
        now = time.time()
        if as_json:
            typer.echo(to_json(escalation_json(row, now)))
            return
        screen.out.print(escalation_view(row, now))


async def _claim(url: str, escalation_id: str, who: str) -> HumanTask:
    store = _open(url)
    if store is None:
        raise _no_store("escalation", escalation_id, url)
    async with store:
        return await claim_escalation(store, escalation_id, who)


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
    url = _store_url(ctx, store)
    with reported(screen):
        if by is None or not by.strip():
            raise CliError("say who takes it: --by NAME.")
        who = _who(by)
        task = asyncio.run(_claim(url, escalation_id, who))
        line = Text("claimed ", style="bold")
        line.append_text(safe(task.task_id, limit=SHORT))
        line.append(" by ")
        line.append_text(safe(str(task.claimed_by), limit=SHORT))
        line.append(f"; resolve it: keel escalations resolve {task.task_id} ...", style="dim")
        screen.line(line)


async def _resolve(url: str, escalation_id: str, **decision: Any) -> Row:
    store = _open(url)
    if store is None:
        raise _no_store("escalation", escalation_id, url)
    async with store:
        task = await resolve_escalation(store, escalation_id, **decision)
        return Row(task, await _run_or_none(store, task.run_id))


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
    url = _store_url(ctx, store)
    with reported(screen):
        action = _action(answer, resume, dismiss)
        if answer == "-":
            answer = sys.stdin.read()
        who = _who(by)
        for option, value in (("--answer", answer), ("--note", note), ("--comment", comment)):
            _checked_text(option, value, MAX_TEXT)
        row = asyncio.run(_resolve(url, escalation_id, resolved_by=who, action=action,
                                   answer=answer, note=note, comment=comment))
        verb = {"answer": "answered", "resume": "resumed", "dismiss": "dismissed"}[action]
        line = Text(f"{verb} ", style="bold")
        line.append_text(safe(row.task.task_id, limit=SHORT))
        line.append(" by ")
        line.append_text(safe(who, limit=SHORT))
        screen.line(line)
        screen.line(_next_step(row.run, row.task.run_id))
