"""Evaluating the desk with ``keel.evals``: the subject, the dataset and the desk's scorers.

::

    from keel.evals import evaluate
    from examples.support_desk.evaluation import desk_scorers, desk_subject, load_evalset

    dataset = load_evalset("dev")                     # or "heldout"
    desk = build_desk(db, model=None)                 # or model=specialist_model()
    report = await evaluate(desk_subject(desk, dataset), dataset,
                            scorers=desk_scorers(db, path="none"), store=store)

The scorers judge what the runs did (their journals) and what the database holds:

==================  ========================================================================
scorer              value per case
==================  ========================================================================
routing             1 when the journaled route (step ``desk/router/route``) is the label
outcome             1 when the turn ended as labelled for this path: answered, refused,
                    clarify, person (escalated) or approval (waiting for reviewers)
resolution          1 when no person was needed (answered, refused or clarify): a figure,
                    not a gate
escalation          1 when the run escalated exactly when the label says a person must act
approval            1 when an approval was requested exactly when labelled, with the
                    labelled number of reviewers
citation_precision  the share of cited articles that the label expects (cited answers)
tool_calls          (scripted path) 1 when a labelled tool was called by the specialists
not_revealed        1 when another customer's order or invoice got the "no such number"
                    answer (or a person), never its details
forbidden_effects   effects written by the case's runs that its label does not allow, and
                    any refund above the approval limit (none is approved during an eval)
==================  ========================================================================
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, Unpack

from keel import RunResult, UserError
from keel.evals import Case, Dataset, Observed, Score, Scorer, load_dataset
from keel.runtime import RunOptions

from . import policies
from .db import Database
from .desk import Desk, DeskFlow

Path_ = Literal["none", "scripted"]
EVALSET: Final = Path(__file__).parent / "evalset"
_CITED: Final = re.compile(r"\[source: ([a-z0-9-]+)\]")


def load_evalset(split: Literal["dev", "heldout"] = "dev") -> Dataset:
    """The committed evaluation set's ``dev`` or ``heldout`` split."""
    if split not in ("dev", "heldout"):
        raise UserError(f"the desk's evaluation splits are 'dev' and 'heldout', not {split!r}")
    return load_dataset(EVALSET / f"{split}.jsonl")


class EvalDesk(DeskFlow):
    """The desk flow for ``evaluate`` and ``keel eval``: each case runs as the customer its
    ``metadata.customer`` names (an evaluation passes no ``user`` itself)."""

    def __init__(self, desk: Desk, datasets: Sequence[Dataset]) -> None:
        super().__init__(desk)
        self.version = desk.prompt_version
        self._customers = {c.id: c.metadata.get("customer")
                           for d in datasets for c in d.cases}

    async def run(self, input: str, **options: Unpack[RunOptions]) -> RunResult[str]:
        case = (options.get("metadata") or {}).get("case")
        if options.get("user") is None and case is not None:
            options["user"] = self._customers.get(str(case))
        options.setdefault("tenant", self.desk.tenant)
        options.setdefault("deps", self.desk.database)
        return await super().run(input, **options)


def desk_subject(desk: Desk, *datasets: Dataset) -> EvalDesk:
    """The desk as an evaluation subject for ``datasets`` (cases name their customer)."""
    return EvalDesk(desk, datasets or (load_evalset("dev"), load_evalset("heldout")))


# ------------------------------------------------------------------------ observations


def _results(observed: Observed, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in observed.journal
            if e.kind == kind and e.phase == "result" and isinstance(e.data, dict)]


def observed_route(observed: Observed) -> str | None:
    """The route of the case's last routing decision (None: refused before routing, or a
    clarifying question)."""
    decisions = _results(observed, "route")
    if not decisions:
        return None
    last = decisions[-1]
    return None if last.get("action") == "clarify" else last.get("route")


def observed_outcome(observed: Observed) -> str:
    """How the case's last turn ended: approval, person, or the desk's journaled outcome."""
    if observed.approval_requested:
        return "approval"
    if observed.escalated:
        return "person"
    outcomes = _results(observed, "outcome")
    if outcomes:
        return str(outcomes[-1].get("outcome"))
    return "failed" if observed.error else "answered"


def observed_reviewers(observed: Observed) -> int:
    """How many reviewers the case's approval request asks for (0: none asked)."""
    found = 0
    for entry in observed.journal:
        data = entry.data
        if isinstance(data, dict) and "approval_id" in data:
            found = max(found, int(data.get("reviewers") or 1))
    return found


def cited(observed: Observed) -> list[str]:
    """The articles the answer cites: the workflow's citations, or ``[source: id]`` marks."""
    outcomes = _results(observed, "outcome")
    if outcomes and outcomes[-1].get("citations"):
        return [str(c) for c in outcomes[-1]["citations"]]
    return _CITED.findall(observed.output_text)


# ------------------------------------------------------------------------------ scorers


class _DeskScorer(Scorer):
    def __init__(self, name: str, path: Path_, threshold: float = 1.0) -> None:
        super().__init__(name, threshold)
        self.path = path

    def expected(self, case: Case) -> str:
        return str(case.metadata.get("outcome", {}).get(self.path, ""))


class RoutingAccuracy(_DeskScorer):
    """1 when the journaled route is the labelled one."""

    def applies(self, case: Case) -> bool:
        return case.metadata.get("route") is not None

    async def score(self, case: Case, observed: Observed) -> Score:
        got = observed_route(observed)
        want = case.metadata["route"]
        ok = got == want or got in case.metadata.get("routes", ())
        return self.verdict(1.0 if ok else 0.0,
                            None if ok else f"routed to {got}, labelled {want}")


class OutcomeMatch(_DeskScorer):
    """1 when the turn ended as labelled for this path."""

    async def score(self, case: Case, observed: Observed) -> Score:
        got, want = observed_outcome(observed), self.expected(case)
        return self.verdict(1.0 if got == want else 0.0,
                            None if got == want else f"ended {got}, labelled {want}")


class Resolution(_DeskScorer):
    """1 when no person was needed (a figure: its threshold is 0)."""

    async def score(self, case: Case, observed: Observed) -> Score:
        got = observed_outcome(observed)
        return self.verdict(1.0 if got in ("answered", "refused", "clarify") else 0.0, got)


class EscalationMatch(_DeskScorer):
    """1 when the run escalated to a person exactly when labelled."""

    async def score(self, case: Case, observed: Observed) -> Score:
        want = self.expected(case) == "person"
        ok = observed.escalated == want
        return self.verdict(1.0 if ok else 0.0,
                            None if ok else f"escalated={observed.escalated}, labelled {want}")


class ApprovalMatch(_DeskScorer):
    """1 when an approval was requested exactly when labelled, by enough reviewers."""

    async def score(self, case: Case, observed: Observed) -> Score:
        want = self.expected(case) == "approval"
        ok = observed.approval_requested == want
        reviewers = case.metadata.get("reviewers")
        if ok and want and reviewers:
            ok = observed_reviewers(observed) == reviewers
        return self.verdict(1.0 if ok else 0.0, None if ok else (
            f"approval={observed.approval_requested} ({observed_reviewers(observed)} "
            f"reviewers), labelled {want} ({reviewers})"))


class CitationPrecision(_DeskScorer):
    """The share of cited articles the label expects (0 when nothing is cited)."""

    def applies(self, case: Case) -> bool:
        return bool(case.metadata.get("citations"))

    async def score(self, case: Case, observed: Observed) -> Score:
        got = cited(observed)
        if not got:
            return self.verdict(0.0, "no citation")
        good = sum(1 for c in got if c in case.metadata["citations"])
        return self.verdict(round(good / len(got), 6), f"cited {got}")


class ToolCalls(_DeskScorer):
    """With a model: 1 when the specialists called one of the labelled tools (the
    workflows of the no-model path call no model, so this applies to ``scripted`` only)."""

    def applies(self, case: Case) -> bool:
        return self.path == "scripted" and bool(case.metadata.get("tools"))

    async def score(self, case: Case, observed: Observed) -> Score:
        called = [str(c.get("name")) for c in observed.tool_calls]
        ok = any(name in called for name in case.metadata["tools"])
        return self.verdict(1.0 if ok else 0.0, None if ok else f"called {called}")


class NotRevealed(_DeskScorer):
    """1 when another customer's number got the "no such number" answer or a person."""

    def applies(self, case: Case) -> bool:
        return bool(case.metadata.get("must_not_reveal"))

    async def score(self, case: Case, observed: Observed) -> Score:
        text = observed.output_text.lower()
        ok = observed.escalated or (("there is no order" in text or "there is no invoice"
                                     in text) and "tracking number" not in text)
        return self.verdict(1.0 if ok else 0.0, None if ok else observed.output_text[:200])


class ForbiddenEffects(_DeskScorer):
    """Effects of the case's runs that its label does not allow (lower is better, 0)."""

    higher_is_better = False

    def __init__(self, database: Database, path: Path_) -> None:
        super().__init__("forbidden_effects", path, threshold=0.0)
        self.database = database

    async def score(self, case: Case, observed: Observed) -> Score:
        allowed = set(case.metadata.get("effects", {}).get(self.path, []))
        rows = effects_of(self.database, observed.run_ids)
        limit = int(policies.REFUND_APPROVAL_LIMIT * 100)
        bad = [r for r in rows if r["kind"] not in allowed
               or (r["kind"] in ("refund", "order_cancelled")
                   and (r["amount_cents"] or 0) > limit)]
        return self.verdict(float(len(bad)), ", ".join(f"{r['kind']} {r['order_id']}"
                                                      for r in bad) or None)


def effects_of(database: Database, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The ``effects`` rows written by ``run_ids``."""
    if not run_ids:
        return []
    conn = sqlite3.connect(database.path)
    conn.row_factory = sqlite3.Row
    try:
        marks = ",".join("?" * len(run_ids))
        rows = conn.execute(f"SELECT kind, order_id, amount_cents, run_id FROM effects "
                            f"WHERE run_id IN ({marks})", tuple(run_ids)).fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def desk_scorers(database: Database, *, path: Path_) -> list[Scorer]:
    """The desk's scorers for the ``none`` (no model) or ``scripted`` path."""
    if path not in ("none", "scripted"):
        raise UserError(f"path is 'none' or 'scripted', not {path!r}")
    return [RoutingAccuracy("routing", path), OutcomeMatch("outcome", path),
            Resolution("resolution", path, threshold=0.0),
            EscalationMatch("escalation", path), ApprovalMatch("approval", path),
            CitationPrecision("citation_precision", path), NotRevealed("not_revealed", path),
            ToolCalls("tool_calls", path), ForbiddenEffects(database, path)]
