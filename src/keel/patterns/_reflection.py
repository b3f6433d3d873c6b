"""Reflection: a generator drafts, checkable criteria and an optional model judge critique,
the generator revises; the best version wins.

Each round ``n`` runs under ``<flow>/round:<n>``: the generator (``generate``), the judge if
there is one (``judge``), and one journaled ``critique`` step (kind ``critique``) holding every
check's verdict. A resumed run replays finished rounds from the journal (no generator or judge
request is made again); a replay reproduces the run exactly.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar, Unpack

import jsonschema
import pydantic
from pydantic import BaseModel, Field

from keel.context import History
from keel.core import ConfigError, KeelError, Message, to_jsonable
from keel.patterns._context import check_context, judge_context, with_context
from keel.patterns._workflow import call_user
from keel.runtime import Agent, Flow, FlowContext, FlowOptions

T = TypeVar("T")
Stop = Literal["passed", "no_improvement", "max_rounds"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One verdict on a candidate: ``score`` in [0, 1] (1 or 0 for a deterministic check,
    the judge's score for a rubric item); ``message`` says what to fix when it failed."""

    name: str
    passed: bool
    score: float
    message: str = ""


class Criterion(ABC):
    """A deterministic check of a candidate (see :class:`Predicate`, :class:`JsonSchema`,
    :class:`Tests`)."""

    name: str

    @abstractmethod
    async def evaluate(self, candidate: Any) -> list[Check]:
        """Verdicts on ``candidate``; a check that raises is a failed check, not an error."""


def _verdict(name: str, ok: bool, message: str) -> Check:
    return Check(name=name, passed=ok, score=1.0 if ok else 0.0, message="" if ok else message)


async def _run_check(name: str, fn: Callable[[Any], Any], candidate: Any,
                     message: str, *, none_passes: bool = False) -> Check:
    try:
        ok = await call_user(fn, candidate)
    except KeelError:
        raise
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        return _verdict(name, False, f"{type(exc).__name__}: {detail}")
    return _verdict(name, (ok is None and none_passes) or bool(ok), message)


class Predicate(Criterion):
    """A Python check: ``fn(candidate)`` true passes. A predicate that raises fails with the
    error's text; ``message`` is the feedback the generator gets when it fails."""

    def __init__(self, name: str, fn: Callable[[Any], Any], message: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("Predicate.name", "name the check (it is shown in the critique)")
        if not callable(fn):
            raise ConfigError(f"Predicate {name!r}", "fn must be a function of the candidate")
        self.name = name
        self.fn = fn
        self.message = message or f"{name} is not satisfied"

    async def evaluate(self, candidate: Any) -> list[Check]:
        return [await _run_check(self.name, self.fn, candidate, self.message)]


class JsonSchema(Criterion):
    """The candidate must validate against a JSON Schema (a string candidate is parsed as
    JSON first; a typed candidate is checked in its JSON form). Every violation is reported."""

    def __init__(self, schema: dict[str, Any], *, name: str = "json_schema") -> None:
        if not isinstance(schema, dict):
            raise ConfigError("JsonSchema.schema", "expected a JSON Schema dict")
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError("JsonSchema.schema", f"not a valid JSON Schema: {exc.message}"
                              ) from exc
        self.name = name
        self.validator = cls(schema)

    async def evaluate(self, candidate: Any) -> list[Check]:
        if isinstance(candidate, str):
            try:
                data = json.loads(candidate)
            except ValueError as exc:
                return [_verdict(self.name, False, f"the answer is not valid JSON: {exc}")]
        else:
            data = to_jsonable(candidate)
        errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                    for e in errors]
        return [_verdict(self.name, not problems, "; ".join(problems))]


class Tests(Criterion):
    """Test functions run against the candidate, each its own check (named
    ``<name>.<function>``): a test passes unless it raises (an ``assert`` with a message makes
    good feedback) or returns False."""

    __test__ = False  # not a pytest test class, though its name says Tests

    def __init__(self, *tests: Callable[[Any], Any] | Iterable[Callable[[Any], Any]],
                 name: str = "tests") -> None:
        flat: list[Callable[[Any], Any]] = []
        for item in tests:
            flat.extend([item] if callable(item) else list(item))
        if not flat or not all(callable(t) for t in flat):
            raise ConfigError("Tests", "give one or more test functions of the candidate")
        self.name = name
        self.tests = tuple(flat)

    async def evaluate(self, candidate: Any) -> list[Check]:
        return [await _run_check(f"{self.name}.{getattr(t, '__name__', 'test')}", t, candidate,
                                 "the test returned False", none_passes=True)
                for t in self.tests]


@dataclass(frozen=True, slots=True, init=False)
class Rubric:
    """Items a model judge (the ``critic``) scores, e.g. ``Rubric("cites a source",
    "under 100 words")``."""

    items: tuple[str, ...]

    def __init__(self, *items: str) -> None:
        if not items or not all(isinstance(i, str) and i.strip() for i in items):
            raise ConfigError("Rubric", "give one or more non-empty rubric items")
        if len(set(items)) != len(items):
            raise ConfigError("Rubric", "rubric items must be distinct")
        object.__setattr__(self, "items", tuple(items))


class RubricScore(BaseModel):
    """The judge's verdict on one rubric item."""

    item: str
    passed: bool
    score: float = Field(ge=0.0, le=1.0, description="0 = not at all, 1 = fully")
    feedback: str = ""


class Judgement(BaseModel):
    """The critic's structured output: a score per rubric item and overall feedback."""

    scores: list[RubricScore]
    feedback: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Round:
    """One round: the candidate and its critique."""

    index: int
    candidate: Any
    score: float
    passed: bool
    checks: tuple[Check, ...]
    feedback: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReflectionResult(Generic[T]):
    """The best candidate (highest score, earliest on a tie), its score, whether it passed
    every criterion, why the loop stopped, and every round's candidate and critique."""

    best: T
    score: float
    passed: bool
    best_round: int
    rounds: int
    stopped: Stop
    history: tuple[Round, ...]


class Reflection(Flow[ReflectionResult[Any]]):
    """Generate, critique, revise (kind ``reflection``).

    ``generator`` drafts an answer to the input (its ``output_type`` is the candidate's type);
    ``criteria`` are checks (:class:`Predicate`, :class:`JsonSchema`, :class:`Tests`) and at
    most one :class:`Rubric` that ``critic`` (an Agent with ``output_type=Judgement``, the
    same model or another) scores. A round's score is the mean of its checks' scores. The
    loop stops when every check passes, when a round scores no better than the best so far
    (no improvement), or after ``max_rounds``; it returns the best version, not the last.
    The generator and the critic each run with their own budget, capped by what is left of
    the reflection's. ``context``: the :class:`~keel.context.History` both read their
    conversation through (the generator its earlier rounds; default
    :func:`~keel.patterns.judge_context`: the task and the last rounds, within the window).
    """

    kind = "reflection"

    def __init__(self, name: str, *, generator: Agent[Any],
                 criteria: Sequence[Criterion | Rubric] = (), critic: Agent[Any] | None = None,
                 max_rounds: int = 3, context: History | None = None,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        if not isinstance(generator, Agent):
            raise ConfigError("generator", f"expected an Agent, got {type(generator).__name__}")
        checked = check_context(context)
        self.context = judge_context() if checked is None else checked
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ConfigError("max_rounds", f"must be a whole number >= 1, got {max_rounds!r}")
        checks: list[Criterion] = []
        rubrics: list[Rubric] = []
        for item in criteria:
            if isinstance(item, Rubric):
                rubrics.append(item)
            elif isinstance(item, Criterion):
                checks.append(item)
            else:
                raise ConfigError("criteria", (
                    f"{item!r} is not a criterion; use Predicate, JsonSchema, Tests or Rubric"))
        if len(rubrics) > 1:
            raise ConfigError("criteria", "give at most one Rubric (put every item in it)")
        if critic is not None and (not isinstance(critic, Agent)
                                   or critic.output_type is not Judgement):
            raise ConfigError("critic", "expected an Agent with output_type=Judgement")
        if rubrics and critic is None:
            raise ConfigError("critic", "a Rubric needs a critic (a model judge) to score it")
        if not checks and critic is None:
            raise ConfigError("criteria", "give at least one criterion or a critic; without "
                              "them nothing can tell a better version from a worse one")
        self.generator = with_context(generator, self.context)
        self.critic = None if critic is None else with_context(critic, self.context)
        self.criteria = tuple(checks)
        self.rubric = rubrics[0] if rubrics else (Rubric("overall quality") if critic else None)
        self.max_rounds = max_rounds
        self._candidate: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
            generator.output_type or str)

    def agents(self) -> list[Agent[Any]]:
        return [self.generator] + ([self.critic] if self.critic else [])

    async def body(self, ctx: FlowContext, input: str) -> ReflectionResult[Any]:
        history: list[Round] = []
        conversation: list[Message] = []
        best: Round | None = None
        stopped: Stop = "max_rounds"
        prompt = input
        for n in range(self.max_rounds):
            scope = ctx.scope(f"round:{n}")
            generated = await scope.run_agent(self.generator, prompt, name="generate",
                                              history=conversation)
            candidate = generated.output
            current = await self._critique(scope, n, input, candidate)
            history.append(current)
            conversation += [Message.user(prompt), Message.assistant(self._text(candidate))]
            if best is not None and current.score <= best.score:
                stopped = "no_improvement"
                break
            best = current
            if current.passed:
                stopped = "passed"
                break
            prompt = revision_prompt(current)
        assert best is not None
        return ReflectionResult(best=best.candidate, score=best.score, passed=best.passed,
                                best_round=best.index, rounds=len(history), stopped=stopped,
                                history=tuple(history))

    def _text(self, candidate: Any) -> str:
        if isinstance(candidate, str):
            return candidate
        return self._candidate.dump_json(candidate).decode()

    async def _critique(self, scope: FlowContext, n: int, task: str, candidate: Any) -> Round:
        judged: Judgement | None = None
        if self.critic is not None and self.rubric is not None:
            verdict = await scope.run_agent(self.critic, judge_prompt(
                task, self._text(candidate), self.rubric), name="judge")
            judged = verdict.output

        async def evaluate() -> dict[str, Any]:
            checks = [c for criterion in self.criteria for c in await criterion.evaluate(
                candidate)]
            if judged is not None and self.rubric is not None:
                checks += rubric_checks(self.rubric, judged)
            score = sum(c.score for c in checks) / len(checks)
            return {"checks": [asdict(c) for c in checks], "score": round(score, 6),
                    "passed": all(c.passed for c in checks),
                    "feedback": judged.feedback if judged else ""}

        data = await scope.step("critique", evaluate, kind="critique",
                                input=self._candidate.dump_python(candidate, mode="json"))
        return Round(index=n, candidate=candidate, score=float(data["score"]),
                     passed=bool(data["passed"]), feedback=str(data["feedback"]),
                     checks=tuple(Check(**c) for c in data["checks"]))


def rubric_checks(rubric: Rubric, judged: Judgement) -> list[Check]:
    """One check per rubric item from the judge's scores (an item it skipped fails)."""
    by_item = {s.item.strip().lower(): s for s in judged.scores}
    checks = []
    for item in rubric.items:
        got = by_item.get(item.strip().lower())
        if got is None:
            checks.append(Check(name=f"rubric.{item}", passed=False, score=0.0,
                                message="the judge did not score this item"))
        else:
            checks.append(Check(name=f"rubric.{item}", passed=got.passed, score=got.score,
                                message="" if got.passed else got.feedback or "not met"))
    return checks


def judge_prompt(task: str, candidate: str, rubric: Rubric) -> str:
    items = "\n".join(f"- {item}" for item in rubric.items)
    return (f"You review an answer to a task. Score it on each rubric item: passed (true or "
            f"false), a score from 0 to 1, and feedback saying what to fix. Use the item text "
            f"exactly as given.\n\nTask:\n{task}\n\nAnswer:\n{candidate}\n\nRubric:\n{items}")


def revision_prompt(last: Round) -> str:
    failed = "\n".join(f"- {c.name}: {c.message}" for c in last.checks if not c.passed)
    extra = f"\nReviewer's feedback: {last.feedback}" if last.feedback else ""
    return (f"Your answer did not pass review (score {last.score:.2f}). Fix these problems "
            f"and give the complete revised answer:\n{failed}{extra}")
