"""How ``keel approvals`` and ``keel escalations`` show tasks: JSON for scripts, tables that
fit the terminal, an approval's panel, an escalation's packet, and the one-line confirmations.

Everything that came from a run (arguments, reasons, thoughts, packets) is printed literally
through :func:`keel.cli._text.safe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._text import LONG, SHORT, one_line, safe
from keel.cli._timeline import label_grid, status_text, when
from keel.core import to_jsonable, to_text
from keel.runtime import review_summary, reviewers_needed
from keel.store import HumanTask, RunRecord


@dataclass(slots=True)
class Row:
    """A task and its run (None if the run was pruned); for an approval that needs several
    people, the reviews so far (``keel.runtime.approval_reviews``)."""

    task: HumanTask
    run: RunRecord | None
    reviews: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reviewers(self) -> int:
        """How many different people must approve (1 for most requests)."""
        return reviewers_needed(task_data(self.task)) if self.task.kind == "approval" else 1

    @property
    def progress(self) -> str:
        """``"1 of 2 approved (ana)"``, or ``""`` for a one-person request."""
        return review_summary(self.reviewers, self.reviews) if self.reviewers > 1 else ""


# ------------------------------------------------------------------------------- pieces


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
        return f"resolved by {task.by}"
    return task.status


def task_data(task: HumanTask) -> dict[str, Any]:
    return task.data if isinstance(task.data, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


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
    line.append_text(safe(str(task.by), limit=SHORT))
    line.append(f" at {at}")
    comment = resolution.get("comment")
    if comment:
        line.append(": ")
        line.append_text(safe(str(comment), limit=LONG))
    return line


def next_step(run: RunRecord | None, run_id: str) -> Text:
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


def done_line(verb: str, task_id: str, who: str, *, style: str = "bold",
              tool: str | None = None) -> Text:
    """``approved apr-1 (refund) by ana``: what a command just did, and who it was for."""
    line = Text(f"{verb} ", style=style)
    line.append_text(safe(task_id, limit=SHORT))
    if tool is not None:
        line.append(" (")
        line.append_text(safe(tool, limit=SHORT))
        line.append(")")
    line.append(" by ")
    line.append_text(safe(who, limit=SHORT))
    return line


def decided_line(row: Row, *, approve: bool, who: str) -> Text:
    """The confirmation of ``keel approvals approve|deny``."""
    line = done_line("approved" if approve else "denied", row.task.task_id, who,
                     style="bold green" if approve else "bold red",
                     tool=str(task_data(row.task).get("tool", "?")))
    resolution = row.task.resolution if isinstance(row.task.resolution, dict) else {}
    if approve and row.task.status != "resolved" and row.reviewers > 1:
        left = row.reviewers - sum(1 for r in row.reviews if r.get("approved"))
        line.append(": ")
        line.append_text(safe(f"{row.progress}; it waits for {left} more reviewer"
                              f"{'s' if left != 1 else ''}", "yellow", limit=LONG))
    elif approve and resolution.get("edited"):
        line.append(" with arguments ")
        line.append_text(safe(one_line(to_text(resolution.get("arguments"))), limit=None))
    elif not approve:
        line.append("; the model reads your comment and chooses what to do instead")
    return line


# -------------------------------------------------------------------------------- JSON


def _outcome_json(row: Row) -> dict[str, Any]:
    """The fields both kinds of task end their JSON with: how it was resolved, and the run."""
    task = row.task
    # "resolved_by" is the name keel 0.1 printed; kept for scripts for one release.
    return {"resolution": to_jsonable(task.resolution), "by": task.by,
            "resolved_by": task.by, "resolved_at": task.resolved_at,
            "run_status": None if row.run is None else row.run.status}


def _overdue(task: HumanTask, now: float) -> bool:
    return task.due_at is not None and task.status != "resolved" and task.due_at < now


def approval_json(row: Row, now: float) -> dict[str, Any]:
    task, data = row.task, task_data(row.task)
    return {
        "approval_id": task.task_id, "run_id": task.run_id, "agent": data.get("agent"),
        "status": task.status, "queue": task.queue, "tool": data.get("tool"),
        "risk": data.get("risk"), "description": data.get("description"),
        "arguments": to_jsonable(data.get("arguments")), "reason": data.get("reason"),
        "thought": data.get("thought"), "step_key": task.step_key,
        "requested_at": task.created_at, "due_at": task.due_at,
        "overdue": _overdue(task, now), "claimed_by": task.claimed_by, **_outcome_json(row),
        "run_input": None if row.run is None else to_jsonable(row.run.input),
        "reviewers": row.reviewers, "reviews": to_jsonable(row.reviews),
        "progress": row.progress or None,
    }


def escalation_json(row: Row, now: float) -> dict[str, Any]:
    task = row.task
    return {
        "escalation_id": task.task_id, "run_id": task.run_id, "status": task.status,
        "queue": task.queue, "step_key": task.step_key, "created_at": task.created_at,
        "due_at": task.due_at, "overdue": _overdue(task, now),
        "claimed_by": task.claimed_by, "claimed_at": task.claimed_at, **_outcome_json(row),
        "packet": to_jsonable(task.data),
    }


# ------------------------------------------------------------------------------- tables


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
    wrap: bool = False  # wrapped onto more lines (never cut) rather than cut with an ellipsis
    merge_into: str | None = None  # an optional column whose text, when it is left out, goes
    # under the text of this (wrapping) column instead


def fitted_table(columns: list[Column], width: int) -> Table:
    """One line per row in ``width`` columns: ids and times whole (so they can be copied),
    the text columns share the rest."""

    def natural(c: Column) -> int:
        return max([len(c.name), *(cell.cell_len for cell in c.cells)])

    def room(cols: list[Column]) -> int:  # a padding and a divider per column
        return width - sum(natural(c) for c in cols if not c.flex) - 2 * len(cols)

    def floor(c: Column) -> int:
        return min(natural(c), 8)

    # Optional columns go, first listed first, until each text column has room to be read.
    while room(columns) < sum(floor(c) + 8 for c in columns if c.flex):
        optional = next((c for c in columns if c.optional), None)
        if optional is None:
            break
        columns = [_merged(c, optional) if c.name == optional.merge_into else c
                   for c in columns if c is not optional]
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
        table.add_column(c.name, no_wrap=not c.wrap, overflow="fold" if c.wrap else "ellipsis",
                         width=sizes[id(c)], justify=c.justify)
    for cells in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*cells)
    return table


def _merged(into: Column, extra: Column) -> Column:
    """``into`` with each of ``extra``'s non-empty cells on a line under its own."""
    cells = [a.copy().append("\n").append_text(b) if b.plain else a
             for a, b in zip(into.cells, extra.cells, strict=True)]
    return dataclasses.replace(into, name=f"{into.name} / {extra.name}", cells=cells)


def _cells(rows: list[Row], value: Callable[[Row], str], style: str = "") -> list[Text]:
    return [safe(one_line(value(r), SHORT), style, limit=None) for r in rows]


def _data_cells(rows: list[Row], key: str, default: str, style: str = "") -> list[Text]:
    return _cells(rows, lambda r: str(task_data(r.task).get(key, default)), style)


def _task_table(rows: list[Row], now: float, columns: list[Column], width: int) -> Table:
    """The id and run columns, ``columns``, then the task's age and due time."""
    return fitted_table([
        Column("id", _cells(rows, lambda r: r.task.task_id)),
        Column("run", _cells(rows, lambda r: r.task.run_id), optional=True),
        *columns,
        Column("age", [Text(age_text(now - r.task.created_at)) for r in rows],
               justify="right"),
        Column("due", [due_text(r.task.due_at, now, resolved=r.task.status == "resolved")
                       for r in rows])], width)


def approvals_table(rows: list[Row], now: float, *, with_status: bool, width: int) -> Table:
    """``keel approvals list``: one row per approval. The reason is never cut (it wraps in a
    narrow terminal); the agent's reasoning (its thought before the call) is a column, or, when
    the terminal is too narrow for it, an italic line under the reason. The arguments are one
    line, left out in a narrow terminal (``show`` prints everything whole)."""
    columns = [
        Column("tool", _data_cells(rows, "tool", "?", "bold"), flex=1),
        Column("arguments", _cells(rows, lambda r: to_text(task_data(r.task).get("arguments"))),
               flex=3, optional=True),
        Column("reason", _data_cells(rows, "reason", ""), flex=3, wrap=True),
        Column("reasoning", _data_cells(rows, "thought", "", "italic"), flex=3,
               optional=True, merge_into="reason")]
    if any(r.reviewers > 1 for r in rows):  # N-of-M: how far each request has got
        columns.append(Column("approvals", _cells(rows, lambda r: r.progress or "-"),
                              flex=2))
    if with_status:
        columns.append(Column("status", _cells(rows, lambda r: _status(r.task)), flex=1))
    return _task_table(rows, now, columns, width)


def escalations_table(rows: list[Row], now: float, *, width: int) -> Table:
    return _task_table(rows, now, [
        Column("trigger", _data_cells(rows, "trigger", "?", "bold"), flex=2),
        Column("reason", _data_cells(rows, "reason", ""), flex=5),
        Column("queue", _cells(rows, lambda r: r.task.queue), flex=1),
        Column("status", _cells(rows, lambda r: _status(r.task)), flex=2)], width)


# ------------------------------------------------------------------------------ panels


def _head_rows(grid: Table, row: Row) -> None:
    """The task's id and status, and its run: id, status and agent."""
    task = row.task
    grid.add_row(task.kind, safe(task.task_id, limit=SHORT))
    grid.add_row("status", safe(_status(task), limit=SHORT))
    run = safe(task.run_id, limit=SHORT).append(" · ").append_text(_run_cell(row.run))
    run.append(" · agent ").append_text(
        safe(str(task_data(task).get("agent", "?")), limit=SHORT))
    grid.add_row("run", run)


def _time_rows(grid: Table, label: str, task: HumanTask, now: float) -> None:
    """When the task was made (and how long ago), and when it is due."""
    grid.add_row(label, f"{when(task.created_at)} ({age_text(now - task.created_at)} ago)")
    due = due_text(task.due_at, now, resolved=task.status == "resolved")
    if task.due_at is not None:
        due = Text(when(task.due_at) + " · ").append_text(due)
    grid.add_row("due", due)


def _titled(grid: Table, task: HumanTask, border: str) -> Panel:
    return Panel(grid, title=Text(f"{task.kind} ") + safe(task.task_id, limit=SHORT),
                 title_align="left", border_style=border, expand=False)


def approval_panel(row: Row, now: float) -> Panel:
    """``keel approvals show``: the call, why, the agent's thought, the run's input."""
    task, data = row.task, task_data(row.task)
    grid = label_grid()
    _head_rows(grid, row)
    tool = safe(str(data.get("tool", "?")), "bold", limit=SHORT)
    tool.append(f" ({data.get('risk', '?')})", style="yellow")
    grid.add_row("tool", tool)
    if data.get("description"):
        grid.add_row("description", safe(str(data["description"])))
    grid.add_row("arguments", safe(to_text(data.get("arguments", {}), indent=2), limit=LONG * 2))
    grid.add_row("reason", safe(str(data.get("reason", "")), "yellow"))
    if data.get("thought"):
        grid.add_row("agent's thought", safe(str(data["thought"]), "italic"))
    if row.run is not None:
        grid.add_row("run input", safe(to_text(row.run.input, indent=2)))
    grid.add_row("step", safe(task.step_key, limit=SHORT))
    grid.add_row("queue", safe(task.queue, limit=SHORT))
    if row.reviewers > 1:
        grid.add_row("reviewers", safe(f"{row.reviewers} different people must approve · "
                                       f"{row.progress}", "bold", limit=LONG))
    _time_rows(grid, "requested", task, now)
    if task.status == "resolved":
        grid.add_row("decision", _decision_text(task))
    else:
        grid.add_row("decide", Text(
            f"keel approvals approve {task.task_id} [--edit-args JSON] [--comment TEXT]\n"
            f"keel approvals deny {task.task_id} --comment TEXT", style="dim"))
    return _titled(grid, task, "yellow")


def escalation_view(row: Row, now: float) -> Group:
    """``keel escalations show``: the packet, in the order a person reads it."""
    task, data = row.task, task_data(row.task)
    grid = label_grid()
    _head_rows(grid, row)
    grid.add_row("trigger", safe(str(data.get("trigger", "?")), "bold", limit=SHORT))
    grid.add_row("reason", safe(str(data.get("reason", "")), "yellow"))
    grid.add_row("queue", safe(task.queue, limit=SHORT))
    _time_rows(grid, "created", task, now)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    if usage:
        grid.add_row("usage", _usage_text(usage))
    proposal = data.get("proposal")
    parts: list[RenderableType] = [
        _titled(grid, task, "magenta"),
        _section("request", safe(to_text(data.get("request"), indent=2))),
        _section("what the agent did", safe(str(data.get("summary") or "(none)"), limit=None)),
        _section("evidence", _evidence(data)),
        _section("the agent's proposal", safe(to_text(proposal, indent=2)) if proposal else
                 Text("(none)", style="dim"))]
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
        head.append_text(safe(one_line(to_text(item.get("arguments"))), limit=None))
        lines.append(head)
        content = safe(str(item.get("content", "")), "red" if error else "", limit=LONG)
        lines.append(_indent(content))
    return Group(*lines)
