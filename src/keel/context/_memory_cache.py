"""The in-process cache of users' vectors that the SQL memory backends keep, so a search of
a user with many memories does not read every vector again.

An entry is one user's rows as arrays, with the *version* of the data it was read at; a
backend only uses an entry whose version is still current (SQLite: the file's
``PRAGMA data_version``; Postgres: the user's row in ``keel_memory_users``, bumped by a
trigger on every write) and drops the entries of users it writes to itself. The cache holds
at most ``max_bytes`` of vectors, least recently used first out; a user bigger than that is
read every time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.context._memory_base import Candidates

if TYPE_CHECKING:
    from keel.context._memory_base import Floats, Vectors


@dataclass(frozen=True, slots=True, kw_only=True)
class UserVectors:
    """One user's items as arrays (``expires`` is NaN where an item has no expiry)."""

    ids: list[str]
    matrix: Vectors
    updated: Floats
    importance: Floats
    expires: Floats
    kinds: Any

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]], matrix: Vectors) -> UserVectors:
        """From rows ``(id, updated_at, importance, expires_at, kind, ...)`` and their
        vectors, one row each."""
        import numpy as np

        n = len(rows)
        return cls(ids=[r[0] for r in rows], matrix=matrix,
                   updated=np.fromiter((r[1] for r in rows), np.float64, n),
                   importance=np.fromiter((r[2] for r in rows), np.float64, n),
                   expires=np.fromiter((np.nan if r[3] is None else r[3] for r in rows),
                                       np.float64, n),
                   kinds=np.array([r[4] for r in rows], dtype=str))

    def candidates(self, query: Vectors, now: float,
                   kinds: tuple[str, ...] | None) -> Candidates:
        """The live items (of ``kinds``) at ``now`` with their cosine to ``query``."""
        import numpy as np

        sims = (self.matrix @ query).astype(np.float64)
        live = np.isnan(self.expires) | (self.expires > now)
        if kinds is not None:
            live &= np.isin(self.kinds, kinds)
        if live.all():
            return Candidates(ids=self.ids, sims=sims, updated=self.updated,
                              importance=self.importance)
        rows = np.flatnonzero(live)
        return Candidates(ids=[self.ids[i] for i in rows], sims=sims[rows],
                          updated=self.updated[rows], importance=self.importance[rows])


class VectorCache:
    """Users' vectors by key, each with the version it was read at."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[object, UserVectors]] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, version: object) -> UserVectors | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, version: object, block: UserVectors) -> None:
        self.drop(key)
        if block.matrix.nbytes > self.max_bytes:
            return
        self._entries[key] = (version, block)
        self.bytes += block.matrix.nbytes
        while self.bytes > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self.bytes -= old.matrix.nbytes

    def drop(self, key: Hashable | None = None) -> None:
        """Forget ``key`` (None: everything)."""
        if key is None:
            self._entries.clear()
            self.bytes = 0
            return
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1].matrix.nbytes


__all__ = ["UserVectors", "VectorCache"]
