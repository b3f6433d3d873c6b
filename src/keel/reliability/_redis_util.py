"""Small helpers the Redis-backed stores share."""

from __future__ import annotations

import math
from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds for Redis expiries, at least 1."""
    return max(1, math.ceil(seconds * 1000))
