"""keel.temporal's errors (drawn in the tree in ``keel.core._errors``)."""

from __future__ import annotations

from typing import Any

from keel.core import Divergence, RunError


class TemporalUnavailable(RunError):
    """The Temporal server could not be reached (at start: the address is wrong or the server
    is down; while running: it stopped answering for longer than the retry window). Nothing
    was started or decided by the failed call; trying again later may work."""

    retryable = True


class WorkflowDivergence(Divergence):
    """A recorded ``keel.run`` workflow history no longer replays against the workflow code
    (Temporal's nondeterminism): ``recorded`` names the workflow and the history event,
    ``requested`` what the code did instead. Deploying that code would break the runs in
    flight; keep the old code path (``workflow.patched``) or let those runs finish first."""

    def __init__(self, message: str, *, recorded: dict[str, Any],
                 requested: dict[str, Any], **kw: Any) -> None:
        super().__init__(message, recorded=recorded, requested=requested, **kw)
