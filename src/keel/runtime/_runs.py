"""What agents and flows share: starting, resuming and the blocking wrappers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from keel.core import ConfigError, RunEvent, UserError
from keel.runtime._result import RunResult
from keel.runtime._runner import Launch, Runnable, blocking, launch
from keel.store import RunStore

OutputT = TypeVar("OutputT")


class Runs(Generic[OutputT]):
    """``run``/``resume`` and their blocking twins, for an :class:`Agent` or a flow (the
    subclass is a :class:`~keel.runtime._runner.Runnable`)."""

    #: How error messages name what runs.
    noun: ClassVar[str] = "agent"

    def _runnable(self) -> Runnable:
        return self  # type: ignore[return-value]  # Agent and Flow implement Runnable

    async def run(self, input: str, *, store: RunStore | str | None = None,
                  run_id: str | None = None, deps: Any = None, target: str | None = None,
                  on_event: Callable[[RunEvent], None] | None = None,
                  deadline: float | datetime | None = None) -> RunResult[OutputT]:
        """Run to completion and return the result. Failures raise a ``RunError`` carrying the
        run id; the run's journal stays in the store, so the run can be resumed. A run that
        waits for a person raises ``ApprovalRequired`` or ``Escalate`` (status
        ``suspended``). ``deadline`` (seconds from now, or a datetime) bounds the whole run,
        across restarts: it is stored with the run."""
        if not isinstance(input, str):
            raise UserError(f"{self.noun} input must be a string, got "
                            f"{type(input).__name__}")
        how = Launch(input=input, run_id=run_id, deps=deps, target=target, emit=on_event,
                     deadline_at=deadline_from(deadline))
        return await launch(self._runnable(), store, how)

    async def resume(self, run_id: str, *, store: RunStore | str | None = None,
                     deps: Any = None,
                     on_event: Callable[[RunEvent], None] | None = None) -> RunResult[OutputT]:
        """Continue a run whose process stopped: recorded steps are not executed again."""
        how = Launch(resume_id=run_id, deps=deps, emit=on_event)
        return await launch(self._runnable(), store, how)

    def run_sync(self, input: str, **kwargs: Any) -> RunResult[OutputT]:
        """Blocking wrapper around :meth:`run`; refuses to run inside an event loop."""
        return blocking("run_sync", lambda: self.run(input, **kwargs))

    def resume_sync(self, run_id: str, **kwargs: Any) -> RunResult[OutputT]:
        """Blocking wrapper around :meth:`resume`; refuses to run inside an event loop."""
        return blocking("resume_sync", lambda: self.resume(run_id, **kwargs))


def deadline_from(deadline: float | datetime | None) -> float | None:
    """A deadline as epoch seconds: ``deadline`` seconds from now, or an aware datetime."""
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise ConfigError("deadline", "use a timezone-aware datetime (or seconds from now)")
        return deadline.timestamp()
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
        raise ConfigError("deadline", f"must be seconds from now (> 0) or a datetime, not "
                          f"{deadline!r}")
    return time.time() + float(deadline)
