"""Small helpers the Redis-backed stores share."""

from __future__ import annotations

import math

from keel.core import safe_url

__all__ = ["ms", "safe_url"]


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds for Redis expiries, at least 1."""
    return max(1, math.ceil(seconds * 1000))
