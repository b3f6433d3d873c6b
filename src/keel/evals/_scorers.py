"""Scorers: each turns one case and what its runs did (:class:`Observed`) into a
:class:`~keel.evals.Score` with a pass threshold.

Quality scorers measure from 0 to 1 (higher is better; ``passed`` is ``value >= threshold``,
threshold 0 to 1). Measure scorers (:func:`cost`, :func:`latency`, :func:`steps`) report
dollars, seconds or steps (lower is better; ``passed`` is ``value <= threshold``, threshold
0 or more). A scorer that does not apply to a case (``exact_match`` on a case without an
expected answer) gives no score for it.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import math
import re
import string
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema
import pydantic

from keel.evals._case import Case
from keel.evals._errors import EvalError
from keel.evals._observed import Observed, plain
from keel.evals._results import Score

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class Scorer:
    """The base of every scorer: ``name`` (the metric it reports, unique in an
    evaluation), ``threshold`` (its pass mark) and ``higher_is_better``. Subclasses
    implement :meth:`score` (async) and may narrow :meth:`applies`."""

    higher_is_better: bool = True

    def __init__(self, name: str, threshold: float) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise EvalError(f"a scorer name is 1 to 64 letters, digits, '_' or '-' starting "
                            f"with a letter, not {name!r}")
        self.name = name
        self.threshold = check_threshold(name, threshold, quality=self.higher_is_better)

    def applies(self, case: Case) -> bool:
        """Whether this scorer has something to say about ``case`` (default: always)."""
        return True

    async def score(self, case: Case, observed: Observed) -> Score:
        """The score of ``case`` given what its runs did."""
        raise NotImplementedError

    def verdict(self, value: float, detail: str | None = None) -> Score:
        """A :class:`Score` of ``value`` against this scorer's threshold."""
        if self.higher_is_better:
            passed = value >= self.threshold - 1e-12
        else:
            passed = value <= self.threshold + 1e-12
        return Score(name=self.name, value=value, passed=passed, threshold=self.threshold,
                     detail=detail)

    def describe(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "higher_is_better": self.higher_is_better}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} threshold={self.threshold:g}>"


def check_threshold(name: str, threshold: object, *, quality: bool) -> float:
    """``threshold`` as a float, or :class:`EvalError` naming the scorer and the range."""
    ok = (not isinstance(threshold, bool) and isinstance(threshold, int | float)
          and math.isfinite(threshold))
    if quality and not (ok and 0.0 <= float(threshold) <= 1.0):  # type: ignore[arg-type]
        raise EvalError(f"scorer {name!r}: threshold must be a number from 0 to 1, not "
                        f"{threshold!r}")
    if not quality and not (ok and float(threshold) >= 0.0):  # type: ignore[arg-type]
        raise EvalError(f"scorer {name!r}: threshold must be a number >= 0, not {threshold!r}")
    return float(threshold)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- text comparisons


def normalize(text: str, *, case_sensitive: bool = False, collapse_whitespace: bool = True,
              strip_punctuation: bool = False) -> str:
    """``text`` with Unicode normalised (NFKC), trimmed, and optionally lower-cased,
    whitespace runs collapsed and punctuation removed."""
    out = unicodedata.normalize("NFKC", text).strip()
    if not case_sensitive:
        out = out.casefold()
    if strip_punctuation:
        out = out.translate(str.maketrans("", "", string.punctuation))
    if collapse_whitespace:
        out = " ".join(out.split())
    return out


def expected_text(case: Case) -> str:
    exp = case.expected
    return exp if isinstance(exp, str) else json.dumps(exp, sort_keys=True, ensure_ascii=False)


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return plain(value)


class ExactMatch(Scorer):
    """1 when the output equals ``case.expected`` after normalisation, else 0. An expected
    value that is not text (a JSON object, a number) is compared as JSON data."""

    def __init__(self, name: str = "exact_match", threshold: float = 1.0, *,
                 case_sensitive: bool = False, collapse_whitespace: bool = True,
                 strip_punctuation: bool = False) -> None:
        super().__init__(name, threshold)
        self.options = {"case_sensitive": case_sensitive,
                        "collapse_whitespace": collapse_whitespace,
                        "strip_punctuation": strip_punctuation}

    def applies(self, case: Case) -> bool:
        return case.expected is not None

    async def score(self, case: Case, observed: Observed) -> Score:
        if not isinstance(case.expected, str):
            same = _as_json(observed.output) == plain(case.expected)
            return self.verdict(1.0 if same else 0.0, None if same else "JSON differs")
        got = normalize(observed.output_text, **self.options)
        same = got == normalize(case.expected, **self.options)
        return self.verdict(1.0 if same else 0.0,
                            None if same else f"got {observed.output_text[:200]!r}")


class FuzzyMatch(ExactMatch):
    """The similarity (difflib's ratio, 0 to 1) of the normalised output and expected text."""

    def __init__(self, name: str = "fuzzy_match", threshold: float = 0.8, *,
                 case_sensitive: bool = False, collapse_whitespace: bool = True,
                 strip_punctuation: bool = False) -> None:
        super().__init__(name, threshold, case_sensitive=case_sensitive,
                         collapse_whitespace=collapse_whitespace,
                         strip_punctuation=strip_punctuation)

    def applies(self, case: Case) -> bool:
        return isinstance(case.expected, str)

    async def score(self, case: Case, observed: Observed) -> Score:
        got = normalize(observed.output_text, **self.options)
        want = normalize(expected_text(case), **self.options)
        ratio = difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()
        return self.verdict(round(ratio, 6))


class Contains(Scorer):
    """The fraction of ``texts`` found in the output (all of them: 1). Without ``texts``,
    whether the output contains ``case.expected``."""

    def __init__(self, *texts: str, name: str = "contains", threshold: float = 1.0,
                 case_sensitive: bool = False) -> None:
        super().__init__(name, threshold)
        if not all(isinstance(t, str) and t for t in texts):
            raise EvalError(f"scorer {name!r}: contains() takes non-empty texts")
        self.texts = texts
        self.case_sensitive = case_sensitive

    def applies(self, case: Case) -> bool:
        return bool(self.texts) or isinstance(case.expected, str)

    async def score(self, case: Case, observed: Observed) -> Score:
        wanted = self.texts or (expected_text(case),)
        fold: Callable[[str], str] = (lambda s: s) if self.case_sensitive else str.casefold
        got = fold(observed.output_text)
        missing = [t for t in wanted if fold(t) not in got]
        value = (len(wanted) - len(missing)) / len(wanted)
        return self.verdict(value, f"missing {missing}" if missing else None)


class Regex(Scorer):
    """1 when ``pattern`` matches the output (``search``; ``fullmatch=True`` for the whole
    output), else 0."""

    def __init__(self, pattern: str, *, name: str = "regex", threshold: float = 1.0,
                 flags: int = 0, fullmatch: bool = False) -> None:
        super().__init__(name, threshold)
        if not isinstance(pattern, str):
            raise EvalError(f"scorer {name!r}: the pattern is text, not {type(pattern).__name__}")
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise EvalError(f"scorer {name!r}: {pattern!r} is not a valid regular expression "
                            f"({exc})") from None
        self.fullmatch = fullmatch

    async def score(self, case: Case, observed: Observed) -> Score:
        text = observed.output_text
        hit = self.pattern.fullmatch(text) if self.fullmatch else self.pattern.search(text)
        return self.verdict(1.0 if hit else 0.0, None if hit else "no match")


class JsonSchema(Scorer):
    """1 when the output (JSON data, or text holding JSON) is valid against ``schema``, or
    against the case's ``expect.output_schema`` when no schema is given."""

    def __init__(self, schema: dict[str, Any] | None = None, *, name: str = "json_schema",
                 threshold: float = 1.0) -> None:
        super().__init__(name, threshold)
        if schema is not None:
            _check_schema(name, schema)
        self.schema = schema

    def applies(self, case: Case) -> bool:
        return self.schema is not None or case.expect.output_schema is not None

    async def score(self, case: Case, observed: Observed) -> Score:
        schema = self.schema if self.schema is not None else case.expect.output_schema
        assert schema is not None  # applies() said so
        _check_schema(self.name, schema)
        value = _as_json(observed.output)
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is None:
            return self.verdict(1.0)
        return self.verdict(0.0, f"{error.message[:300]} (at /{'/'.join(map(str, error.path))})")


def _check_schema(name: str, schema: object) -> None:
    if not isinstance(schema, dict):
        raise EvalError(f"scorer {name!r}: a JSON Schema is an object, not "
                        f"{type(schema).__name__}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise EvalError(f"scorer {name!r}: not a valid JSON Schema ({exc.message})") from None


class TypedOutput(Scorer):
    """1 when the output validates as ``model`` (a pydantic model or any type pydantic
    can validate), else 0 with the first validation error."""

    def __init__(self, model: Any, *, name: str = "typed_output", threshold: float = 1.0) -> None:
        super().__init__(name, threshold)
        try:
            self.adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(model)
        except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
            raise EvalError(f"scorer {name!r}: pydantic cannot validate {model!r} ({exc})") \
                from None

    async def score(self, case: Case, observed: Observed) -> Score:
        try:
            self.adapter.validate_python(_as_json(observed.output))
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first.get("loc", ()))) or "output"
            return self.verdict(0.0, f"{where}: {first.get('msg')}")
        return self.verdict(1.0)


# ---------------------------------------------------------------------------------- measures


class _Measure(Scorer):
    higher_is_better = False
    field = ""

    async def score(self, case: Case, observed: Observed) -> Score:
        value = float(getattr(observed, self.field))
        return self.verdict(value, None)


class Cost(_Measure):
    """The case's cost in USD (all its runs); passes at or under ``max_usd``."""

    field = "cost_usd"

    def __init__(self, max_usd: float, *, name: str = "cost") -> None:
        super().__init__(name, max_usd)


class Latency(_Measure):
    """The case's wall-clock seconds (all its runs); passes at or under ``max_s``. Wall
    time differs between two runs: this scorer's values are not reproducible."""

    field = "latency_s"

    def __init__(self, max_s: float, *, name: str = "latency") -> None:
        super().__init__(name, max_s)


class Steps(_Measure):
    """The case's steps (model requests and tool calls, all its runs); passes at or under
    ``max_steps``."""

    field = "steps"

    def __init__(self, max_steps: float, *, name: str = "step_count") -> None:
        super().__init__(name, max_steps)


# ------------------------------------------------------------------------- user functions

ScoreFn = Callable[[Case, Observed], "float | bool | Score | Awaitable[float | bool | Score]"]


class FunctionScorer(Scorer):
    """A scorer made from ``fn(case, observed)`` (sync, run in a worker thread, or async)
    returning a number (0 to 1), a bool, or a :class:`Score`."""

    def __init__(self, fn: ScoreFn, *, name: str | None = None, threshold: float = 0.5) -> None:
        if not callable(fn):
            raise EvalError(f"scorer() takes a function fn(case, observed), not "
                            f"{type(fn).__name__}")
        super().__init__(name or str(getattr(fn, "__name__", "score")), threshold)
        self.fn = fn

    async def score(self, case: Case, observed: Observed) -> Score:
        if inspect.iscoroutinefunction(self.fn):
            out = await self.fn(case, observed)
        else:
            out = await asyncio.to_thread(self.fn, case, observed)
            if inspect.isawaitable(out):
                out = await out
        if isinstance(out, Score):
            return Score(name=self.name, value=out.value, passed=out.passed,
                         threshold=out.threshold, detail=out.detail, error=out.error)
        if isinstance(out, bool):
            return self.verdict(1.0 if out else 0.0)
        if isinstance(out, int | float) and math.isfinite(out):
            return self.verdict(float(out))
        raise EvalError(f"scorer {self.name!r} returned {type(out).__name__} {out!r:.80}; "
                        "return a number from 0 to 1, a bool or a keel.evals.Score")


def scorer(fn: ScoreFn | None = None, *, name: str | None = None,
           threshold: float = 0.5) -> Any:
    """Make a scorer from a function ``fn(case, observed)`` (sync or async) returning a
    number from 0 to 1, a bool or a :class:`Score`. Use as ``scorer(fn)`` or as a
    decorator, ``@scorer(threshold=0.8)``."""
    if fn is None:
        return lambda f: FunctionScorer(f, name=name, threshold=threshold)
    return FunctionScorer(fn, name=name, threshold=threshold)


def exact_match(*, name: str = "exact_match", threshold: float = 1.0,
                case_sensitive: bool = False, collapse_whitespace: bool = True,
                strip_punctuation: bool = False) -> Scorer:
    """Output equals ``expected`` (normalised: case-folded, whitespace collapsed unless
    told otherwise); JSON expected values are compared as data."""
    return ExactMatch(name, threshold, case_sensitive=case_sensitive,
                      collapse_whitespace=collapse_whitespace,
                      strip_punctuation=strip_punctuation)


def fuzzy_match(*, name: str = "fuzzy_match", threshold: float = 0.8,
                case_sensitive: bool = False, strip_punctuation: bool = False) -> Scorer:
    """difflib similarity (0 to 1) of the normalised output and ``expected``."""
    return FuzzyMatch(name, threshold, case_sensitive=case_sensitive,
                      strip_punctuation=strip_punctuation)


def contains(*texts: str, name: str = "contains", threshold: float = 1.0,
             case_sensitive: bool = False) -> Scorer:
    """Fraction of ``texts`` (default: the expected answer) found in the output."""
    return Contains(*texts, name=name, threshold=threshold, case_sensitive=case_sensitive)


def regex(pattern: str, *, name: str = "regex", threshold: float = 1.0, flags: int = 0,
          fullmatch: bool = False) -> Scorer:
    """1 when ``pattern`` matches the output."""
    return Regex(pattern, name=name, threshold=threshold, flags=flags, fullmatch=fullmatch)


def json_schema(schema: dict[str, Any] | None = None, *, name: str = "json_schema",
                threshold: float = 1.0) -> Scorer:
    """1 when the output is valid against ``schema`` (default: the case's
    ``expect.output_schema``)."""
    return JsonSchema(schema, name=name, threshold=threshold)


def typed_output(model: Any, *, name: str = "typed_output", threshold: float = 1.0) -> Scorer:
    """1 when the output validates as ``model`` (pydantic)."""
    return TypedOutput(model, name=name, threshold=threshold)


def cost(max_usd: float, *, name: str = "cost") -> Scorer:
    """The case's cost in USD; passes at or under ``max_usd``."""
    return Cost(max_usd, name=name)


def latency(max_s: float, *, name: str = "latency") -> Scorer:
    """The case's wall-clock seconds; passes at or under ``max_s``."""
    return Latency(max_s, name=name)


def steps(max_steps: float, *, name: str = "step_count") -> Scorer:
    """The case's step count; passes at or under ``max_steps`` (named ``step_count``: the
    report's ``steps`` metric is the plain mean)."""
    return Steps(max_steps, name=name)
