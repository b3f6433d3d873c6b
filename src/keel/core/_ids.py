"""Identifiers, hashing and the clock."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """A time-sortable unique id (ULID-like, 26 chars, lower-case Crockford base32)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def stable_hash(value: Any) -> str:
    """A short, stable hash of a JSON-able value (for journal input hashes)."""
    return hashlib.blake2b(canonical_json(value).encode(), digest_size=10).hexdigest()


def wall_clock() -> float:
    """Seconds since the epoch. Durable code uses ``ctx.now()`` instead."""
    return time.time()
