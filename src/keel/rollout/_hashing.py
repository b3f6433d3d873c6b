"""Consistent hashing of a sticky key (a user, a tenant) into buckets.

A key's bucket depends only on the salt (the rollout's or flag's name) and the key, so every
worker puts a user in the same bucket, in every process, for ever. A share of ``p`` percent
is the buckets ``0 .. p * 100 - 1``: shares are cumulative, so a user in the 1% is still in
at 10%, 50% and 100% (raising the share never moves anyone back).
"""

from __future__ import annotations

import hashlib
import math

#: Buckets a key hashes into (a share is resolved to 0.01 percentage points).
BUCKETS = 10_000


def bucket(salt: str, key: str) -> int:
    """The bucket (0 to ``BUCKETS - 1``) of ``key`` under ``salt``."""
    raw = f"{salt}\x1f{key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % BUCKETS


def share_buckets(percent: float) -> int:
    """How many buckets ``percent`` (0 to 100) covers."""
    return min(BUCKETS, max(0, math.floor(percent * BUCKETS / 100 + 1e-9)))


def in_share(salt: str, key: str, percent: float) -> bool:
    """Whether ``key`` falls in the first ``percent`` of buckets under ``salt``."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    return bucket(salt, key) < share_buckets(percent)
