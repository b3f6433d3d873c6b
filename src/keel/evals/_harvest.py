"""Datasets harvested from the journal: the runs production already served, chosen by what
happened in them (escalated, asked for approval, got negative feedback ...), turned into
:class:`~keel.evals.Case` objects (``keel runs export --as-dataset`` writes them as JSONL).

What a harvested case holds:

* ``id``: the run id; ``metadata.source_run`` names it too (and ``metadata.agent``);
* ``input``: the run's input (text; other JSON as its text); a run that is a turn of a
  conversation gets the conversation's user turns up to and including it, oldest first;
* ``expected``: the run's output, only for a completed run with positive feedback (each person's
  newest verdict is non-negative and one is a thumbs up or a score of at least 0.5);
* ``expect``: what the run did, when it is worth keeping (not for runs with negative feedback):
  ``escalate: true`` for an escalated run, ``approval: true`` for one that asked for approval;
* ``tags``: ``agent:NAME``, ``status:STATUS``, ``escalated``, ``approval``,
  ``feedback:negative`` / ``feedback:positive``;
* ``metadata.feedback``: the counts of the run's feedback and its comments (masked like the
  input).

Personal data and secrets are masked by the data policy for the ``exports`` destination (by
default every kind of personal data and every secret is masked) in the input, the expected
output and the feedback comments; a string holding a kind the policy blocks is withheld.
``redact=False`` switches it off (a dataset that keeps real customer data: think twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.core import UserError, to_text
from keel.evals._case import Case, Expect
from keel.evals._errors import EvalError
from keel.guard import DataPolicy
from keel.runtime import FeedbackSummary, epoch_since, summarize_feedback
from keel.store import (
    RUN_STATUSES,
    Feedback,
    RunFilter,
    RunRecord,
    RunStatus,
    RunStore,
    TaskFilter,
    check_id,
)

FeedbackKind = Literal["negative", "positive"]
#: The most cases one harvest returns.
MAX_HARVEST = 10_000
_PAGE = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestFilter:
    """Which runs :func:`harvest` turns into cases (every field narrows; None: any).

    ``escalated`` / ``approval``: True keeps only runs that raised an escalation / asked for
    an approval, False only runs that did not. ``feedback``: ``"negative"`` keeps runs whose
    feedback holds a negative verdict (thumbs down or a score below 0.5), ``"positive"`` runs
    whose feedback is all non-negative with at least one thumbs up or score of 0.5 or more.
    ``since``: runs created at or after it (epoch seconds or a datetime). ``limit``: the most
    cases (newest runs first, 1 to 10,000)."""

    agent: str | None = None
    status: RunStatus | None = None
    escalated: bool | None = None
    approval: bool | None = None
    feedback: FeedbackKind | None = None
    since: Any = None
    tenant: str | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        for name in ("agent", "tenant"):
            if getattr(self, name) is not None:
                check_id(name, getattr(self, name))
        if self.status is not None and self.status not in RUN_STATUSES:
            raise EvalError(f"status {self.status!r:.40} is not a run status; use one of "
                            f"{', '.join(RUN_STATUSES)}")
        for name in ("escalated", "approval"):
            if getattr(self, name) not in (None, True, False):
                raise EvalError(f"{name}= is True, False or None, not "
                                f"{getattr(self, name)!r:.40}")
        if self.feedback not in (None, "negative", "positive"):
            raise EvalError(f"feedback= is 'negative' or 'positive', not {self.feedback!r:.40}")
        object.__setattr__(self, "since", _epoch(self.since))
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) \
                or not 1 <= self.limit <= MAX_HARVEST:
            raise EvalError(f"limit= is a whole number from 1 to {MAX_HARVEST:,}, not "
                            f"{self.limit!r:.40}")


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one run did, beyond its record."""

    escalated: bool
    approval: bool
    feedback: FeedbackSummary
    comments: tuple[str, ...]


async def harvest(store: RunStore, filt: HarvestFilter | None = None, *, redact: bool = True,
                  policy: DataPolicy | None = None) -> list[Case]:
    """The runs of ``store`` that ``filt`` picks, newest first, as dataset cases (see the
    module docstring for what each holds). ``policy`` is the data policy that masks personal
    data and secrets (default: ``DataPolicy()``); ``redact=False`` keeps them in clear. Runs
    without an input are skipped. Reads only."""
    if not isinstance(store, RunStore):
        raise EvalError(f"harvest() needs a RunStore (e.g. open_store(url)), not "
                        f"{type(store).__name__}")
    filt = filt or HarvestFilter()
    if policy is not None and not isinstance(policy, DataPolicy):
        raise EvalError(f"policy= is a keel.guard.DataPolicy, not {type(policy).__name__}")
    scrub = _Scrubber(policy or DataPolicy() if redact else None)
    cases: list[Case] = []
    seen: set[str] = set()  # runs started while paging shift the pages: never one twice
    offset = 0
    while len(cases) < filt.limit:
        page = await store.list_runs(RunFilter(status=filt.status, agent=filt.agent,
                                               tenant=filt.tenant, limit=_PAGE,
                                               offset=offset))
        offset += len(page)
        recent = [r for r in page if filt.since is None or r.created_at >= filt.since]
        fresh = [r for r in recent if r.run_id not in seen]
        seen.update(r.run_id for r in fresh)
        facts = await _facts(store, fresh, filt)
        for record in fresh:
            fact = facts.get(record.run_id)
            if fact is not None and _wanted(fact, filt):
                case = await _case(store, record, fact, scrub)
                if case is not None:
                    cases.append(case)
                    if len(cases) == filt.limit:
                        break
        if len(page) < _PAGE or len(recent) < len(page):  # the rest are older than since
            break
    return cases


async def _facts(store: RunStore, runs: Sequence[RunRecord],
                 filt: HarvestFilter) -> dict[str, _Facts]:
    if not runs:
        return {}
    ids = [r.run_id for r in runs]
    records = await store.list_feedback(run_ids=ids, tenant=filt.tenant, limit=10_000)
    by_run: dict[str, list[Feedback]] = {}
    for f in records:
        by_run.setdefault(f.run_id, []).append(f)
    out: dict[str, _Facts] = {}
    for record in runs:
        given = by_run.get(record.run_id, [])
        summary = summarize_feedback(given)
        if filt.feedback is not None and _verdict(summary) != filt.feedback:
            continue  # cheap filters first: the task query is one per run
        tasks = await store.list_tasks(TaskFilter(run_id=record.run_id, tenant=filt.tenant,
                                                  limit=1000))
        out[record.run_id] = _Facts(
            escalated=any(t.kind == "escalation" for t in tasks),
            approval=any(t.kind == "approval" for t in tasks),
            feedback=summary, comments=tuple(f.comment for f in given if f.comment))
    return out


def _verdict(summary: FeedbackSummary) -> FeedbackKind | None:
    if summary.negative:
        return "negative"
    if summary.up or (summary.mean_score is not None and summary.mean_score >= 0.5):
        return "positive"
    return None


def _wanted(fact: _Facts, filt: HarvestFilter) -> bool:
    return (filt.escalated is None or fact.escalated == filt.escalated) and \
        (filt.approval is None or fact.approval == filt.approval)


class _Scrubber:
    def __init__(self, policy: DataPolicy | None) -> None:
        self.policy = policy

    def __call__(self, value: Any, record: RunRecord, where: str) -> Any:
        if self.policy is None:
            return value
        return self.policy.scope_of(record).scrub_value(value, "exports", where=where,
                                                        withhold=True)


async def _case(store: RunStore, record: RunRecord, fact: _Facts,
                scrub: _Scrubber) -> Case | None:
    turns = await _turns(store, record)
    turns = [t for t in (scrub(t, record, "input") for t in turns) if t.strip()]
    if not turns:
        return None
    verdict = _verdict(fact.feedback)
    keep = verdict != "negative"
    expected = None
    if verdict == "positive" and record.status == "completed" and record.output is not None:
        expected = scrub(record.output, record, "output")
    expect = Expect(escalate=True if keep and fact.escalated else None,
                    approval=True if keep and fact.approval else None)
    tags = [f"agent:{record.agent}", f"status:{record.status}"]
    tags += [name for name, on in (("escalated", fact.escalated),
                                   ("approval", fact.approval)) if on]
    if verdict is not None:
        tags.append(f"feedback:{verdict}")
    metadata: dict[str, Any] = {"source_run": record.run_id, "agent": record.agent}
    if fact.feedback.records:
        metadata["feedback"] = {**{k: v for k, v in fact.feedback.to_dict().items()
                                   if k in ("verdicts", "up", "down", "mean_score",
                                            "negative")},
                                "comments": [scrub(c, record, "comment")
                                             for c in fact.comments]}
    text: str | tuple[dict[str, str], ...] = turns[0] if len(turns) == 1 else tuple(
        {"role": "user", "content": t} for t in turns)
    return Case(id=record.run_id, input=text, expected=expected, expect=expect,
                tags=tuple(tags), metadata=metadata)


async def _turns(store: RunStore, record: RunRecord) -> list[str]:
    """The user's messages that led to ``record``'s answer, oldest first."""
    own = _text(record.input)
    if record.conversation is None:
        return [own]
    earlier: list[RunRecord] = []
    offset = 0
    while True:
        page = await store.list_runs(RunFilter(conversation=record.conversation,
                                               tenant=record.tenant, limit=_PAGE,
                                               offset=offset))
        earlier += [r for r in page if (r.created_at, r.run_id) < (record.created_at,
                                                                   record.run_id)]
        offset += len(page)
        if len(page) < _PAGE:
            break
    earlier.sort(key=lambda r: (r.created_at, r.run_id))
    return [_text(r.input) for r in earlier] + [own]


def _text(value: Any) -> str:
    return "" if value is None else to_text(value)


def _epoch(since: object) -> float | None:
    try:
        return epoch_since(since)
    except UserError as exc:  # this layer's own error type, the same message
        raise EvalError(str(exc)) from None
