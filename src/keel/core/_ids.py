"""Identifiers, hashing and the clock."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from keel.core._codec import dumps


def new_run_id() -> str:
    """A unique id that sorts by creation time: 12 hex digits of milliseconds since the epoch,
    then 64 random bits (28 lower-case hex characters)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (any value, by
    :func:`keel.core.to_jsonable`'s rules; plain data exactly as ``json.dumps`` writes it)."""
    return dumps(value, sort_keys=True, compact=True)


def stable_hash(value: Any) -> str:
    """A short, stable hash of a JSON-able value (for journal input hashes)."""
    return hashlib.blake2b(canonical_json(value).encode(), digest_size=10).hexdigest()
