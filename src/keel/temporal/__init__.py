"""L4: running keel agents and flows as Temporal workflows."""

from keel.temporal._errors import TemporalUnavailable

TemporalUnavailable.__module__ = __name__

__all__ = ["TemporalUnavailable"]
