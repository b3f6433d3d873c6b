"""Compare two runs step by step: ``diff_runs(run_a, run_b, store=store)``.

Steps are aligned by key (``agent/turn:2/tool:refund#0``), in order of first appearance in
either journal, and each is ``same``, ``changed``, ``only_a`` or ``only_b``. Model steps are
compared on what the model said (text and tool calls with canonical arguments, not provider
call ids or token counts) and which model said it; tool steps on what the tool returned.
Typical use: a fork against its parent, or two runs of the same input before and after a
prompt change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from keel.core import canonical_json, dumps
from keel.runtime._runner import using_store
from keel.store import JournalEntry, RunRecord, RunStore, store_moved

StepStatus: TypeAlias = Literal["same", "changed", "only_a", "only_b"]
#: How many characters of one side a step summary keeps.
SUMMARY_LIMIT = 240


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTotals:
    """What one run's journal adds up to: result steps, tokens and cost of its model steps."""

    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "tokens": self.tokens,
                "cost_usd": self.cost_usd}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDiff:
    """One aligned step: its key, kind, status and a short literal summary of each side
    (``None`` where the run has no such step)."""

    key: str
    kind: str
    status: StepStatus
    a: str | None
    b: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "status": self.status, "a": self.a,
                "b": self.b}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDiff:
    """Two runs side by side. ``first_divergence`` is the key of the first step that is not
    ``same`` (``None`` when every step matches); ``fork_a`` / ``fork_b`` are the runs' fork
    metadata (parent, step, model) when they are forks."""

    run_a: str
    run_b: str
    status_a: str
    status_b: str
    steps: tuple[StepDiff, ...]
    first_divergence: str | None
    output_a: Any
    output_b: Any
    outputs_equal: bool
    totals_a: RunTotals
    totals_b: RunTotals
    fork_a: dict[str, Any] | None = None
    fork_b: dict[str, Any] | None = None

    @property
    def identical(self) -> bool:
        return self.first_divergence is None and self.outputs_equal

    def counts(self) -> dict[str, int]:
        out = {"same": 0, "changed": 0, "only_a": 0, "only_b": 0}
        for s in self.steps:
            out[s.status] += 1
        return out

    def deltas(self) -> dict[str, Any]:
        """B minus A, for steps, tokens and cost."""
        a, b = self.totals_a, self.totals_b
        return {"steps": b.steps - a.steps, "input_tokens": b.input_tokens - a.input_tokens,
                "output_tokens": b.output_tokens - a.output_tokens,
                "tokens": b.tokens - a.tokens, "cost_usd": b.cost_usd - a.cost_usd}

    def to_dict(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "status_a": self.status_a,
                "status_b": self.status_b, "first_divergence": self.first_divergence,
                "outputs_equal": self.outputs_equal, "output_a": self.output_a,
                "output_b": self.output_b, "counts": self.counts(),
                "totals_a": self.totals_a.to_dict(), "totals_b": self.totals_b.to_dict(),
                "deltas": self.deltas(), "fork_a": self.fork_a, "fork_b": self.fork_b,
                "steps": [s.to_dict() for s in self.steps]}


async def diff_runs(run_a: str, run_b: str, _old: str | None = None, /, *,
                    store: RunStore | str | None = None) -> RunDiff:
    """Compare runs ``run_a`` and ``run_b`` of ``store`` (a store, its URL, or None for the
    default store). Raises :class:`~keel.RunNotFound` for an unknown id. Reads only.
    (``diff_runs(store, run_a, run_b)`` is the deprecated form.)"""
    (run_a, run_b), store = store_moved("diff_runs", [run_a, run_b], _old, store)
    async with using_store(store) as opened:
        record_a = await opened.get_run(run_a)
        record_b = await opened.get_run(run_b)
        journal_a = await opened.read_journal(run_a)
        journal_b = await opened.read_journal(run_b)
    return compare(record_a, journal_a, record_b, journal_b)


def compare(record_a: RunRecord, journal_a: Sequence[JournalEntry], record_b: RunRecord,
            journal_b: Sequence[JournalEntry]) -> RunDiff:
    """:func:`diff_runs` on records and journals already read."""
    steps_a, steps_b = _by_key(journal_a), _by_key(journal_b)
    order = merge_order(list(steps_a), list(steps_b))
    diffs = tuple(_step_diff(key, steps_a.get(key), steps_b.get(key)) for key in order)
    first = next((d.key for d in diffs if d.status != "same"), None)
    return RunDiff(
        run_a=record_a.run_id, run_b=record_b.run_id, status_a=record_a.status,
        status_b=record_b.status, steps=diffs, first_divergence=first,
        output_a=record_a.output, output_b=record_b.output,
        outputs_equal=(record_a.status == record_b.status
                       and same_json(record_a.output, record_b.output)),
        totals_a=journal_totals(journal_a), totals_b=journal_totals(journal_b),
        fork_a=_fork_of(record_a), fork_b=_fork_of(record_b))


def _fork_of(record: RunRecord) -> dict[str, Any] | None:
    fork = record.metadata.get("fork") if isinstance(record.metadata, dict) else None
    return dict(fork) if isinstance(fork, dict) else None


# ------------------------------------------------------------------------------ aligning


class _Step:
    __slots__ = ("intent", "result")

    def __init__(self) -> None:
        self.intent: JournalEntry | None = None
        self.result: JournalEntry | None = None

    @property
    def entry(self) -> JournalEntry:
        e = self.result or self.intent
        assert e is not None
        return e


def _by_key(journal: Iterable[JournalEntry]) -> dict[str, _Step]:
    """Entries grouped by step key, keys in order of first appearance."""
    steps: dict[str, _Step] = {}
    for e in journal:
        step = steps.setdefault(e.key, _Step())
        if e.phase == "intent":
            step.intent = e
        else:
            step.result = e
    return steps


def merge_order(a: list[str], b: list[str]) -> list[str]:
    """The union of two key sequences, each key once: A's order, with B's own keys placed
    where they appear relative to the keys both share."""
    in_a = set(a)
    pos_b = {k: i for i, k in enumerate(b)}
    out: list[str] = []
    j = 0
    for key in a:
        i = pos_b.get(key)
        if i is not None and i >= j:
            out.extend(k for k in b[j:i] if k not in in_a)
            j = i + 1
        out.append(key)
    out.extend(k for k in b[j:] if k not in in_a)
    return out


def _step_diff(key: str, a: _Step | None, b: _Step | None) -> StepDiff:
    if a is None or b is None:
        only = b if a is None else a
        assert only is not None
        return StepDiff(key=key, kind=only.entry.kind, status="only_b" if a is None else "only_a",
                        a=None if a is None else summarize(a.entry, a.intent),
                        b=None if b is None else summarize(b.entry, b.intent))
    same = _fingerprint(a) == _fingerprint(b)
    show_model = a.entry.name != b.entry.name
    return StepDiff(key=key, kind=a.entry.kind, status="same" if same else "changed",
                    a=summarize(a.entry, a.intent, show_name=show_model),
                    b=summarize(b.entry, b.intent, show_name=show_model))


def _fingerprint(step: _Step) -> tuple[str, str, str, str]:
    e = step.entry
    if step.result is None:
        return (e.kind, e.name, "intent", canonical_json(e.data))
    return (e.kind, e.name, "result", _content(e))


def _content(entry: JournalEntry) -> str:
    """What a result says, for comparison: a model's text and calls (without call ids and
    token counts), a tool's content and error flag, else the data itself."""
    data = entry.data
    if entry.kind == "model" and isinstance(data, dict) and isinstance(data.get("parts"), list):
        parts = []
        for p in data["parts"]:
            if isinstance(p, dict) and p.get("type") == "tool_call":
                parts.append(["call", p.get("tool_name"), _canonical_args(p.get("arguments"))])
            elif isinstance(p, dict) and p.get("type") == "text":
                parts.append(["text", p.get("text")])
            else:
                parts.append(["other", p])
        return canonical_json(parts)
    if entry.kind == "tool" and isinstance(data, dict) and "content" in data:
        return canonical_json([data.get("content"), data.get("failure") is not None])
    return canonical_json(data)


def _canonical_args(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return canonical_json(json.loads(arguments))
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for json
        return arguments


# ----------------------------------------------------------------------------- summaries


def summarize(entry: JournalEntry, intent: JournalEntry | None = None, *,
              show_name: bool = False) -> str:
    """A short literal one-line summary of a step: the model's text and calls, the tool's
    result or error, or for a step with only an intent, what was started."""
    if entry.phase == "intent":
        text = "started, no result recorded: " + _intent_text(entry)
    elif entry.kind == "model":
        text = _model_text(entry.data)
        if show_name:
            text = f"{entry.name}: {text}"
    elif entry.kind == "tool" and isinstance(entry.data, dict) and "content" in entry.data:
        text = _tool_text(entry.data)
    else:
        text = dumps(entry.data)
    return _clip(_one_line(text))


def _model_text(data: Any) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
        return dumps(data)
    pieces = []
    for p in data["parts"]:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text" and str(p.get("text", "")).strip():
            pieces.append(str(p["text"]).strip())
        elif p.get("type") == "tool_call":
            pieces.append(f"call {p.get('tool_name', '?')} {p.get('arguments', '')}".rstrip())
    return " · ".join(pieces) or "(empty response)"


def _tool_text(data: dict[str, Any]) -> str:
    failure = data.get("failure")
    if isinstance(failure, dict):
        return f"error {failure.get('error_type', '?')}: {failure.get('message', '')}"
    return str(data.get("content", ""))


def _intent_text(entry: JournalEntry) -> str:
    data = entry.data
    if isinstance(data, dict) and "arguments" in data:
        return f"{data.get('tool', entry.name)} {data['arguments']}"
    return f"{entry.name} {dumps(data)}"


def _one_line(text: str) -> str:
    return " ⏎ ".join(part.strip() for part in text.strip().splitlines())


def _clip(text: str) -> str:
    if len(text) <= SUMMARY_LIMIT:
        return text
    return f"{text[:SUMMARY_LIMIT]}… [{len(text) - SUMMARY_LIMIT:,} more characters]"


# ------------------------------------------------------------------------------- totals


def journal_totals(journal: Iterable[JournalEntry]) -> RunTotals:
    """Result steps, and the tokens and cost recorded with the journal's model steps."""
    steps = tin = tout = 0
    cost = 0.0
    for e in journal:
        if e.phase != "result":
            continue
        steps += 1
        usage = e.data.get("usage") if e.kind == "model" and isinstance(e.data, dict) else None
        if isinstance(usage, dict):
            tin += int(stored_number(usage.get("input_tokens")))
            tout += int(stored_number(usage.get("output_tokens")))
            cost += stored_number(usage.get("cost_usd"))
    return RunTotals(steps=steps, input_tokens=tin, output_tokens=tout, cost_usd=cost)


def stored_number(value: Any) -> float:
    """A stored count or amount (usage from a journal or a run record); 0 for anything that
    is not a finite number."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON (sorted keys; tuples and lists alike)."""
    return canonical_json(a) == canonical_json(b)
