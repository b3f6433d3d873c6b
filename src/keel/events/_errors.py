"""The event layer's errors (drawn in the tree in ``keel.core._errors``)."""

from __future__ import annotations

from keel.core import RunError, UserError


class EventBusUnavailable(RunError):
    """The event bus could not be reached, or refused a write or a read, for a while: nothing
    was published by the failed call (or what was is published again, under the same ids).
    Trying again later may work (``retryable`` is true)."""

    retryable = True


class EventRejected(UserError):
    """An event cannot be accepted: its payload does not validate against the trigger's
    type, or it is not an event at all. ``event_id`` names it (when it has one)."""

    def __init__(self, message: str, *, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id
