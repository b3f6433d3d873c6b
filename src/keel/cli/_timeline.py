"""Stored runs as tables: the run list, one run's record, and its journal as a timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._render import STATUS_STYLE, latency_text, usage_text
from keel.cli._text import LONG, SHORT, one_line, safe
from keel.core import dumps, to_jsonable, to_text
from keel.runtime import stored_number
from keel.store import JournalEntry, RunRecord


def when(timestamp: float, *, short: bool = False) -> str:
    """Local time; ``short`` (for tables) gives the time for today, else the date."""
    try:
        moment = datetime.fromtimestamp(timestamp)
        if not short:
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        today = moment.date() == datetime.now().date()
        return moment.strftime("%H:%M:%S" if today else "%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "?"


def label_grid() -> Table:
    """A two-column grid for panels: bold labels, then values that fold when long."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _usage(record: RunRecord) -> tuple[int, int, float, int]:
    u = record.usage if isinstance(record.usage, dict) else {}
    return (int(stored_number(u.get("input_tokens"))),
            int(stored_number(u.get("output_tokens"))), stored_number(u.get("cost_usd")),
            int(stored_number(u.get("steps"))))


def status_text(status: str) -> Text:
    return safe(status, STATUS_STYLE.get(status, ""), limit=SHORT)


def runs_table(records: list[RunRecord], width: int | None = None) -> Table:
    """``keel runs list``: newest first. Ids and statuses are never cut: in a narrow terminal
    (``width``) the created, cost, tokens and steps columns are left out, in that order."""
    names = ("id", "agent", "status", "steps", "tokens", "cost", "created")
    rows = []
    for r in records:
        tin, tout, cost, steps = _usage(r)
        rows.append((safe(r.run_id, limit=SHORT), safe(r.agent, limit=SHORT),
                     status_text(r.status), Text(str(steps)), Text(f"{tin + tout:,}"),
                     Text(f"${cost:.4f}"), Text(when(r.created_at, short=True))))
    natural = [max([len(n), *(row[i].cell_len for row in rows)]) for i, n in enumerate(names)]
    natural[1] = min(natural[1], 16)
    keep = list(range(len(names)))
    for drop in (6, 5, 4, 3):  # what matters least goes first
        if width is None or sum(natural[i] for i in keep) + len(keep) - 1 <= width:
            break
        keep.remove(drop)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0, 0, 0))
    for i in keep:
        whole = i != 1  # only the agent's name may be shortened
        table.add_column(names[i], no_wrap=True, overflow="ellipsis",
                         min_width=natural[i] if whole else min(natural[i], 8),
                         max_width=None if whole else 16,
                         justify="right" if i in (3, 4, 5) else "left")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table


def record_panel(record: RunRecord) -> Panel:
    """``keel runs show``: the run's record."""
    grid = label_grid()
    tin, tout, cost, steps = _usage(record)
    grid.add_row("run id", safe(record.run_id))
    grid.add_row("agent", safe(record.agent))
    grid.add_row("status", status_text(record.status))
    grid.add_row("target", safe(record.target or "(none: not started from the CLI)"))
    if record.tenant is not None or record.user is not None:
        grid.add_row("tenant", safe(f"{record.tenant or '-'} (user {record.user or '-'})",
                                    limit=SHORT))
    if record.conversation is not None:
        grid.add_row("conversation", safe(record.conversation, limit=SHORT))
    meta = record.metadata if isinstance(record.metadata, dict) else {}
    if meta.get("model"):
        grid.add_row("model", safe(str(meta["model"]), limit=SHORT))
    if meta.get("pattern"):
        grid.add_row("pattern", safe(str(meta["pattern"]), limit=SHORT))
    grid.add_row("created", when(record.created_at))
    grid.add_row("updated", when(record.updated_at))
    grid.add_row("steps", str(steps))
    grid.add_row("usage", usage_text(tin, tout, cost))
    grid.add_row("input", safe(to_text(record.input, indent=2), limit=LONG))
    if record.status == "completed":
        grid.add_row("output", safe(to_text(record.output, indent=2), limit=LONG))
    return Panel(grid, title=Text("run ") + safe(record.run_id, limit=SHORT),
                 title_align="left", border_style=STATUS_STYLE.get(record.status, ""),
                 expand=False)


def error_panel(record: RunRecord) -> Panel | None:
    """The stored error of a run that did not complete."""
    err = record.error
    if not err:
        return None
    grid = label_grid()
    grid.add_row("type", safe(str(err.get("type", "?")), "bold red", limit=SHORT))
    grid.add_row("message", safe(str(err.get("message", "")), "red"))
    if err.get("step_key"):
        grid.add_row("step", safe(str(err["step_key"]), limit=SHORT))
    if record.status != "completed":
        grid.add_row("next", Text(
            f"fix the cause, then `keel resume {record.run_id}` continues from the last "
            "recorded step" if record.target else
            "resume it from Python with the agent that started it: "
            f"`await agent.resume({record.run_id!r})`", style="dim"))
    return Panel(grid, title=f"run {record.status}", title_align="left", border_style="red",
                 expand=False)


def timeline_table(entries: list[JournalEntry]) -> Table:
    """One row per journal entry, in append order."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="journal",
                  title_justify="left", padding=(0, 1, 0, 0))
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("step", overflow="fold", max_width=40)
    table.add_column("phase", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("name", overflow="fold", max_width=14)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("data", overflow="fold", ratio=1)
    for e in entries:
        phase = Text(e.phase, style="yellow" if e.phase == "intent" else "")
        ms = latency_text(e.latency_ms) if e.phase == "result" else ""
        table.add_row(str(e.seq), safe(e.key, limit=SHORT), phase, safe(e.kind, limit=SHORT),
                      safe(e.name, limit=SHORT), ms, describe_entry(e))
    return table


def describe_entry(entry: JournalEntry) -> Text:
    """A short rendering of an entry's data: model text and calls, tool observations,
    errors in red."""
    data = entry.data
    if entry.kind == "model" and isinstance(data, dict) and isinstance(data.get("parts"), list):
        return _model_data(data)
    if entry.kind == "tool" and isinstance(data, dict):
        if entry.phase == "intent" and "arguments" in data:
            return safe(one_line(f"{data.get('tool', entry.name)} {data['arguments']}"),
                        limit=None)
        if "content" in data:
            failure = data.get("failure")
            if isinstance(failure, dict):
                text = f"{failure.get('error_type', 'error')}: {failure.get('message', '')}"
                return safe(one_line(text), "red", limit=None)
            return safe(one_line(str(data["content"])), limit=None)
    if entry.kind == "guard" and isinstance(data, dict) and "action" in data:
        action = str(data.get("action"))
        text = f"{action}: {data.get('reason') or '(no reason)'}"
        return safe(one_line(text), "" if action == "redact" else "yellow", limit=None)
    return safe(one_line(dumps(data)), limit=None)


def _model_data(data: dict[str, Any]) -> Text:
    out = Text()
    for part in data["parts"]:
        if not isinstance(part, dict):
            continue
        if out:
            out.append("\n")
        if part.get("type") == "text":
            out.append_text(safe(one_line(str(part.get("text", ""))), "italic", limit=None))
        elif part.get("type") == "tool_call":
            call = f"{part.get('tool_name', '?')} {part.get('arguments', '')}"
            out.append("call ", style="bold")
            out.append_text(safe(one_line(call), limit=None))
    usage = data.get("usage")
    if isinstance(usage, dict):
        if out:
            out.append("\n")
        out.append(usage_text(int(stored_number(usage.get("input_tokens"))),
                              int(stored_number(usage.get("output_tokens"))),
                              stored_number(usage.get("cost_usd"))), style="dim")
    details = data.get("provider_details")
    chain = details.get("fallback") if isinstance(details, dict) else None
    if isinstance(chain, dict):  # a FallbackModel answered: say which link, after what
        listed = chain.get("failed")
        failed: list[Any] = listed if isinstance(listed, list) else []
        names = ", ".join(str(f.get("model", "?")) for f in failed if isinstance(f, dict))
        out.append("\n")
        out.append_text(safe(f"answered by {chain.get('model', '?')}"
                             + (f" after {names} failed" if names else ""), "yellow",
                             limit=None))
    return out


def record_json(record: RunRecord, entries: list[JournalEntry] | None = None) -> dict[str, Any]:
    """A run (and its journal) as JSON data, for ``--json``."""
    out: dict[str, Any] = {
        "run_id": record.run_id, "agent": record.agent, "status": record.status,
        "target": record.target, "input": to_jsonable(record.input),
        "output": to_jsonable(record.output), "error": to_jsonable(record.error),
        "usage": to_jsonable(record.usage), "metadata": to_jsonable(record.metadata),
        "created_at": record.created_at, "updated_at": record.updated_at,
        "tenant": record.tenant, "user": record.user}
    if record.conversation is not None:
        out["conversation"] = record.conversation
    if entries is not None:
        out["journal"] = [
            {"seq": e.seq, "key": e.key, "phase": e.phase, "kind": e.kind, "name": e.name,
             "latency_ms": e.latency_ms, "created_at": e.created_at, "data": to_jsonable(e.data)}
            for e in entries]
    return out

