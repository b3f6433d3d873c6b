"""What a case's runs did, as the scorers see it: :class:`Observed`.

The evaluation runner builds one per case from the run records and journals in the store
(the same data ``keel runs show`` reads), so a scorer judges what really happened: the final
output, the tool calls in the order the model asked for them, whether the run waited for an
approval or escalated, how it ended, what it cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.store import JournalEntry, RunRecord, RunStore

#: The reserved tool of a typed output: never counted as a tool call.
_FINAL_TOOL = "final_result"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """One case's outcome, for scoring.

    ``output`` is the last run's output (typed, as the agent returned it) and ``text`` its
    text. ``status`` is ``completed``, ``failed``, ``suspended`` (an approval or escalation
    stopped it) or ``skipped`` (the evaluation's budget was spent). ``error`` is
    ``{"type", "message"}`` of the failure. ``tool_calls`` are ``{"name", "args"}`` in the
    order the model asked for them, across every turn. ``approval_requested``,
    ``escalated`` and ``guard_tripped`` say how the run was stopped, if it was.
    ``cost_usd``, ``steps`` and ``latency_s`` are totals over the case's runs. ``runs`` and
    ``journal`` are the stored records (a scorer may read anything else from them).
    ``store`` and ``eval_id`` let a scorer start runs of its own (an LLM judge), whose ids it
    appends to ``extra_run_ids``."""

    output: Any = None
    text: str = ""
    status: str = "completed"
    error: dict[str, Any] | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    approval_requested: bool = False
    escalated: bool = False
    guard_tripped: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    steps: int = 0
    run_ids: tuple[str, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    store: RunStore | None = None
    eval_id: str | None = None
    extra_run_ids: list[str] = field(default_factory=list)

    @property
    def output_text(self) -> str:
        """The output as text: the text of a text answer, JSON for structured output."""
        if isinstance(self.output, str):
            return self.output
        if self.output is None:
            return self.text or ""
        try:
            return json.dumps(plain(self.output), sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(self.output)


def plain(value: Any) -> Any:
    """``value`` as JSON data (a pydantic model dumped, a dataclass as a dict)."""
    from keel.core import to_jsonable

    return to_jsonable(value)


def tool_calls_from(journal: Sequence[JournalEntry]) -> tuple[dict[str, Any], ...]:
    """The tool calls the model asked for, in order, from the model steps of ``journal``
    (arguments that are not a JSON object are kept as ``{"_raw": text}``)."""
    calls: list[dict[str, Any]] = []
    for entry in journal:
        if entry.kind != "model" or entry.phase != "result" or not isinstance(entry.data, dict):
            continue
        for part in entry.data.get("parts") or ():
            if not isinstance(part, dict) or part.get("type") != "tool_call":
                continue
            name = part.get("tool_name")
            if not isinstance(name, str) or name == _FINAL_TOOL:
                continue
            calls.append({"name": name, "args": _args(part.get("arguments"))})
    return tuple(calls)


def _args(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            return {"_raw": raw}
        return value if isinstance(value, dict) else {"_raw": raw}
    return {}


def journal_flags(journal: Sequence[JournalEntry]) -> tuple[bool, bool]:
    """(an approval was asked for, the run escalated), from the journal's step kinds."""
    kinds = {e.kind for e in journal}
    return "approval" in kinds, "escalation" in kinds
