"""keel.temporal's errors (drawn in the tree in ``keel.core._errors``)."""

from __future__ import annotations

from keel.core import RunError


class TemporalUnavailable(RunError):
    """The Temporal server could not be reached (at start: the address is wrong or the server
    is down; while running: it stopped answering for longer than the retry window). Nothing
    was started or decided by the failed call; trying again later may work."""

    retryable = True
