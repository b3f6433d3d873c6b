"""Replaying recorded ``keel.run`` workflow histories against the workflow code (Temporal's
determinism check, as keel's own replay checks a run's journal): a change to the workflow
that would break runs in flight is caught before it is deployed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from keel.core import UserError
from keel.temporal._errors import WorkflowDivergence
from keel.temporal._worker import workflow_runner
from keel.temporal._workflow import KeelRunWorkflow

_EVENT = re.compile(r"event(?:[ _]id)?\D{0,3}(\d+)", re.IGNORECASE)


def _history(item: WorkflowHistory | str | dict[str, Any], n: int) -> WorkflowHistory:
    if isinstance(item, WorkflowHistory):
        return item
    if isinstance(item, dict):
        workflow_id = str(item.get("workflow_id") or f"history-{n}")
        body = item.get("history", item)
        try:
            return WorkflowHistory.from_json(workflow_id, body)
        except Exception as exc:  # temporalio's parse errors are not one type
            raise UserError(f"history {workflow_id} is not a Temporal workflow history "
                            f"({type(exc).__name__}: {exc})") from None
    if isinstance(item, str):
        try:
            data = json.loads(item)
        except ValueError as exc:
            raise UserError(f"history #{n} is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UserError(f"history #{n} is not a Temporal workflow history (a JSON "
                            "object with events)")
        return _history(data, n)
    raise UserError(f"expected a WorkflowHistory, its JSON text or a dict, not "
                    f"{type(item).__name__}")


async def replay_histories(histories: Iterable[WorkflowHistory | str | dict[str, Any]], *,
                           workflow: type = KeelRunWorkflow) -> int:
    """Replay each history against ``workflow`` (the ``keel.run`` workflow by default);
    returns how many were replayed. A history the code no longer reproduces raises
    :class:`WorkflowDivergence` naming the workflow and the event. A dict may carry
    ``workflow_id`` and ``history`` (the form :func:`history_json` writes)."""
    replayer = Replayer(workflows=[workflow], workflow_runner=workflow_runner())
    count = 0
    for n, item in enumerate(histories):
        history = _history(item, n)
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = result.replay_failure
        if failure is not None:
            raise _divergence(history, failure) from failure
        count += 1
    return count


def history_json(history: WorkflowHistory) -> dict[str, Any]:
    """A history as JSON data that :func:`replay_histories` reads back (with its id)."""
    return {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}


def _divergence(history: WorkflowHistory, failure: Exception) -> Exception:
    workflow_id = history.workflow_id
    text = str(failure)
    if not isinstance(failure, NondeterminismError) and "nondetermin" not in text.lower():
        return WorkflowDivergence(
            f"workflow {workflow_id} failed while replaying: {type(failure).__name__}: {text}",
            recorded={"workflow_id": workflow_id}, requested={"error": text[:500]})
    found = _EVENT.search(text)
    event_id = int(found.group(1)) if found else None
    recorded_name, requested_name = _names(text)
    if event_id is None and recorded_name is not None:
        event_id = _only_scheduled(history, recorded_name)
    where = f" at event {event_id}" if event_id is not None else ""
    event = f"activity {recorded_name}" if recorded_name else None
    command = f"activity {requested_name}" if requested_name else None
    said = f": the history has {event}, the code asks for {command}" if event and command \
        else ""
    return WorkflowDivergence(
        f"workflow {workflow_id} no longer replays{where}{said} ({text[:300]})",
        recorded={"workflow_id": workflow_id, "event_id": event_id, "event": event},
        requested={"command": command, "error": text[:500]})


_NAMES = re.compile(r"scheduled event '([^']+)'.*command '([^']+)'")


def _names(text: str) -> tuple[str | None, str | None]:
    """The recorded activity and the one the code asked for, from Temporal's message."""
    found = _NAMES.search(text)
    return (found.group(1), found.group(2)) if found else (None, None)


def _only_scheduled(history: WorkflowHistory, name: str) -> int | None:
    """The id of the event that scheduled activity ``name``, if exactly one did."""
    ids = [e.event_id for e in history.events
           if e.HasField("activity_task_scheduled_event_attributes")
           and e.activity_task_scheduled_event_attributes.activity_type.name == name]
    return ids[0] if len(ids) == 1 else None
