"""HTTP facts shared by the provider adapters."""

from __future__ import annotations

import email.utils
import time
from typing import Any


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds or
    an HTTP date). ``None`` when absent or unreadable. ``headers`` is any mapping with
    ``get`` (case-insensitive ones such as the SDKs' header objects work as they are)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
