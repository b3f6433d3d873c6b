"""Static typing of workflow steps: does one step's declared output fit the next step's input?

The check is deliberately conservative in one direction only: it rejects what is certainly
wrong (``str`` into a step that takes ``int``) and lets through what it cannot decide
(type variables, unusual typing forms). ``Any`` (or a missing annotation) connects to anything.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pydantic

from keel.core import ConfigError
from keel.runtime import Budget


class ToolArgs:
    """Marker input type of a tool step without ``args=``: a mapping of arguments (a dict, a
    TypedDict, a pydantic model or a dataclass)."""


def describe(kind: Any) -> str:
    """A readable name for a type (``int``, ``list[str]``, ``Ticket | None``)."""
    if kind is Any:
        return "Any"
    if kind is ToolArgs:
        return "tool arguments (a dict or model)"
    if isinstance(kind, type) and not get_args(kind):
        return kind.__qualname__
    return str(kind).replace("typing.", "")


def _is_union(kind: Any) -> bool:
    return get_origin(kind) in (Union, types.UnionType)


def _args_like(kind: Any) -> bool:
    origin = get_origin(kind) or kind
    if isinstance(origin, type):
        return (issubclass(origin, Mapping | pydantic.BaseModel) or dataclasses.is_dataclass(origin)
                or typing.is_typeddict(origin))
    return False


def connects(out: Any, into: Any) -> bool:
    """Whether a value declared as ``out`` is accepted by a step that takes ``into``."""
    if out is Any or into is Any or into is object or out is into:
        return True
    if _is_union(out):
        return all(connects(member, into) for member in get_args(out))
    if _is_union(into):
        return any(connects(out, member) for member in get_args(into))
    if into is ToolArgs:
        return _args_like(out)
    if out is ToolArgs:
        return True
    if get_origin(out) is Literal:
        return all(connects(type(v), into) for v in get_args(out))
    if get_origin(into) is Literal:
        return False
    if into is float and out is int:  # the numeric tower, as pydantic accepts it
        return True
    out_origin, into_origin = get_origin(out) or out, get_origin(into) or into
    if not (isinstance(out_origin, type) and isinstance(into_origin, type)):
        return True  # a form we cannot decide (a TypeVar, an Annotated alias...): allow
    if typing.is_typeddict(out_origin) or typing.is_typeddict(into_origin):
        return issubclass(into_origin, dict) or typing.is_typeddict(into_origin)
    if not issubclass(out_origin, into_origin):
        return False
    out_args, into_args = get_args(out), get_args(into)
    if out_args and into_args and len(out_args) == len(into_args) and Ellipsis not in into_args:
        return all(connects(a, b) for a, b in zip(out_args, into_args, strict=True))
    return True


def union_of(kinds: list[Any]) -> Any:
    """The union of ``kinds`` (a single type when they are all the same; Any absorbs all)."""
    unique: list[Any] = []
    for kind in kinds:
        if kind is Any:
            return Any
        if kind not in unique:
            unique.append(kind)
    if len(unique) == 1:
        return unique[0]
    return Union[tuple(unique)]  # noqa: UP007 - built from a runtime list


def signature_types(fn: Callable[..., Any], what: str) -> tuple[Any, Any]:
    """(input type, output type) of a one-argument function; missing annotations are Any."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(what, f"cannot read the signature of {fn!r}: {exc}") from exc
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
              and p.default is p.empty]
    if len(params) != 1:
        raise ConfigError(what, f"{_name(fn)!r} must take exactly one required positional "
                          f"argument (the previous step's output), it takes {len(params)}")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(what, f"cannot resolve the annotations of {_name(fn)!r}: {exc}"
                          ) from exc
    return hints.get(params[0].name, Any), hints.get("return", Any)


def return_type(fn: Callable[..., Any]) -> Any:
    """The declared return type of ``fn`` (Any when missing or unresolvable)."""
    try:
        return get_type_hints(fn).get("return", Any)
    except Exception:
        return Any


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


# ------------------------------------------------------------------------ worst-case budgets


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most a workflow can spend: exact numbers, ``math.inf`` where some step declares no
    bound. :meth:`as_budget` turns it into a :class:`Budget`."""

    steps: float = 0
    tokens: float = 0
    cost_usd: float = 0.0
    wall_seconds: float = 0.0

    @classmethod
    def of(cls, budget: Budget) -> WorstCase:
        def v(x: float | None) -> float:
            return math.inf if x is None else x
        return cls(v(budget.max_steps), v(budget.max_tokens), v(budget.max_cost_usd),
                   v(budget.max_wall_seconds))

    def then(self, other: WorstCase) -> WorstCase:
        """Both, one after the other (every limit adds up)."""
        return WorstCase(self.steps + other.steps, self.tokens + other.tokens,
                         self.cost_usd + other.cost_usd, self.wall_seconds + other.wall_seconds)

    def alongside(self, other: WorstCase) -> WorstCase:
        """Both at the same time: spending adds up, wall time is the longer one."""
        return WorstCase(self.steps + other.steps, self.tokens + other.tokens,
                         self.cost_usd + other.cost_usd,
                         max(self.wall_seconds, other.wall_seconds))

    def either(self, other: WorstCase) -> WorstCase:
        """One or the other (a branch): the larger of each limit."""
        return WorstCase(max(self.steps, other.steps), max(self.tokens, other.tokens),
                         max(self.cost_usd, other.cost_usd),
                         max(self.wall_seconds, other.wall_seconds))

    def exceeds(self, budget: Budget) -> list[str]:
        """The limits of ``budget`` this worst case could cross."""
        over = []
        for field, mine in (("max_steps", self.steps), ("max_tokens", self.tokens),
                            ("max_cost_usd", self.cost_usd),
                            ("max_wall_seconds", self.wall_seconds)):
            limit = getattr(budget, field)
            if limit is not None and mine > limit:
                over.append(f"{field} {_num(mine)} > {limit}")
        return over

    def as_budget(self) -> Budget:
        """As a Budget. A limit is None when it is unbounded (some step declares no bound) or
        when no step spends it (0 tokens in a workflow of plain functions)."""
        def b(x: float, whole: bool) -> Any:
            if math.isinf(x) or x <= 0:
                return None
            return int(x) if whole else x
        return Budget(max_steps=b(self.steps, True), max_tokens=b(self.tokens, True),
                      max_cost_usd=b(self.cost_usd, False),
                      max_wall_seconds=b(self.wall_seconds, False))


def _num(x: float) -> str:
    return "unbounded" if math.isinf(x) else f"{x:g}"
