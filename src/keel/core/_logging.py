"""Structured logs: one JSON object per line through the standard ``logging`` module.

keel logs each journal step on the ``keel.step`` logger with the step's fields in ``extra``.
:class:`JsonFormatter` renders any record as one JSON line, secrets masked. Nothing is
configured at import time: call :func:`configure_json_logging` (the CLI does) or attach the
formatter to your own handler.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from keel.core._codec import dumps, to_jsonable
from keel.core._errors import ConfigError
from keel.core._redact import redact

STEP_LOGGER = "keel.step"
STEP_FIELDS = (
    "run_id", "step_key", "agent", "action", "tool_name", "latency_ms", "success",
    "input_tokens", "output_tokens", "cost_usd", "replayed", "error_type",
)
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


#: ``scrub(fields) -> fields``: rewrites a log line's fields before they are written (the
#: security layer's personal-data policy installs one: ``keel.guard.DataPolicy.log_scrubber``).
LogScrubber = Callable[[dict[str, Any]], dict[str, Any]]


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line with timestamp, level, logger, message and any
    ``extra`` fields. Secret-looking keys and values are masked; ``scrub``, when given, then
    rewrites the fields (a scrubber that fails drops the line's content rather than leak it)."""

    def __init__(self, *args: Any, scrub: LogScrubber | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if scrub is not None and not callable(scrub):
            raise ConfigError("JsonFormatter.scrub", "must be a function of the fields")
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            out["exception"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        fields: dict[str, Any] = redact(to_jsonable(out))
        if self.scrub is not None:
            try:
                fields = self.scrub(fields)
            except Exception as exc:  # fail closed: keep the line, not its content
                fields = {k: fields[k] for k in ("timestamp", "level", "logger") if k in fields}
                fields["message"] = f"[WITHHELD: the log scrubber failed: {type(exc).__name__}]"
        return dumps(fields)


def configure_json_logging(stream: IO[str] | None = None, level: int = logging.INFO, *,
                           propagate: bool = False,
                           scrub: LogScrubber | None = None) -> logging.Handler:
    """Attach a JSON-lines handler to the ``keel`` logger and return it (detach it with
    ``logging.getLogger("keel").removeHandler(handler)``). Records stop propagating to the
    root logger unless ``propagate=True``, so an app with root logging set up does not log
    every step twice. ``scrub`` rewrites each line's fields (see :class:`JsonFormatter`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(scrub=scrub))
    logger = logging.getLogger("keel")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    return handler
