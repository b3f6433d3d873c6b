"""The in-memory memory backend: for tests and short-lived processes (nothing persists)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from keel.context._memory_base import (
    MAX_TEXT_CHARS,
    Candidates,
    Clock,
    MemoryBackend,
    MemoryItem,
    Ranking,
    check_tenant,
)
from keel.models import Embedder

if TYPE_CHECKING:
    from keel.context._memory_base import Vectors

_Key = tuple[str, str]


class InMemoryMemory(MemoryBackend):
    """Memories in a dict keyed by (tenant, user): the same behaviour as the SQL backends,
    kept in this process only. The embedder's name and width are kept as a SQL backend
    would keep them (``stored``), so the re-embed path can be exercised too."""

    def __init__(self, *, embedder: Embedder | None = None, clock: Clock = time.time,
                 ranking: Ranking | None = None, reembed: bool = False,
                 max_chars: int = MAX_TEXT_CHARS) -> None:
        super().__init__(embedder=embedder, clock=clock, ranking=ranking, reembed=reembed,
                         max_chars=max_chars)
        self._items: dict[_Key, dict[str, tuple[MemoryItem, Vectors]]] = {}
        self.stored: tuple[str, int] | None = None

    async def _open(self) -> tuple[str, int] | None:
        return self.stored

    async def _set_meta(self, name: str, dim: int) -> None:
        self.stored = (name, dim)

    def _user(self, tenant: str, user: str) -> dict[str, tuple[MemoryItem, Vectors]]:
        return self._items.setdefault((tenant, user), {})

    async def _insert(self, item: MemoryItem, vector: Vectors) -> MemoryItem:
        mine = self._user(check_tenant(item.tenant), item.user)
        if item.id in mine:
            return mine[item.id][0]
        mine[item.id] = (item, vector[0].copy())
        return item

    async def _get(self, tenant: str, user: str, item_id: str) -> MemoryItem | None:
        found = self._items.get((tenant, user), {}).get(item_id)
        return None if found is None else found[0]

    async def _replace(self, item: MemoryItem, vector: Vectors | None) -> None:
        mine = self._user(check_tenant(item.tenant), item.user)
        old = mine[item.id]
        mine[item.id] = (item, old[1] if vector is None else vector[0].copy())

    async def _delete(self, tenant: str, user: str, item_id: str | None) -> int:
        mine = self._items.get((tenant, user), {})
        if item_id is None:
            count = len(mine)
            self._items.pop((tenant, user), None)
            return count
        return 1 if mine.pop(item_id, None) is not None else 0

    async def _list(self, tenant: str, user: str, now: float | None) -> list[MemoryItem]:
        items = [item for item, _ in self._items.get((tenant, user), {}).values()
                 if now is None or item.expires_at is None or item.expires_at > now]
        return sorted(items, key=lambda i: (i.created_at, i.id))

    async def _similarities(self, tenant: str, user: str, query: Vectors, now: float,
                            kinds: tuple[str, ...] | None) -> Candidates:
        import numpy as np

        live = [(item, vec) for item, vec in self._items.get((tenant, user), {}).values()
                if (item.expires_at is None or item.expires_at > now)
                and (kinds is None or item.kind in kinds)]
        if not live:
            empty = np.zeros(0)
            return Candidates(ids=[], sims=empty, updated=empty, importance=empty)
        matrix = np.stack([vec for _, vec in live])
        return Candidates(ids=[item.id for item, _ in live],
                          sims=(matrix @ query).astype(np.float64),
                          updated=np.array([item.updated_at for item, _ in live]),
                          importance=np.array([item.importance for item, _ in live]))

    async def _fetch(self, tenant: str, user: str, ids: Sequence[str]) -> list[MemoryItem]:
        mine = self._items.get((tenant, user), {})
        return [mine[i][0] for i in ids if i in mine]

    async def _all_texts(self) -> list[tuple[str, str, str, str]]:
        return [(t, u, item.id, item.text) for (t, u), mine in self._items.items()
                for item, _ in mine.values()]

    async def _set_vectors(self, rows: Sequence[tuple[str, str, str]],
                           vectors: Vectors) -> None:
        for (t, u, item_id), vector in zip(rows, vectors, strict=True):
            mine = self._items[(t, u)]
            mine[item_id] = (mine[item_id][0], vector.copy())

    async def _purge(self, now: float) -> int:
        count = 0
        for key, mine in list(self._items.items()):
            dead = [i for i, (item, _) in mine.items()
                    if item.expires_at is not None and item.expires_at <= now]
            for item_id in dead:
                del mine[item_id]
            count += len(dead)
            if not mine:
                del self._items[key]
        return count

    async def _close(self) -> None:
        self._items.clear()

    def __repr__(self) -> str:
        return f"<InMemoryMemory users={len(self._items)}>"


__all__ = ["InMemoryMemory"]
