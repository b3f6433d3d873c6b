"""Structured logs: one JSON object per line through the standard ``logging`` module.

keel logs each journal step on the ``keel.step`` logger with the step's fields in ``extra``.
:class:`JsonFormatter` renders any record as one JSON line, secrets masked. Nothing is
configured at import time: call :func:`configure_json_logging` (the CLI does) or attach the
formatter to your own handler.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from keel.core._codec import dumps, to_jsonable
from keel.core._redact import redact

STEP_LOGGER = "keel.step"
STEP_FIELDS = (
    "run_id", "step_key", "agent", "action", "tool_name", "latency_ms", "success",
    "input_tokens", "output_tokens", "cost_usd", "replayed", "error_type",
)
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line with timestamp, level, logger, message and any
    ``extra`` fields. Secret-looking keys and values are masked."""

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
        return dumps(redact(to_jsonable(out)))


def configure_json_logging(stream: IO[str] | None = None, level: int = logging.INFO, *,
                           propagate: bool = False) -> logging.Handler:
    """Attach a JSON-lines handler to the ``keel`` logger and return it (detach it with
    ``logging.getLogger("keel").removeHandler(handler)``). Records stop propagating to the
    root logger unless ``propagate=True``, so an app with root logging set up does not log
    every step twice."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("keel")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    return handler
