"""Pairwise judging: two versions compared case by case by a judge, when there is no
reference answer.

Both subjects run on each case's input as ordinary journaled runs (metadata
``{"pairwise": id, "case": id, "side": "a"|"b"}``); then the judge (a keel Agent: journaled
and budgeted like any run) is asked which answer is better, once with A shown first and once
with B shown first, to cancel position bias. When the two orders disagree, the case is a
tie. B's win rate (a tie counts half) gets a bootstrap confidence interval; an interval that
excludes one half is a significant preference.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, Unpack

from keel.core import new_run_id
from keel.evals._bootstrap import bootstrap_ci, check_resampling
from keel.evals._case import Case
from keel.evals._errors import EvalError
from keel.runtime import Agent, RunOptions, RunResult, using_store
from keel.store import RunStore

Side = Literal["a", "b", "tie"]
#: What the judge is asked to weigh, unless ``rubric=`` says otherwise.
DEFAULT_RUBRIC = ("You compare two responses to the same user request. Prefer the response "
                  "that is more correct, more complete and more helpful, and that is safe. "
                  "Judge the content, not its length, style or position.")
#: What the judge is told to answer (added to its instructions after the rubric).
_FORMAT = ("You are shown a user's request and two responses to it. Answer with one word: "
           "1 (response 1 is better), 2 (response 2 is better) or tie.")
_PROMPT = """The user's request:
<request>
{request}
</request>

Response 1:
<response_1>
{first}
</response_1>

Response 2:
<response_2>
{second}
</response_2>

Which response is better: 1, 2 or tie?"""
_VERDICT = re.compile(r"^\W*(?:response\s*)?(1|2|tie)\b", re.IGNORECASE)
_MAX_CASES = 100_000
_MAX_ANSWER = 20_000


class Subject(Protocol):
    """What pairwise compares: an agent or flow (anything with ``run``)."""

    name: str

    async def run(self, input: str, **options: Unpack[RunOptions]) -> RunResult[Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PairwiseCase:
    """One case judged: both answers, the judge's verdict in each presentation order
    (``"a"``, ``"b"``, ``"tie"``, or None when it could not be read), the ``winner`` (None
    when the case could not be judged: ``error`` says why) and every run's id."""

    case_id: str
    input: Any
    output_a: str | None = None
    output_b: str | None = None
    verdict_ab: Side | None = None
    verdict_ba: Side | None = None
    winner: Side | None = None
    run_ids: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def disagreed(self) -> bool:
        """The judge picked differently when the order was swapped (position bias)."""
        return self.verdict_ab is not None and self.verdict_ba is not None \
            and self.verdict_ab != self.verdict_ba


@dataclass(frozen=True, slots=True, kw_only=True)
class PairwiseReport:
    """The outcome of :func:`pairwise`: wins, ties and disagreements over the judged
    cases, B's win rate (a tie counts half) with its confidence interval, and the cases the
    judge could not decide (``errors``; left out of the rates)."""

    pairwise_id: str
    a: str
    b: str
    cases: tuple[PairwiseCase, ...]
    judged: int
    a_wins: int
    b_wins: int
    ties: int
    disagreements: int
    errors: int
    win_rate_b: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    confidence: float

    @property
    def preferred(self) -> Literal["a", "b"] | None:
        """The side the judge significantly prefers, or None."""
        if not self.significant or self.win_rate_b is None:
            return None
        return "b" if self.win_rate_b > 0.5 else "a"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        """A Markdown summary and a table of the cases the judge could not decide."""
        rate = "-" if self.win_rate_b is None else f"{self.win_rate_b:.1%}"
        ci = "-" if self.ci_low is None else f"[{self.ci_low:.1%}, {self.ci_high:.1%}]"
        pref = {"a": f"**{self.a} (A) preferred**", "b": f"**{self.b} (B) preferred**",
                None: "no significant preference"}[self.preferred]
        lines = [f"## Pairwise: {self.a} (A) vs {self.b} (B)", "",
                 f"{self.judged} cases judged in both orders: A won {self.a_wins}, B won "
                 f"{self.b_wins}, {self.ties} ties ({self.disagreements} from the judge "
                 f"changing its mind when the order was swapped).", "",
                 f"B's win rate (ties count half): {rate}, {self.confidence:.0%} CI {ci}: "
                 f"{pref}."]
        failed = [c for c in self.cases if c.error is not None]
        if failed:
            lines += ["", f"{len(failed)} case(s) could not be judged:", "",
                      "| case | why |", "|---|---|"]
            lines += [f"| {_cell(c.case_id)} | {_cell(c.error or '')} |" for c in failed[:50]]
        return "\n".join(lines) + "\n"


async def pairwise(a: Subject, b: Subject, cases: Iterable[Case | Mapping[str, Any]], *,
                   judge: Agent[Any], store: RunStore | str | None = None,
                   rubric: str = DEFAULT_RUBRIC, concurrency: int = 8,
                   resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                   pairwise_id: str | None = None) -> PairwiseReport:
    """Judge ``a`` against ``b`` on ``cases`` (:class:`Case` objects or their file form).

    Both subjects run on every case (a conversation case plays its user turns in one
    conversation per side and compares the last answers); ``judge`` picks 1, 2 or tie in
    both presentation orders (A first, then B first); disagreement is a tie. At most
    ``concurrency`` cases run at once. The judge runs as a copy of ``judge`` whose
    instructions end with ``rubric`` and the answer format; the request and the two answers
    are its input (so its input guards screen them, as they should: they are model output).
    A run that fails or a judge answer that cannot be read is reported on its case and the
    comparison goes on. Runs go to ``store`` (a store,
    a URL, or the default). ``resamples``, ``confidence`` and ``seed`` set the bootstrap
    interval of B's win rate (seeded: the same verdicts give the same interval)."""
    for name, subject in (("a", a), ("b", b)):
        if not callable(getattr(subject, "run", None)):
            raise EvalError(f"pairwise() compares agents or flows; {name} is a "
                            f"{type(subject).__name__}")
    if not isinstance(judge, Agent):
        raise EvalError(f"judge= must be a keel Agent (its runs are journaled and budgeted), "
                        f"not {type(judge).__name__}")
    if not isinstance(rubric, str) or not rubric.strip() or len(rubric) > 20_000:
        raise EvalError("rubric= is the judge's instructions: give 1 to 20000 characters")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or not 1 <= concurrency <= 1000:
        raise EvalError(f"concurrency={concurrency!r}: give a whole number from 1 to 1000")
    check_resampling(resamples, confidence, seed)
    if pairwise_id is not None and (not isinstance(pairwise_id, str) or not pairwise_id.strip()
                                    or len(pairwise_id) > 200 or not pairwise_id.isprintable()):
        raise EvalError("pairwise_id= names this comparison in its runs' metadata: give 1 to "
                        "200 printable characters (or leave it out for a fresh id)")
    chosen = _cases(cases)
    pid = pairwise_id or new_run_id()
    # the rubric is the judge's instructions (trusted), the answers its input (screened)
    judge = judge.clone(instructions="\n\n".join(
        p for p in (judge.instructions.strip(), rubric.strip(), _FORMAT) if p))
    sem = asyncio.Semaphore(concurrency)
    async with using_store(store) as opened:
        async def one(case: Case) -> PairwiseCase:
            async with sem:
                return await _judge_case(a, b, judge, case, opened, pid)

        results = tuple(await asyncio.gather(*(one(c) for c in chosen)))
    return _report(pid, a, b, results, resamples=resamples, confidence=confidence, seed=seed)


def _cases(cases: Iterable[Case | Mapping[str, Any]]) -> list[Case]:
    if isinstance(cases, str | bytes) or not isinstance(cases, Iterable):
        raise EvalError("cases= takes a list of Case objects (or their dict form)")
    out: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(cases):
        if len(out) >= _MAX_CASES:
            raise EvalError(f"pairwise() takes at most {_MAX_CASES:,} cases; split the set")
        case = raw if isinstance(raw, Case) else Case.from_dict(raw, source="<cases>",
                                                                 line=i + 1)
        if case.id in seen:
            raise EvalError(f"case id {case.id!r} appears twice; every case needs its own id")
        seen.add(case.id)
        out.append(case)
    if not out:
        raise EvalError("pairwise() needs at least one case")
    return out


async def _answer(subject: Subject, case: Case, store: RunStore, pid: str,
                  side: str) -> tuple[str, str]:
    """Run ``subject`` on the case; its last answer as text and the last run's id."""
    turns = case.turns
    meta = {"pairwise": pid, "case": case.id, "side": side}
    conversation = None
    if len(turns) > 1:
        digest = hashlib.blake2b(f"{pid}\x00{case.id}".encode(), digest_size=8).hexdigest()
        conversation = f"pairwise-{digest}-{side}"
    result = None
    for turn in turns:
        if conversation is None:
            result = await subject.run(turn, store=store, metadata=meta)
        else:
            result = await subject.run(turn, store=store, metadata=meta,
                                       conversation=conversation)
    assert result is not None
    return _as_text(result), result.run_id


def _as_text(result: RunResult[Any]) -> str:
    output = result.output
    if isinstance(output, str):
        return output
    if output is None:
        return result.text
    try:
        return json.dumps(output, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(output)


async def _judge_case(a: Subject, b: Subject, judge: Agent[Any], case: Case, store: RunStore,
                      pid: str) -> PairwiseCase:
    request = "\n\n".join(case.turns)
    runs: dict[str, str] = {}
    answers: dict[str, str] = {}
    problems: list[str] = []

    async def side(name: str, subject: Subject) -> None:
        try:
            answers[name], runs[name] = await _answer(subject, case, store, pid, name)
        except Exception as exc:  # reported on the case; the comparison goes on
            problems.append(f"{name.upper()} failed: {_describe(exc)}")

    await asyncio.gather(side("a", a), side("b", b))
    if problems:
        return PairwiseCase(case_id=case.id, input=case.input, output_a=answers.get("a"),
                            output_b=answers.get("b"), run_ids=runs,
                            error="; ".join(sorted(problems)))
    verdicts: dict[str, Side | None] = {}

    async def ask(order: str) -> None:
        first, second = (answers["a"], answers["b"]) if order == "ab" else \
            (answers["b"], answers["a"])
        prompt = _PROMPT.format(request=request,
                                first=first[:_MAX_ANSWER], second=second[:_MAX_ANSWER])
        try:
            result = await judge.run(prompt, store=store, metadata={
                "pairwise": pid, "case": case.id, "judge": order})
        except Exception as exc:
            problems.append(f"the judge failed ({order}): {_describe(exc)}")
            return
        runs[f"judge_{order}"] = result.run_id
        picked = parse_verdict(_as_text(result))
        if picked is None:
            problems.append(f"the judge's answer ({order}) is not 1, 2 or tie: "
                            f"{_as_text(result)[:120]!r}")
        verdicts[order] = None if picked is None else _side(picked, order)

    await asyncio.gather(ask("ab"), ask("ba"))
    ab, ba = verdicts.get("ab"), verdicts.get("ba")
    winner: Side | None = None
    if ab is not None and ba is not None:
        winner = ab if ab == ba else "tie"
    return PairwiseCase(case_id=case.id, input=case.input, output_a=answers["a"],
                        output_b=answers["b"], verdict_ab=ab, verdict_ba=ba, winner=winner,
                        run_ids=runs, error="; ".join(sorted(problems)) or None)


def parse_verdict(text: str) -> Literal["1", "2", "tie"] | None:
    """The judge's pick from its answer: ``1``, ``2`` or ``tie`` as its first word (or
    ``Response 1`` ...), or a JSON object ``{"winner": "1"|"2"|"tie"}``; None otherwise."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return None
        stripped = str(data.get("winner", "")) if isinstance(data, dict) else ""
    found = _VERDICT.match(stripped)
    if found is None:
        return None
    word = found.group(1).lower()
    return "tie" if word == "tie" else "1" if word == "1" else "2"


def _side(picked: str, order: str) -> Side:
    if picked == "tie":
        return "tie"
    first_is_a = order == "ab"
    return "a" if (picked == "1") == first_is_a else "b"


def _report(pid: str, a: Subject, b: Subject, cases: tuple[PairwiseCase, ...], *,
            resamples: int, confidence: float, seed: int) -> PairwiseReport:
    judged = [c for c in cases if c.winner is not None]
    scores = [1.0 if c.winner == "b" else 0.5 if c.winner == "tie" else 0.0 for c in judged]
    low = high = rate = None
    significant = False
    if scores:
        rate = sum(scores) / len(scores)
    if len(scores) >= 2:
        low, high = bootstrap_ci(scores, resamples=resamples, confidence=confidence, seed=seed)
        significant = low > 0.5 or high < 0.5
    return PairwiseReport(
        pairwise_id=pid, a=_name(a), b=_name(b), cases=cases, judged=len(judged),
        a_wins=sum(c.winner == "a" for c in judged), b_wins=sum(c.winner == "b" for c in judged),
        ties=sum(c.winner == "tie" for c in judged),
        disagreements=sum(c.disagreed for c in judged), errors=len(cases) - len(judged),
        win_rate_b=rate, ci_low=low, ci_high=high, significant=significant,
        confidence=float(confidence))


def _name(subject: Subject) -> str:
    return str(getattr(subject, "name", type(subject).__name__))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]
