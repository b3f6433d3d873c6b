"""What a red-team run produces: one :class:`AttackOutcome` per attack and the
:class:`RedTeamReport` over them (per category: attacks, succeeded, blocked and by what,
errors; the attack success rate; a gate on it)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias
from xml.sax.saxutils import escape, quoteattr

from keel.evals._errors import EvalError

#: The red-team report's format name and version, written into every report.
REDTEAM_FORMAT = "keel.redteam/1"
Status: TypeAlias = Literal["succeeded", "blocked", "error"]
#: A gate: one rate for every category and the whole run, or a rate per category
#: (``"all"`` for the whole run).
Gate: TypeAlias = float | Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttackOutcome:
    """One attack's result. ``status``: ``succeeded`` (``evidence`` says what happened: a
    call executed without approval, a canary where the attacker gets it, a crash),
    ``blocked`` (``blocked_by`` names the guards that acted, ``approval`` for a call that
    waited for a person, ``input_validation`` for input keel refused, ``runtime`` for a
    malformed input that ended in a clear keel error, ``agent`` when nothing tripped and the
    agent did not do it) or ``error`` (the run failed for another reason, in ``error``)."""

    attack: dict[str, Any]
    status: Status
    evidence: tuple[str, ...] = ()
    blocked_by: tuple[str, ...] = ()
    run_id: str | None = None
    run_status: str = ""
    error: str | None = None

    @property
    def id(self) -> str:
        return str(self.attack["id"])

    @property
    def category(self) -> str:
        return str(self.attack["category"])


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryFigures:
    """One category's counts and its attack success rate (``succeeded / attacks``)."""

    attacks: int
    succeeded: int
    blocked: int
    errors: int
    blocked_by: dict[str, int]
    success_rate: float


def figures(outcomes: list[AttackOutcome]) -> CategoryFigures:
    by: Counter[str] = Counter(b for o in outcomes if o.status == "blocked"
                               for b in o.blocked_by)
    n = len(outcomes)
    won = sum(o.status == "succeeded" for o in outcomes)
    return CategoryFigures(attacks=n, succeeded=won,
                           blocked=sum(o.status == "blocked" for o in outcomes),
                           errors=sum(o.status == "error" for o in outcomes),
                           blocked_by=dict(sorted(by.items())),
                           success_rate=won / n if n else 0.0)


def check_gate(gate: Gate | None, categories: list[str] | None = None) -> dict[str, float]:
    """``gate`` as ``{category or "all": rate}``; a rate outside [0, 1] or an unknown
    category is an :class:`EvalError` naming the fix."""
    if gate is None:
        return {}
    rates = {"all": gate} if isinstance(gate, int | float) and not isinstance(gate, bool) \
        else gate
    if not isinstance(rates, Mapping):
        raise EvalError(f"max_success_rate must be a number from 0 to 1 or a mapping of "
                        f"category to rate, not {type(gate).__name__}")
    out = {}
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) \
                or not math.isfinite(rate) or not 0 <= rate <= 1:
            raise EvalError(f"max_success_rate for {name!r} is {rate!r}; give a rate from 0 "
                            "to 1 (0.05 allows 5% of attacks to succeed)")
        if categories is not None and name != "all" and name not in categories:
            raise EvalError(f"max_success_rate names category {name!r}, which no suite "
                            f"given has; the categories are {', '.join(categories)} "
                            "(or 'all')")
        out[str(name)] = float(rate)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RedTeamReport:
    """The red team's report over every attack of the suites run against ``subject``."""

    subject: dict[str, Any]
    suites: tuple[str, ...]
    outcomes: tuple[AttackOutcome, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    max_success_rate: dict[str, float] = field(default_factory=dict)
    format: str = REDTEAM_FORMAT

    @property
    def categories(self) -> dict[str, CategoryFigures]:
        """Per category (in the order first met), the figures."""
        names = list(dict.fromkeys(o.category for o in self.outcomes))
        return {c: figures([o for o in self.outcomes if o.category == c]) for c in names}

    @property
    def overall(self) -> CategoryFigures:
        return figures(list(self.outcomes))

    @property
    def success_rate(self) -> float:
        return self.overall.success_rate

    def succeeded(self) -> list[AttackOutcome]:
        return [o for o in self.outcomes if o.status == "succeeded"]

    def gate_failures(self, gate: Gate | None = None) -> list[str]:
        """Each category (or ``all``, the whole run) whose success rate is over its limit,
        as a sentence; ``gate`` defaults to the report's own ``max_success_rate``."""
        limits = self.max_success_rate if gate is None else check_gate(gate)
        cats = self.categories
        out = []
        for name, limit in limits.items():
            got = self.overall if name == "all" else cats.get(name)
            if got is not None and got.success_rate > limit:
                out.append(f"{name}: {got.succeeded} of {got.attacks} attacks succeeded "
                           f"({got.success_rate:.1%}), over the limit of {limit:.1%}")
        return out

    @property
    def passed(self) -> bool:
        """Whether the report passes its gate (no gate: True)."""
        return not self.gate_failures()

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "subject": self.subject, "suites": list(self.suites),
                "settings": self.settings, "max_success_rate": self.max_success_rate,
                "categories": {c: asdict(f) for c, f in self.categories.items()},
                "overall": asdict(self.overall), "passed": self.passed,
                "outcomes": [asdict(o) for o in self.outcomes]}

    def to_markdown(self) -> str:
        """The per-category table, the gate's verdict, and every successful attack."""
        lines = [f"# Red team: {self.subject.get('name', '?')}", "",
                 "| category | attacks | succeeded | blocked | errors | success rate | "
                 "blocked by |", "| --- | --- | --- | --- | --- | --- | --- |"]
        rows = [*self.categories.items(), ("**all**", self.overall)]
        for name, f in rows:
            by = ", ".join(f"{k} {v}" for k, v in f.blocked_by.items()) or "-"
            lines.append(f"| {name} | {f.attacks} | {f.succeeded} | {f.blocked} | {f.errors} "
                         f"| {f.success_rate:.1%} | {by} |")
        if self.max_success_rate:
            failures = self.gate_failures()
            lines += ["", "Gate: " + ("passed" if not failures else "FAILED: "
                                      + "; ".join(failures))]
        won = self.succeeded()
        if won:
            lines += ["", "## Successful attacks", ""]
            lines += [f"- `{o.id}` (run {o.run_id or '-'}): {'; '.join(o.evidence)}"
                      for o in won]
        return "\n".join(lines) + "\n"

    def write_junit(self, path: str | Path) -> None:
        """A JUnit XML file: one test per attack, failed when the attack succeeded."""
        cases = []
        for o in self.outcomes:
            name = quoteattr(o.id)
            body = ""
            if o.status == "succeeded":
                body = (f"<failure message={quoteattr('attack succeeded')}>"
                        f"{escape('; '.join(o.evidence))}</failure>")
            elif o.status == "error":
                body = f"<error message={quoteattr(o.error or 'error')}/>"
            cases.append(f"<testcase classname={quoteattr('redteam.' + o.category)} "
                         f"name={name}>{body}</testcase>")
        f = self.overall
        xml = ('<?xml version="1.0" encoding="utf-8"?>\n'
               f'<testsuite name="keel-redteam" tests="{f.attacks}" failures="{f.succeeded}" '
               f'errors="{f.errors}">' + "".join(cases) + "</testsuite>\n")
        Path(path).write_text(xml, encoding="utf-8")
