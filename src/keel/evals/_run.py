"""Running an evaluation: every case is one or more ordinary runs of the subject, scored.

Each case's runs carry ``metadata={"eval": <eval id>, "case": <case id>}`` (open one with
``keel runs show RUN_ID``); a conversation case plays its user turns as consecutive runs of
one ``conversation=``. A run that stops for an approval or escalates is not waited for: it
counts as "approval requested" / "escalated" and is cancelled, so that an evaluation never
leaves tasks in the people's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core import (
    ApprovalRequired,
    Escalate,
    GuardrailTripped,
    KeelError,
    RunNotFound,
    UserError,
    new_run_id,
    to_jsonable,
)
from keel.evals._behaviour import behaviour, tool_trajectory
from keel.evals._case import Case
from keel.evals._dataset import Dataset
from keel.evals._errors import EvalError
from keel.evals._metrics import compute_metrics
from keel.evals._observed import Observed, journal_flags, tool_calls_from
from keel.evals._results import CaseResult, Report, Score
from keel.evals._scorers import Scorer, exact_match, fuzzy_match, json_schema
from keel.runtime import cancel_run, using_store
from keel.store import JournalEntry, RunRecord, RunStore

#: The error of a case not run because the evaluation's cost budget was spent.
BUDGET_SPENT = "eval budget spent"
Progress = Callable[[int, int, CaseResult], Any]


@dataclass(slots=True)
class _Spend:
    limit: float | None
    spent: float = 0.0

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


def default_scorers(dataset: Dataset) -> list[Scorer]:
    """The scorers an evaluation uses when none are given: those that apply to at least one
    case (an expected answer: exact and fuzzy match; expected tools: the trajectory;
    behaviour flags: behaviour; an output schema: JSON Schema validity)."""
    candidates = [exact_match(), fuzzy_match(), tool_trajectory(), behaviour(), json_schema()]
    return [s for s in candidates if any(s.applies(c) for c in dataset.cases)]


def check_scorers(scorers: Sequence[Scorer]) -> list[Scorer]:
    out = list(scorers)
    names: set[str] = set()
    for s in out:
        if not isinstance(s, Scorer):
            raise EvalError(f"scorers are keel.evals scorers (exact_match(), scorer(fn) ...), "
                            f"not {type(s).__name__}; wrap a function with keel.evals.scorer()")
        if s.name in names:
            raise EvalError(f"two scorers are named {s.name!r}; give one name={s.name!r}_2")
        names.add(s.name)
    if not out:
        raise EvalError("scorers=[] scores nothing; leave it out for the default scorers")
    return out


def _check_args(subject: Any, dataset: object, concurrency: object,
                max_cost_usd: object) -> None:
    if not callable(getattr(subject, "run", None)):
        raise EvalError(f"the subject of an evaluation is a keel Agent or Flow (anything with "
                        f"run(input, ...)), not {type(subject).__name__}")
    if not isinstance(dataset, Dataset):
        raise EvalError(f"evaluate() takes a keel.evals.Dataset (load_dataset(path) or "
                        f"Dataset.from_cases(...)), not {type(dataset).__name__}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or not 1 <= concurrency <= 1000:
        raise EvalError(f"concurrency is a whole number from 1 to 1000, not {concurrency!r}")
    if max_cost_usd is not None and (isinstance(max_cost_usd, bool)
                                     or not isinstance(max_cost_usd, int | float)
                                     or not max_cost_usd >= 0):
        raise EvalError(f"max_cost_usd is a number of dollars >= 0 (or None), not "
                        f"{max_cost_usd!r}")


async def evaluate(subject: Any, dataset: Dataset, *, scorers: Sequence[Scorer] | None = None,
                   store: RunStore | str | None = None, concurrency: int = 8,
                   max_cost_usd: float | None = None, progress: Progress | None = None,
                   name: str | None = None) -> Report:
    """Run ``subject`` (a keel Agent or Flow) over every case of ``dataset`` and score it.

    ``scorers``: the scorers (default: :func:`default_scorers`). ``store``: where the runs
    are journaled (a store, a URL, or the default store as for any run). ``concurrency``:
    cases run at once. ``max_cost_usd``: once the runs so far cost this much, no new case
    starts (the rest are reported with the error "eval budget spent"). ``progress``:
    ``progress(done, total, case_result)`` after each case. ``name``: the subject's name in
    the report (default: its ``name``). The report lists the cases in dataset order."""
    _check_args(subject, dataset, concurrency, max_cost_usd)
    chosen = default_scorers(dataset) if scorers is None else check_scorers(scorers)
    if progress is not None and not callable(progress):
        raise EvalError("progress is a function progress(done, total, case_result)")
    prepare = getattr(subject, "prepare", None)
    if callable(prepare):
        prepare()  # an unknown model id or a missing key fails here, not in every case
    eval_id = f"eval-{uuid.uuid4().hex[:16]}"
    started, clock = time.time(), time.perf_counter()
    async with using_store(store) as opened:
        cases = await _run_all(subject, dataset, chosen, opened, eval_id, concurrency,
                               _Spend(max_cost_usd), progress)
    scorer_info = {s.name: s.describe() for s in chosen}
    return Report(
        subject={"name": name or getattr(subject, "name", type(subject).__name__),
                 "version": getattr(subject, "version", None)},
        dataset={"name": dataset.name, "hash": dataset.hash, "cases": len(dataset.cases)},
        cases=tuple(cases), metrics=compute_metrics(cases, scorer_info),
        created_at=started, duration_s=round(time.perf_counter() - clock, 6),
        extra={"eval_id": eval_id, "scorers": scorer_info,
               "max_cost_usd": max_cost_usd})


def evaluate_sync(subject: Any, dataset: Dataset, **options: Any) -> Report:
    """Blocking wrapper around :func:`evaluate`; refuses to run inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(evaluate(subject, dataset, **options))
    raise EvalError("evaluate_sync() was called inside a running event loop; await "
                    "evaluate() there instead")


async def _run_all(subject: Any, dataset: Dataset, scorers: list[Scorer], store: RunStore,
                   eval_id: str, concurrency: int, spend: _Spend,
                   progress: Progress | None) -> list[CaseResult]:
    gate = asyncio.Semaphore(concurrency)
    total = len(dataset.cases)

    async def one(index: int, case: Case) -> tuple[int, CaseResult]:
        async with gate:
            if spend.exhausted:
                return index, _skipped(case, scorers)
            result, judged_cost = await run_case(subject, case, scorers, store, eval_id)
            spend.spent += result.cost_usd + judged_cost
            return index, result

    results: list[CaseResult | None] = [None] * total
    tasks = [asyncio.ensure_future(one(i, c)) for i, c in enumerate(dataset.cases)]
    try:
        for done, next_done in enumerate(asyncio.as_completed(tasks), start=1):
            index, result = await next_done
            results[index] = result
            if progress is not None:
                out = progress(done, total, result)
                if inspect.isawaitable(out):
                    await out
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [r for r in results if r is not None]


def _skipped(case: Case, scorers: list[Scorer]) -> CaseResult:
    scores = tuple(Score(name=s.name, value=None, passed=False, threshold=s.threshold,
                         error=BUDGET_SPENT) for s in scorers if s.applies(case))
    return CaseResult(case_id=case.id, input=_plain_input(case), output=None, status="skipped",
                      scores=scores, tags=case.tags, weight=case.weight,
                      error={"type": "EvalBudgetSpent", "message": BUDGET_SPENT})


def _plain_input(case: Case) -> Any:
    return case.input if isinstance(case.input, str) else [dict(m) for m in case.input]


@dataclass(slots=True)
class _Outcome:
    output: Any = None
    text: str = ""
    status: str = "completed"
    error: dict[str, Any] | None = None
    approval: bool = False
    escalated: bool = False
    guard: bool = False


async def _play(subject: Any, case: Case, store: RunStore, eval_id: str,
                run_ids: list[str]) -> _Outcome:
    """Run the case's turns; stop at the first that does not complete."""
    out = _Outcome()
    turns = case.turns
    conversation = f"{eval_id}-{uuid.uuid4().hex[:8]}" if len(turns) > 1 else None
    for turn in turns:
        run_id = new_run_id()
        run_ids.append(run_id)
        options: dict[str, Any] = {"store": store, "run_id": run_id,
                                   "metadata": {"eval": eval_id, "case": case.id}}
        if conversation is not None:
            options["conversation"] = conversation
        try:
            result = await subject.run(turn, **options)
        except ApprovalRequired:
            out.status, out.approval = "suspended", True
        except Escalate:
            out.status, out.escalated = "suspended", True
        except GuardrailTripped as exc:
            out.status, out.guard, out.error = "failed", True, _error(exc)
        except KeelError as exc:
            out.status, out.error = "failed", _error(exc)
        except Exception as exc:  # the subject's own bug: that case fails, the eval goes on
            out.status, out.error = "failed", _error(exc)
        else:
            out.output, out.text = result.output, result.text
            continue
        break
    return out


def _error(exc: BaseException) -> dict[str, Any]:
    message = exc.message if isinstance(exc, KeelError) else str(exc)
    return {"type": type(exc).__name__, "message": message[:2000]}


async def _records(store: RunStore, run_ids: list[str]) -> tuple[list[RunRecord],
                                                                 list[JournalEntry]]:
    records: list[RunRecord] = []
    journal: list[JournalEntry] = []
    for rid in run_ids:
        try:
            records.append(await store.get_run(rid))
        except RunNotFound:  # refused before it was written (a blocked input)
            continue
        journal.extend(await store.read_journal(rid))
    return records, journal


async def _stop_waiting(store: RunStore, records: list[RunRecord]) -> None:
    for r in records:
        if r.status == "suspended":
            with contextlib.suppress(UserError):  # decided or finished meanwhile
                await cancel_run(r.run_id, store=store, by="keel-eval",
                                 reason="evaluation: stopped at an approval or escalation")


async def run_case(subject: Any, case: Case, scorers: Sequence[Scorer], store: RunStore,
                   eval_id: str) -> tuple[CaseResult, float]:
    """Run one case and score it; returns the result and what the scorers' own runs (an
    LLM judge) cost."""
    run_ids: list[str] = []
    clock = time.perf_counter()
    outcome = await _play(subject, case, store, eval_id, run_ids)
    latency = time.perf_counter() - clock
    records, journal = await _records(store, run_ids)
    approval, escalated = journal_flags(journal)
    await _stop_waiting(store, records)
    observed = Observed(
        output=outcome.output, text=outcome.text, status=outcome.status, error=outcome.error,
        tool_calls=tool_calls_from(journal),
        approval_requested=outcome.approval or approval,
        escalated=outcome.escalated or escalated, guard_tripped=outcome.guard,
        cost_usd=round(sum(float(r.usage.get("cost_usd") or 0.0) for r in records), 10),
        latency_s=latency, steps=sum(int(r.usage.get("steps") or 0) for r in records),
        run_ids=tuple(run_ids), runs=tuple(records), journal=tuple(journal), store=store,
        eval_id=eval_id)
    scores = [await _score(s, case, observed) for s in scorers if s.applies(case)]
    judged = await _records(store, observed.extra_run_ids)
    judged_cost = sum(float(r.usage.get("cost_usd") or 0.0) for r in judged[0])
    return CaseResult(
        case_id=case.id, input=_plain_input(case), output=to_jsonable(outcome.output),
        status=outcome.status, scores=tuple(scores),
        run_ids=tuple(run_ids) + tuple(observed.extra_run_ids),
        tool_calls=observed.tool_calls, cost_usd=observed.cost_usd,
        latency_s=round(latency, 6), steps=observed.steps, tags=case.tags,
        weight=case.weight, error=_case_error(case, observed)), judged_cost


def _case_error(case: Case, observed: Observed) -> dict[str, Any] | None:
    """The run's failure, unless the case expected exactly that (a refusal by a guard)."""
    if observed.error is None or (observed.guard_tripped and case.expect.refuse):
        return None
    return observed.error


async def _score(s: Scorer, case: Case, observed: Observed) -> Score:
    try:
        score = await s.score(case, observed)
    except Exception as exc:  # a scorer that raises fails this case's score, not the eval
        message = exc.message if isinstance(exc, KeelError) else str(exc)
        return Score(name=s.name, value=None, passed=False, threshold=s.threshold,
                     error=f"{type(exc).__name__}: {message[:500]}")
    if not isinstance(score, Score):
        return Score(name=s.name, value=None, passed=False, threshold=s.threshold,
                     error=f"the scorer returned {type(score).__name__}, not a Score")
    return score
