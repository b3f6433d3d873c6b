"""``keel runs show`` for planning runs: the latest recorded state of each plan in a run.

A planning flow journals its whole plan (kind ``plan``, keys ``<path>/plan#<n>``) after every
change; the newest record of each path is the plan as it stands. Rendered from the stored
JSON alone, so a run made by another keel version still shows what it can.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from keel.cli._text import one_line, safe
from keel.core import to_jsonable, to_text
from keel.store import JournalEntry

_STATUS_STYLE = {"complete": "green", "failed": "red", "in_progress": "cyan",
                 "skipped": "magenta", "pending": "dim"}
_RESULT = 80


def latest_plans(entries: list[JournalEntry]) -> dict[str, dict[str, Any]]:
    """The newest plan record of each planning flow in the run, by flow path."""
    plans: dict[str, dict[str, Any]] = {}
    for e in entries:
        data = e.data
        if (e.kind == "plan" and e.phase == "result" and isinstance(data, dict)
                and isinstance(data.get("steps"), list)):
            plans[e.key.rsplit("/", 1)[0] if "/" in e.key else ""] = data
    return plans


def plans_json(entries: list[JournalEntry]) -> dict[str, Any]:
    """The newest plans as JSON data (for ``keel runs show --json``)."""
    return {path: to_jsonable(plan) for path, plan in latest_plans(entries).items()}


def plan_tables(entries: list[JournalEntry]) -> list[Table]:
    """One table per plan: id, status, worker, dependencies, attempts and a short result."""
    return [plan_table(path, plan) for path, plan in latest_plans(entries).items()]


def plan_table(path: str, plan: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left",
                  title=f"plan {path} (version {plan.get('version', '?')})",
                  padding=(0, 1, 0, 0))
    table.add_column("id", overflow="fold", max_width=24)
    table.add_column("status", no_wrap=True)
    table.add_column("worker", overflow="fold", max_width=24)
    table.add_column("after", overflow="fold", max_width=24)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold", ratio=1)
    for step in plan["steps"]:
        if not isinstance(step, dict):
            continue
        status = str(step.get("status", "?"))
        worker = (f"agent {step['agent']}" if step.get("agent")
                  else f"tool {step.get('tool', '?')}")
        deps = step.get("depends_on")
        after = ", ".join(str(d) for d in deps) if isinstance(deps, list) else ""
        table.add_row(safe(str(step.get("id", "?")), limit=48),
                      safe(status, _STATUS_STYLE.get(status, "")), safe(worker, limit=48),
                      safe(after, limit=120), str(step.get("attempts", "")), _outcome(step))
    return table


def _outcome(step: dict[str, Any]) -> Any:
    if step.get("error"):
        return safe(one_line(str(step["error"]), _RESULT), "red", limit=None)
    result = step.get("result")
    if result is None:
        return safe("")
    text = to_text(result)
    shown = safe(one_line(text, _RESULT), limit=None)
    if step.get("surprise"):
        shown.append(f"  (surprise: {one_line(str(step['surprise']), _RESULT)})",
                     style="yellow")
    return shown
