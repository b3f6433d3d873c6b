"""Failures a flow handles: a sub-run's run error, journaled so the flow's choice replays.

When a sub-agent or sub-flow of a flow fails with a :class:`RunError` (not a signal), a
``failure`` record is held for ``<prefix>/failed``: it is committed with the next record the
run writes, or with the run's final status, so it reaches the store only if the flow goes on.
If the run fails instead, the runner drops it and resuming the run tries the sub-run again.

When the record is there (a resumed or replayed run), the sub-run is not executed: its
recorded steps replay, the first step it has not recorded raises the recorded error again,
and the caller gets that error, exactly as the first time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keel.core import (
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    Divergence,
    GuardrailTripped,
    ModelError,
    OutputValidationError,
    RepeatedFailure,
    RunCancelled,
    RunError,
    StoreUnavailable,
    ToolError,
    UnknownOutcome,
)
from keel.runtime._journal import Journal

T = TypeVar("T")

#: Run errors rebuilt by name (their constructors take only the base fields).
_KINDS: dict[str, type[RunError]] = {k.__name__: k for k in (
    ModelError, OutputValidationError, RepeatedFailure, ToolError, GuardrailTripped,
    CircuitOpen, DeadlineExceeded, UnknownOutcome)}
#: Not a failure a flow goes past: the journal disagrees with the code, the run stops, or
#: the store failed (the sub-run did not fail; trying again may pass).
_NOT_HANDLED = (Divergence, RunCancelled, StoreUnavailable)


def failure_key(prefix: str) -> str:
    return f"{prefix}/failed"


async def guarded(journal: Journal, prefix: str, run: Callable[[], Awaitable[T]]) -> T:
    """Run a sub-run on ``journal`` (its own view) under ``prefix``, journaling its failure,
    or raise the failure recorded for it."""
    key = failure_key(prefix)
    entry = journal.recorded(key)
    if entry is not None:
        failure = rebuild(entry.data, journal.run_id)
        journal.failed = failure
        try:
            await run()  # replays its recorded steps; nothing runs live
        except Divergence:
            raise
        except RunError:
            pass
        raise failure
    try:
        return await run()
    except RunError as exc:
        if journal.failed is None and not isinstance(exc, _NOT_HANDLED):
            journal.hold(key, "failure", "failed", describe(exc))
        raise


def describe(exc: RunError) -> dict[str, Any]:
    """The failure record's data."""
    kind = next((c.__name__ for c in type(exc).__mro__
                 if c.__name__ in _KINDS or c is BudgetExceeded), "RunError")
    data: dict[str, Any] = {"type": type(exc).__name__, "kind": kind, "message": exc.message,
                            "step_key": exc.step_key, "retryable": bool(exc.retryable)}
    if isinstance(exc, BudgetExceeded):
        data.update(limit=exc.limit, used=exc.used, allowed=exc.allowed)
    return data


def rebuild(data: Any, run_id: str) -> RunError:
    """The recorded failure as a :class:`RunError` of the same kind (by name; a kind keel
    does not know comes back as ``RunError``)."""
    d: dict[str, Any] = data if isinstance(data, dict) else {}
    message = str(d.get("message") or "the sub-run failed")
    common: dict[str, Any] = {"run_id": run_id, "step_key": d.get("step_key"),
                              "retryable": bool(d.get("retryable", False))}
    kind = d.get("kind") or d.get("type")
    if kind == "BudgetExceeded":
        return BudgetExceeded(message, limit=str(d.get("limit") or ""),
                              used=float(d.get("used") or 0.0),
                              allowed=float(d.get("allowed") or 0.0), **common)
    return _KINDS.get(str(kind), RunError)(message, **common)
