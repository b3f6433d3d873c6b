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


def is_json(headers: Any) -> bool:
    """Whether a response's ``content-type`` says JSON (``application/json``, ``…+json``)."""
    media = str(headers.get("content-type") or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def is_transport_error(exc: BaseException) -> bool:
    """An error from the HTTP stack under the SDKs (httpx/httpx2, httpcore, h11, anyio) or
    the OS.

    The SDKs wrap transport errors raised while sending a request, but not those raised while
    a streamed body is being read, so those are recognised here by origin.
    """
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or module.startswith(("httpx", "httpcore", "h11", "anyio"))
